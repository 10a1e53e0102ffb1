#!/usr/bin/env bash
# Idempotent setup from a clean clone: a virtualenv in .venv with the project and its test tools,
# then every jar the product downloads (Kafka broker, Spark's Delta + Kafka packages), cached.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ecomstream-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[local,dev]"
  touch "$stamp"
fi
.venv/bin/python -m ecomstream.warmup
