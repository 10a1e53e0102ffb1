#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the unit and the integration tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -m unit
set -uo pipefail
cd "$(dirname "$0")/.."
# The dashboard's browser tests drive Debian's Chromium. CI (and anyone who asks with
# ECOMSTREAM_INSTALL_CHROMIUM=1) installs it when it can, in the background: apt-get waits on the
# network and the disk, set-up and the first tests on the CPU. The browser tests wait for its
# exit status (tests/browser.py); without Chromium they skip, saying why.
if { [ -n "${CI:-}" ] || [ "${ECOMSTREAM_INSTALL_CHROMIUM:-}" = 1 ]; } \
   && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  status="$(mktemp -d /tmp/ecomstream-chromium-XXXXXX)/status"
  export ECOMSTREAM_CHROMIUM_INSTALL="$status"
  (
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/tmp/ecomstream-chromium-install.log 2>&1
    code=$?
    [ "$code" = 0 ] || echo "warning: could not install chromium (see /tmp/ecomstream-chromium-install.log)" >&2
    echo "$code" >"$status.part" && mv "$status.part" "$status"
  ) &
fi
scripts/setup.sh || exit 1
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
