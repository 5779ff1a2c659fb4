"""Soak: a real ``ragserve serve`` under sustained mixed ``/v1/search`` and ``/v1/answer`` load for N minutes,
with the server's resident memory sampled every few seconds.

    python bench/soak.py --minutes 10 --clients 8
    python bench/soak.py --minutes 10 --data-dir /tmp/ragserve-scale/sqlite-100000 --collection scale

Without ``--data-dir`` the SciFact slice (``tests/fixtures/scifact_slice``, 200 abstracts) is ingested through
the HTTP API into a fresh data directory first. Clients are closed loops; each sends three searches (hybrid,
k=10) for every answer (non-streaming, the default generator: extractive unless ``RAGSERVE_LLM__PROVIDERS``
is set). The questions are SciFact's 1,109 claims in turn. The answer cache is off unless ``--answer-cache``,
so that every answer retrieves and generates (a repeated question would otherwise be served from memory).

Prints one JSON object: per endpoint throughput, p50/p99 and errors, per minute the same, and the server's
RSS at the start and the end, its peak, and its slope (least squares, MiB/min) after the warm-up.

``--probe OUT.jsonl`` runs the server under ``memory_probe.py``, and the JSON gains ``probe``: SQLite's own memory
and open connections, glibc malloc's heap and mmapped bytes, threads, and with ``--tracemalloc`` the Python heap,
each at the start, after the warm-up and at the end, with its slope. (The tracemalloc snapshots taken for the
``.top.txt`` file cost memory themselves: compare RSS between runs without ``--tracemalloc``.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ingest_and_search import ingest
from loadgen import LoadResult, Request, Server, closed_loop, load_average, search_request

from ragserve.domain import DocumentInput
from ragserve.evaluation import percentile, read_corpus

RESULTS = Path(__file__).parent / "results"
SLICE = Path(__file__).parent.parent / "tests" / "fixtures" / "scifact_slice"
QUESTIONS = Path("/work/shared/datasets/scifact/queries.jsonl")


def answer_request(questions: list[str], collection: str) -> Request:
    def body(i: int) -> dict[str, Any]:
        return {"question": questions[i % len(questions)], "collection": collection}

    return Request("answer", "/v1/answer", body)


def per_minute(result: LoadResult) -> list[dict[str, Any]]:
    minutes: dict[int, list[tuple[str, float, bool]]] = {}
    for at, name, latency, failed in result.events:
        minutes.setdefault(int(at // 60), []).append((name, latency, failed))
    rows = []
    for minute in sorted(minutes):
        events = minutes[minute]
        row: dict[str, Any] = {"minute": minute + 1}
        for name in result.latencies_ms:
            mine = [latency for n, latency, _ in events if n == name]
            row[name] = {
                "requests": len(mine),
                "errors": sum(1 for n, _, failed in events if n == name and failed),
                "p50_ms": round(percentile(mine, 50), 1),
                "p99_ms": round(percentile(mine, 99), 1),
            }
        rows.append(row)
    return rows


def memory_trend(samples: list[tuple[float, float]], warmup_seconds: float) -> dict[str, Any]:
    after = [(t, rss) for t, rss in samples if t >= warmup_seconds]
    slope = None
    if len(after) >= 3:
        times = np.array([t for t, _ in after]) / 60
        slope = round(float(np.polyfit(times, np.array([rss for _, rss in after]), 1)[0]), 3)
    return {
        "samples": len(samples),
        "rss_mb_start": samples[0][1] if samples else None,
        "rss_mb_after_warmup": after[0][1] if after else None,
        "rss_mb_end": samples[-1][1] if samples else None,
        "rss_mb_max": max(rss for _, rss in samples) if samples else None,
        "warmup_seconds": warmup_seconds,
        "slope_mb_per_min_after_warmup": slope,
        "series_seconds_mb": [(round(t), rss) for t, rss in samples[:: max(1, len(samples) // 60)]],
    }


def probe_trend(path: Path, load_started_unix: float, warmup_seconds: float) -> dict[str, Any]:
    """The probe's samples (``memory_probe.py``) taken under load: each measure at the start of the load, after
    the warm-up and at the end, and its slope (least squares, per minute) after the warm-up."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [row for row in lines if row["unix"] >= load_started_unix - 1]
    measures = {
        "rss_mb": lambda r: r["rss_mb"],
        "sqlite_mb": lambda r: r["sqlite_mb"],
        "sqlite_connections": lambda r: r["sqlite_connections"],
        "python_traced_mb": lambda r: r["python_traced_mb"],
        "malloc_in_use_mb": lambda r: r["malloc"]["in_use_mb"],
        "malloc_free_in_heaps_mb": lambda r: r["malloc"]["free_in_heaps_mb"],
        "malloc_mmapped_mb": lambda r: r["malloc"]["mmapped_mb"],
        "malloc_arenas": lambda r: r["malloc"]["arenas"],
        "os_threads": lambda r: r["os_threads"],
    }
    out: dict[str, Any] = {"samples": len(rows), "threads_at_end": rows[-1]["threads"] if rows else None}
    after = [row for row in rows if row["unix"] - load_started_unix >= warmup_seconds]
    for name, value in measures.items():
        if not rows or value(rows[0]) is None:
            continue
        entry: dict[str, Any] = {"start": value(rows[0]), "after_warmup": value(after[0]) if after else None}
        entry["end"] = value(rows[-1])
        if len(after) >= 3:
            minutes = np.array([row["unix"] - load_started_unix for row in after]) / 60
            entry["slope_per_min_after_warmup"] = round(
                float(np.polyfit(minutes, np.array([value(row) for row in after], dtype=float), 1)[0]), 3
            )
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=None, help="serve this data dir instead of the slice")
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--answer-cache", action="store_true")
    parser.add_argument("--model-cache", type=Path, default=None, help="where the built model is kept")
    parser.add_argument("--timeout-seconds", type=float, default=60.0, help="a slower answer counts as an error")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--probe", type=Path, default=None, help="run the server under memory_probe.py, lines here")
    parser.add_argument("--tracemalloc", action="store_true", help="with --probe: trace the Python heap too")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server, repeatable")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["text"] for line in lines if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="ragserve-soak-"))
    data_dir = args.data_dir or work / "data"
    env = {
        "RAGSERVE_DATA_DIR": str(data_dir),
        "RAGSERVE_EMBEDDING__CACHE_DIR": str(args.model_cache or work / "models"),
        "RAGSERVE_CACHE__ANSWERS": "true" if args.answer_cache else "false",
    }
    env.update(item.split("=", 1) for item in args.server_env)
    launcher = ["-m", "ragserve.cli"]
    if args.probe is not None:
        args.probe.unlink(missing_ok=True)
        traced = ["--tracemalloc"] if args.tracemalloc else []
        launcher = [str(Path(__file__).parent / "memory_probe.py"), str(args.probe), *traced, "--"]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_start": load_average()},
        "data": str(args.data_dir) if args.data_dir else "scifact slice (200 abstracts), ingested through the API",
        "clients": args.clients,
        "minutes": args.minutes,
        "answer_cache": args.answer_cache,
        "server_env": args.server_env,
        "probe": str(args.probe) if args.probe else None,
    }
    try:
        with Server(env, launcher=launcher) as server:
            if args.data_dir is None:
                docs = [DocumentInput("bench", d.id, d.title or None, d.text) for d in read_corpus(SLICE)]
                report["ingestion"] = ingest(server.base, docs)
            samples: list[tuple[float, float]] = [(0.0, server.memory()["rss_mb"])]
            load_started_unix = time.time()
            kinds = [search_request(questions, args.collection, None), answer_request(questions, args.collection)]
            kinds[0] = Request(kinds[0].name, kinds[0].path, kinds[0].body, share=3)
            result = asyncio.run(
                closed_loop(
                    server.base,
                    kinds,
                    args.clients,
                    args.minutes * 60,
                    on_tick=lambda t: samples.append((t, server.memory()["rss_mb"])),
                    tick_seconds=args.sample_seconds,
                    timeout_seconds=args.timeout_seconds,
                )
            )
            samples.append((result.seconds, server.memory()["rss_mb"]))
            report["server_peak_rss_mb"] = server.memory()["peak_rss_mb"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["totals"] = result.summary()
    report["errors"] = sum(result.errors.values())
    report["per_minute"] = per_minute(result)
    report["memory"] = memory_trend(samples, warmup_seconds=min(120.0, args.minutes * 60 / 5))
    if args.probe is not None:
        report["probe"] = probe_trend(args.probe, load_started_unix, report["memory"]["warmup_seconds"])
    report["machine"]["load_average_end"] = load_average()
    text = json.dumps(report, indent=2)
    print(text)
    (args.out or RESULTS / "soak.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
