#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the unit and the integration tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -m unit
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# The dashboard's browser test drives Debian's Chromium. CI (and anyone who asks with
# ECOMSTREAM_INSTALL_CHROMIUM=1) installs it when it can; elsewhere that one test skips, saying why.
if { [ -n "${CI:-}" ] || [ "${ECOMSTREAM_INSTALL_CHROMIUM:-}" = 1 ]; } \
   && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/tmp/ecomstream-chromium-install.log 2>&1 \
    || echo "warning: could not install chromium (see /tmp/ecomstream-chromium-install.log)" >&2
fi
# the Hypothesis profile CI uses (tests/conftest.py); HYPOTHESIS_PROFILE=dev is quicker locally
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
# Two workers, each with its own SparkSession and broker, a module at a time (module fixtures
# stay whole): the suite spends much of its time waiting (broker restarts, outages, JVM starts),
# which the other worker fills. ECOMSTREAM_TEST_WORKERS=0 runs it in one process.
workers="${ECOMSTREAM_TEST_WORKERS:-2}"
xdist=()
if [ "$workers" != 0 ]; then
  # --no-loadscope-reorder: modules in the order tests/conftest.py gives them (longest first)
  xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
.venv/bin/python -m pytest tests --durations=25 "${xdist[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
