"""Building a second index version while queries run on the first.

Runs a real ``ragserve serve`` process on a fresh data directory, ingests a BEIR corpus through the HTTP API
and sets the test split as the collection's golden set. Then two builds, each while one closed-loop client
searches the dataset's queries: version 2 with the same chunking as version 1 (every chunk embedding comes
from the cache), version 3 with other chunking (new chunks must be embedded). Reports build time, the search
latency before and during each build, failed queries, and the promotion gate's nDCG@10 of each version.

    python bench/index_versions.py ../shared/datasets/scifact --limit 1000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ragserve.evaluation import percentile, read_corpus, read_queries

COLLECTION = "bench"


class Searcher(threading.Thread):
    def __init__(self, url: str, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.queries = url, queries
        self.latencies: list[float] = []
        self.failures = 0
        self.versions: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                start = time.perf_counter()
                response = client.post(
                    f"{self.url}/v1/search",
                    json={"query": self.queries[i % len(self.queries)], "collection": COLLECTION},
                )
                self.latencies.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    self.failures += 1
                else:
                    version = response.json()["index_version"]
                    self.versions[version] = self.versions.get(version, 0) + 1
                i += 1

    def summary(self) -> dict[str, Any]:
        return {
            "queries": len(self.latencies),
            "failed": self.failures,
            "p50_ms": round(percentile(self.latencies, 50), 2),
            "p95_ms": round(percentile(self.latencies, 95), 2),
            "versions": self.versions,
        }


def _build(url: str, queries: list[str], **config: int) -> dict[str, Any]:
    searcher = Searcher(url, queries)
    searcher.start()
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/collections/{COLLECTION}/index/versions", json=config, timeout=30)
    response.raise_for_status()
    number = response.json()["version"]
    while True:
        status = httpx.get(f"{url}/v1/collections/{COLLECTION}/index", timeout=30).json()
        (version,) = (v for v in status["versions"] if v["version"] == number)
        if version["state"] != "building":
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    searcher.stop.set()
    searcher.join()
    return {
        "version": number,
        "config": config,
        "state": version["state"],
        "documents": version["built_documents"],
        "build_s": round(elapsed, 1),
        "docs_per_s": round(version["built_documents"] / elapsed, 1),
        "search_during_build": searcher.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8781)
    args = parser.parse_args()
    docs = [{"external_id": d.id, "title": d.title, "text": d.text} for d in read_corpus(args.dataset)][: args.limit]
    queries, qrels = read_queries(args.dataset, "test")
    kept = {d["external_id"] for d in docs}
    qrels = {q: {d: g for d, g in rel.items() if d in kept} for q, rel in qrels.items()}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    queries = {q: queries[q] for q in qrels}
    url = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RAGSERVE_DATA_DIR": str(Path(tmp) / "data"), "RAGSERVE_SERVER__LOG_LEVEL": "warning"}
        server = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--port", str(args.port)], env=env)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            for start in range(0, len(docs), 100):
                body = {"collection": COLLECTION, "documents": docs[start : start + 100]}
                job = httpx.post(f"{url}/v1/documents", json=body, timeout=60).json()["job_id"]
                while httpx.get(f"{url}/v1/jobs/{job}", timeout=30).json()["status"] in ("queued", "running"):
                    time.sleep(0.2)
            httpx.put(
                f"{url}/v1/collections/{COLLECTION}/golden", json={"queries": queries, "qrels": qrels}, timeout=30
            ).raise_for_status()
            baseline = Searcher(url, list(queries.values()))
            baseline.start()
            time.sleep(20)
            baseline.stop.set()
            baseline.join()
            same = _build(url, list(queries.values()), max_tokens=200, overlap_tokens=40)
            other = _build(url, list(queries.values()), max_tokens=128, overlap_tokens=24)
            gates = {}
            for number in (same["version"], other["version"]):
                response = httpx.post(
                    f"{url}/v1/collections/{COLLECTION}/index/promote", json={"version": number}, timeout=600
                )
                gates[number] = response.json().get("gate") or response.json()["error"]["message"]
                httpx.post(f"{url}/v1/collections/{COLLECTION}/index/rollback", timeout=30)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(
        json.dumps(
            {
                "dataset": args.dataset.name,
                "documents": len(docs),
                "golden_queries": len(queries),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
                "search_before_build": baseline.summary(),
                "build_same_chunking": same,
                "build_other_chunking": other,
                "promotion_gates": gates,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
