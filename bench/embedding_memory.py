"""What ONNX Runtime's CPU memory arena keeps after a burst of concurrent document batches, as ``/v1/answer``'s
extractive generator makes (up to 256 sentences per answer, embedded 32 at a time).

    python bench/embedding_memory.py --mode arena       # the embedder as it ships
    python bench/embedding_memory.py --mode no-arena    # SessionOptions.enable_cpu_mem_arena = False
    python bench/embedding_memory.py --mode shrink      # arena, shrunk after every run (a RunOptions entry)

``--threads`` threads each embed ``--rounds`` batches of 256 long sentences at once, then 50 single queries
run. Prints RSS and glibc malloc's figures (``memory_probe.sample``) after loading, after the burst and after
the queries, and the seconds each phase took. One mode per process: the arena belongs to the session.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
from memory_probe import sample

from ragserve.embedding.onnx import OnnxEmbedder

SENTENCE = "This is a fairly long sentence about statins and cardiovascular outcomes in elderly patients. " * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("arena", "no-arena", "shrink"), default="arena")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/ragserve-models"))
    args = parser.parse_args()

    if args.mode == "no-arena":
        plain = ort.SessionOptions

        class NoArena(plain):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__()
                self.enable_cpu_mem_arena = False

        ort.SessionOptions = NoArena  # type: ignore[misc]
    model = OnnxEmbedder(args.model_cache, intra_op_threads=2)
    if args.mode == "shrink":
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session = model._session
        run = session.run
        session.run = lambda outputs, feeds: run(outputs, feeds, options)  # type: ignore[method-assign]
    started = time.monotonic()
    report: dict[str, Any] = {"mode": args.mode, "threads": args.threads, "rounds": args.rounds}
    report["loaded"] = sample(started)

    def burst() -> None:
        for _ in range(args.rounds):
            model.embed([SENTENCE] * 256)

    phase = time.perf_counter()
    workers = [threading.Thread(target=burst) for _ in range(args.threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    report["burst_seconds"] = round(time.perf_counter() - phase, 2)
    report["after_burst"] = sample(started)
    phase = time.perf_counter()
    for _ in range(50):
        model.embed(["short query about statins"], kind="query")
    report["queries_seconds"] = round(time.perf_counter() - phase, 3)
    report["after_queries"] = sample(started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
