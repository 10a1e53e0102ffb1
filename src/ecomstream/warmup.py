"""``python -m ecomstream.warmup``: fetch and cache every jar before first use (setup step)."""

from __future__ import annotations

import sys
import time

from ecomstream.errors import EcomstreamError


def main() -> int:
    from ecomstream import jars
    from ecomstream.spark import local_session

    try:
        t0 = time.monotonic()
        path = jars.kafka_jar_dir()
        print(f"kafka broker jars: {path} ({time.monotonic() - t0:.1f}s)")
        t0 = time.monotonic()
        local_session("ecomstream-warmup").stop()
        print(f"spark packages (delta, kafka connector): cached ({time.monotonic() - t0:.1f}s)")
    except EcomstreamError as exc:
        print(f"ecomstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
