"""Hybrid retrieval settings compared through ``ragserve eval``: nDCG@10 and latency per named configuration.

Each configuration is a set of ``RAGSERVE_RETRIEVAL__*`` variables; each runs ``ragserve eval --mode hybrid`` in
its own process on a data directory that already holds the dataset (``ragserve eval`` ingests it once). Choose
on the train split, then report the chosen one on test:

    python bench/retrieval_configs.py ../shared/datasets/nfcorpus --data-dir /work/quality-data/nfcorpus \\
        --split train --config plain=DOCUMENT_WEIGHT=0,DENSE_FEEDBACK_CHUNKS=0 --config default=

Prints one JSON object: the dataset, split and, per configuration, its variables, nDCG@10, Recall@100, MRR@10
and the per-query latency p50/p95 in ms (query embedding included, one query at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """``name=KEY=VALUE,KEY=VALUE`` (keys without the ``RAGSERVE_RETRIEVAL__`` prefix); ``name=`` is the default."""
    name, _, assignments = text.partition("=")
    env: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        env[f"RAGSERVE_RETRIEVAL__{key.strip().upper()}"] = value.strip()
    return name, env


def run(dataset: Path, data_dir: Path, split: str, env: dict[str, str]) -> dict[str, Any]:
    ragserve = Path(sys.executable).with_name("ragserve")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        command = [str(ragserve), "eval", str(dataset), "--split", split, "--mode", "hybrid", "--json", str(out)]
        subprocess.run(
            command,
            env={**os.environ, "RAGSERVE_DATA_DIR": str(data_dir), **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result: dict[str, Any] = json.loads(out.read_text())["modes"]["hybrid"]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--config", action="append", default=[], help="name=KEY=VALUE,... (repeat)")
    args = parser.parse_args()
    report: dict[str, Any] = {"dataset": args.dataset.name, "split": args.split, "configs": {}}
    for text in args.config or ["default="]:
        name, env = parse_config(text)
        report["configs"][name] = {"env": env, **run(args.dataset, args.data_dir, args.split, env)}
        print(f"{name}: {report['configs'][name]}", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
