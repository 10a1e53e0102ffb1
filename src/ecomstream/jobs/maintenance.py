"""Table maintenance beside a long-running stream: a batch after an hour costs what it cost
after a minute.

Every batch adds a file or two to bronze, silver, quarantine and metrics and a commit to each
log. Left alone, every read of a table (silver's id set at start, the dashboard, a user's
query) lists and opens thousands of small files. Every ``interval`` the maintenance thread
compacts those tables (Delta OPTIMIZE bin-packing: ``dataChange=false``, so streaming readers
and the row content are untouched) and the log is checkpointed every 20 commits and expired
after a day by the table properties (``jobs/pipeline.py``). Gold needs no compaction: a batch
rewrites each touched hour as one file.

Compaction commits under snapshot isolation and the stream's writes are blind appends, so the
two never conflict; a failure is logged and retried at the next interval, never fatal to the
stream. Files compacted away stay on disk for ``delta.deletedFileRetentionDuration`` (a day)
for readers of older versions; ``VACUUM`` is left to the user.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from ecomstream.adapters.base import Environment
from ecomstream.errors import redact
from ecomstream.jobs.batch import crash_point

log = logging.getLogger("ecomstream.pipeline")

COMPACTED = ("bronze/orders", "silver/orders", "silver/quarantine", "metrics/pipeline_batches")


def compact(env: Environment, keys: tuple[str, ...] = COMPACTED) -> dict[str, int]:
    """Compact each table's small files; returns files removed per table."""
    spark = env.spark()
    removed: dict[str, int] = {}
    for key in keys:
        result = env.table(key).delta_table(spark).optimize().executeCompaction().first()
        metrics = result["metrics"] if result is not None else None
        removed[key] = int(metrics["numFilesRemoved"]) if metrics is not None else 0
        crash_point("maintenance", 0)
    return removed


class Maintenance:
    """Runs :func:`compact` every ``interval_s`` seconds in a daemon thread until stopped."""

    def __init__(self, env: Environment, interval_s: float) -> None:
        self.env = env
        self.interval_s = interval_s
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ecomstream-maintenance")
        self._thread.daemon = True

    def start(self) -> None:
        if self.interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.monotonic()
            try:
                removed = compact(self.env)
            except Exception as exc:  # never fatal: the next interval tries again
                first = (redact(str(exc)).splitlines() or [type(exc).__name__])[0][:300]
                log.info(json.dumps({"event": "maintenance_failed", "error": first}))
                continue
            self.runs += 1
            took_ms = int((time.monotonic() - started) * 1000)
            log.info(json.dumps({"event": "maintenance", "files_removed": removed, "ms": took_ms}))
