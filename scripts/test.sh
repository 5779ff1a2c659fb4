#!/usr/bin/env bash
# Installs ragserve with its test tools into .venv, then runs lint, type checks and the whole test suite.
# Arguments are passed to pytest (e.g. scripts/test.sh -k search).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh dev

# The embedded defaults need no server. Later backends (PostgreSQL, Redis, RabbitMQ) are started here
# when their tests exist.

.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
