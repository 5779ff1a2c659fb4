"""The query-embedding part of a peer's query on its own: the test queries encoded one at a time, wall and
process CPU time each, with sentence-transformers on torch (the peers' path) or ragserve's ONNX embedder.

    <peer venv>/bin/python bench/peers/embed_probe.py --engine torch --dataset DIR --model DIR [--threads 2]
    PYTHONPATH=src .venv/bin/python bench/peers/embed_probe.py --engine onnx --dataset DIR --model DIR

Run it with ``OMP_WAIT_POLICY=PASSIVE`` and without to see what torch's spinning OpenMP threads cost on
shared cores (ragserve's ONNX Runtime threads do not spin by default). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import load_average, read_test_queries


def encoder(engine: str, model: Path, threads: int) -> Any:
    if engine == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        st = SentenceTransformer(str(model), device="cpu")
        return lambda text: st.encode([text])
    from ragserve.embedding.onnx import OnnxEmbedder

    onnx = OnnxEmbedder(Path(tempfile.gettempdir()) / "peers-embed-probe", intra_op_threads=threads)
    return lambda text: onnx.embed([text], "query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=("torch", "onnx"), required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    encode = encoder(args.engine, args.model, args.threads)
    texts = list(read_test_queries(args.dataset, "test").values())[: args.queries]
    encode("warm up")
    before = load_average()
    wall, cpu = [], []
    for text in texts:
        started, cpu_started = time.perf_counter(), time.process_time()
        encode(text)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
                "threads": args.threads,
                "queries": len(texts),
                "wall_ms_p50": round(statistics.median(wall), 2),
                "cpu_ms_p50": round(statistics.median(cpu), 2),
                "load_average_before": before,
                "load_average_after": load_average(),
            }
        )
    )


if __name__ == "__main__":
    main()
