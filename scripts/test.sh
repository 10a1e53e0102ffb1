#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the unit and the integration tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -m unit
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/python -m pytest tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
