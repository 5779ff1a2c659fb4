"""What every peer runner shares: the BEIR files, the command line, the clock and the report.

Standard library only, so that a runner can import it from a peer's own virtualenv (which has no ragserve).
Each runner indexes the corpus once, then sends the test queries one at a time and writes its ranking of each
(document ids, best first) with the query's latency; ``bench/peers.py`` scores the rankings itself, with
ragserve's metric code, so that every system is judged by the same nDCG@10.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANKING_DEPTH = 100  # what each system returns per query: enough for Recall@100


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        """The text a peer indexes: the title on its own line, then the abstract (ragserve takes them apart)."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def read_corpus(dataset: Path) -> list[Doc]:
    docs = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                docs.append(Doc(str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or "")))
    return docs


def read_test_queries(dataset: Path, split: str) -> dict[str, str]:
    """The split's queries (those with judgements), in ``queries.jsonl`` order, as ragserve's eval reads them."""
    with (dataset / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as handle:
        judged = {row["query-id"] for row in csv.DictReader(handle, delimiter="\t")}
    queries = {}
    with (dataset / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in judged:
                    queries[str(row["_id"])] = str(row["text"])
    return queries


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, required=True, help="the sentence-transformers model directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, required=True, help="an empty directory this runner may fill")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Report:
    """Collects a runner's phases (each with its time and the load average around it) and writes the JSON."""

    def __init__(self, system: str, versions: dict[str, str], settings: dict[str, Any]) -> None:
        self.data: dict[str, Any] = {
            "system": system,
            "versions": {"python": platform.python_version(), **versions},
            "settings": settings,
            "phases": {},
        }

    def phase(self, name: str, work: Callable[[], Any]) -> Any:
        """Run ``work``, recording its wall time and the load average before and after."""
        started = self._begin(name)
        result = work()
        self._end(name, started)
        return result

    async def async_phase(self, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
        started = self._begin(name)
        result = await work()
        self._end(name, started)
        return result

    def _begin(self, name: str) -> tuple[float, float, list[float]]:
        print(f"{self.data['system']}: {name} (load {load_average()})", file=sys.stderr, flush=True)
        return time.perf_counter(), time.process_time(), load_average()

    def _end(self, name: str, started: tuple[float, float, list[float]]) -> None:
        self.data["phases"][name] = {
            "seconds": round(time.perf_counter() - started[0], 2),
            # CPU time of all the process's threads: steadier than wall time when other work shares the cores.
            "cpu_seconds": round(time.process_time() - started[1], 2),
            "load_average_before": started[2],
            "load_average_after": load_average(),
            "peak_rss_mb_after": peak_rss_mb(),
        }

    def queries(
        self, queries: dict[str, str], search: Callable[[str], Any], to_ids: Callable[[Any], list[str]]
    ) -> None:
        """One query at a time, each timed (wall and process CPU) from its text to the system's answer;
        ``to_ids`` (untimed) turns that answer into document ids, best first."""

        def run() -> None:
            latencies, cpu, rankings = [], [], {}
            for qid, text in queries.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                answer = search(text)
                latencies.append(round((time.perf_counter() - started) * 1000, 3))
                cpu.append(round((time.process_time() - cpu_started) * 1000, 3))
                rankings[qid] = to_ids(answer)[:RANKING_DEPTH]
            self.data["latencies_ms"] = latencies
            self.data["cpu_ms"] = cpu
            self.data["rankings"] = rankings

        self.phase("queries", run)

    def write(self, out: Path, documents: int) -> None:
        self.data["documents"] = documents
        self.data["peak_rss_mb"] = peak_rss_mb()
        out.write_text(json.dumps(self.data))
