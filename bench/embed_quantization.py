"""Int8 variants of the ONNX embedder against fp32: vector agreement and speed. Prints JSON.

    python bench/embed_quantization.py /work/shared/datasets/scifact /work/shared/datasets/nfcorpus \\
        --passages 2000 --queries 400 --threads 2 --json bench/results/embed-quantization.json

Passages are ``title + " " + text`` sampled (seed 0) from each dataset's corpus, queries from its test split,
split evenly between the datasets. For every candidate: the cosine of each text's vector with its fp32 vector
(mean, 1st percentile, minimum, separately for passages and queries), document throughput over all passages
in batches of ``--batch-size``, and single-query latency (one real query per call). Timings are the best of
``--rounds`` rounds, candidates interleaved within each round so that machine load affects all alike.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.quantize import DEFAULT_RECIPE, Int8Recipe
from ragserve.evaluation import read_corpus, read_queries

FFN_OUT = r"encoder\.layer\.\d+\.output\.dense"
ATTN_OUT = r"encoder\.layer\.\d+\.attention\.output\.dense"

# None is fp32, the reference.
CANDIDATES: dict[str, Int8Recipe | None] = {
    "fp32": None,
    "naive": Int8Recipe(per_channel=False, const_weights_only=False, quantize_gather=True),
    "matmul_per_tensor": Int8Recipe(per_channel=False),
    "matmul_per_channel": Int8Recipe(),
    "matmul_per_channel_reduce_range": Int8Recipe(reduce_range=True),
    "per_channel_ffn_out_fp32": DEFAULT_RECIPE,
    "per_channel_attn_and_ffn_out_fp32": Int8Recipe(fp32_weights=(FFN_OUT, ATTN_OUT)),
    "per_channel_first_last_layer_fp32": Int8Recipe(fp32_weights=(r"encoder\.layer\.[05]\.",)),
}


def sample_texts(datasets: list[Path], passages: int, queries: int) -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    docs: list[str] = []
    questions: list[str] = []
    for dataset in datasets:
        corpus = [f"{d.title} {d.text}".strip() for d in read_corpus(dataset)]
        docs += rng.sample(corpus, min(len(corpus), passages // len(datasets)))
        test_queries = sorted(read_queries(dataset, "test")[0].values())
        questions += rng.sample(test_queries, min(len(test_queries), queries // len(datasets)))
    return docs, questions


def cosine_stats(vectors: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> dict[str, float]:
    cosines = (vectors.astype(np.float64) * reference).sum(axis=1)
    return {
        "mean": round(float(cosines.mean()), 5),
        "p1": round(float(np.percentile(cosines, 1)), 5),
        "min": round(float(cosines.min()), 5),
    }


def timings(embedder: OnnxEmbedder, docs: list[str], questions: list[str]) -> tuple[float, list[float]]:
    """Seconds to embed ``docs``, and per-query latencies in ms."""
    started = time.perf_counter()
    embedder.embed(docs)
    docs_seconds = time.perf_counter() - started
    latencies = []
    for question in questions:
        started = time.perf_counter()
        embedder.embed([question], kind="query")
        latencies.append((time.perf_counter() - started) * 1000)
    return docs_seconds, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/ragserve-quantization-models"))
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--timed-passages", type=int, default=500, help="passages in each throughput run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--candidate", action="append", choices=sorted(CANDIDATES), help="default: all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    docs, questions = sample_texts(args.datasets, args.passages, args.queries)
    names = ["fp32", *[n for n in (args.candidate or CANDIDATES) if n != "fp32"]]

    embedders: dict[str, OnnxEmbedder] = {}
    report: dict[str, Any] = {"passages": len(docs), "queries": len(questions), "threads": args.threads}
    candidates: dict[str, dict[str, Any]] = {}
    for name in names:
        recipe = CANDIDATES[name]
        started = time.perf_counter()
        embedders[name] = OnnxEmbedder(
            args.cache_dir,
            batch_size=args.batch_size,
            intra_op_threads=args.threads,
            precision="fp32" if recipe is None else "int8",
            int8_recipe=recipe or DEFAULT_RECIPE,
        )
        candidates[name] = {
            "model_id": embedders[name].model_id,
            "build_seconds": round(time.perf_counter() - started, 2),
            "file_mb": round(embedders[name].onnx_path.stat().st_size / 1e6, 1),
        }
    reference_docs, reference_queries = embedders["fp32"].embed(docs), embedders["fp32"].embed(questions)
    for name in names:
        candidates[name]["passage_cosine"] = cosine_stats(embedders[name].embed(docs), reference_docs)
        candidates[name]["query_cosine"] = cosine_stats(embedders[name].embed(questions), reference_queries)

    timed_docs = docs[: args.timed_passages]
    best_docs: dict[str, float] = {}
    best_latency: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in names:
            seconds, latencies = timings(embedders[name], timed_docs, questions)
            if seconds < best_docs.get(name, float("inf")):
                best_docs[name] = seconds
            if statistics.median(latencies) < statistics.median(best_latency.get(name, [float("inf")])):
                best_latency[name] = latencies
    for name in names:
        p50 = statistics.median(best_latency[name])
        candidates[name] |= {
            "documents_per_second": round(len(timed_docs) / best_docs[name], 1),
            "throughput_speedup": round(best_docs["fp32"] / best_docs[name], 2),
            "query_latency_ms_p50": round(p50, 2),
            "query_latency_ms_p95": round(statistics.quantiles(best_latency[name], n=20)[-1], 2),
            "query_speedup_p50": round(statistics.median(best_latency["fp32"]) / p50, 2),
        }
    report["candidates"] = candidates
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
