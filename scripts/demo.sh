#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole product on this laptop: `ecomstream demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/ecomstream demo "$@"
