"""``ecomstream reprocess`` as a user runs it: real processes, a real broker, kill -9.

One chain on one topic:
1. ``pipeline --once`` with the defaults (1-minute windows, the contract's catalogue, which
   lacks "Cars"): exact;
2. ``reprocess --window "5 minutes" --categories <default>,Cars`` dies (``os._exit``, the crash
   hook) while it stages chunk 1: the old tables are whole and exact, and ``pipeline`` refuses
   to start with one line; a second run dies in the middle of the switch (quarantine, silver
   and category sales switched, location sales and metrics not); a third finishes. Meanwhile a
   reader polls every table as the dashboard does (delta-rs, ``TableReader``) and ``status``:
   each read of a table is its whole old content or its whole new content, never anything else;
3. the tables are exactly the contract model's for every record under the new settings;
4. more records arrive, with re-sends of old orders (some of them "Cars" orders, which the
   reprocess let into silver: re-sent, they are duplicates now): a continuous ``pipeline``
   with the new settings continues from bronze's last offsets; while it runs, ``reprocess``
   is refused with one line (the data dir's lock); after it stops, every table is exact over
   all the records; and a pipeline with the old window is still refused.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.jobs.batch import CRASH_HOOK_ENV
from tests.conftest import Broker
from tests.integration.test_crash import CRASHED, orders_with_faults
from tests.integration.test_pipeline_checks import (
    Running,
    assert_exact,
    metrics_rows,
    run_cli,
)
from tests.kafka_helpers import send_all

WINDOW = "5 minutes"
CATEGORIES = (*DEFAULT_CATEGORIES, "Cars")
WATCHED = (
    "silver/orders",
    "silver/quarantine",
    "gold/category_sales",
    "gold/location_sales",
    "metrics/pipeline_batches",
)


def _pipeline(broker: Broker, topic: str, data_dir: Path, *extra: str) -> list[str]:
    return [
        "pipeline", "--data-dir", str(data_dir), "--bootstrap-servers", broker.bootstrap,
        "--topic", topic, *extra,
    ]  # fmt: skip


def _reprocess(data_dir: Path, *extra: str) -> list[str]:
    return [
        "reprocess", "--data-dir", str(data_dir), "--window", WINDOW,
        "--categories", ",".join(CATEGORIES), "--chunk-rows", "150", *extra,
    ]  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def _content(path: Path, version: int | None = None) -> Counter[tuple[Any, ...]]:
    """A table (at ``version``) as a multiset of whole rows."""
    from deltalake import DeltaTable

    rows = DeltaTable(str(path), version=version).to_pyarrow_table().to_pylist()
    return Counter(tuple(_plain(v) for _, v in sorted(row.items())) for row in rows)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, (list, bytearray)):
        return tuple(value) if isinstance(value, list) else bytes(value)
    return value


class Watch:
    """Reads every table (and ``status``) over and over, as the dashboard does, while the
    reprocess runs; keeps each distinct content it saw per table."""

    def __init__(self, data_dir: Path) -> None:
        from ecomstream.demo.tables import TableReader

        self.reader = TableReader(data_dir)
        self.data_dir = data_dir
        self.seen: dict[str, dict[int, Counter[tuple[Any, ...]]]] = {k: {} for k in WATCHED}
        self.reads = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        from ecomstream.status_cli import current

        while not self._stop.is_set():
            try:
                for key in WATCHED:
                    snap = self.reader.read(key)
                    if snap.version is not None and snap.version not in self.seen[key]:
                        content = _content(self.data_dir / key, snap.version)
                        self.seen[key][snap.version] = content
                current(self.data_dir)
                self.reads += 1
            except Exception as exc:  # a reader must never fail during a reprocess
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.05)


def test_reprocess_changes_window_and_catalogue_across_crashes_and_the_stream_continues(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("reprocess")
    data_dir = tmp_path / "data"
    first = orders_with_faults(11, 400, "a")  # "Cars" is one of the faults: unknown_category
    send_all(kafka_broker.bootstrap, topic, first)
    done = run_cli(*_pipeline(kafka_broker, topic, data_dir, "--once"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert_exact(data_dir, first)
    old = {key: _content(data_dir / key) for key in WATCHED}

    with Watch(data_dir) as watch:
        died = run_cli(*_reprocess(data_dir), **{CRASH_HOOK_ENV: "silver/orders:1"})
        assert died.returncode == CRASHED, died.stderr[-2000:]
        assert "crash after silver/orders batch 1" in died.stdout
        assert_exact(data_dir, first)  # nothing switched: the old tables, whole
        refused = run_cli(*_pipeline(kafka_broker, topic, data_dir, "--once", "--window", WINDOW))
        assert refused.returncode != 0
        assert "has not finished" in _one_line(refused.stderr)

        died = run_cli(*_reprocess(data_dir), **{CRASH_HOOK_ENV: "switch/gold/category_sales"})
        assert died.returncode == CRASHED, died.stderr[-2000:]
        done = run_cli(*_reprocess(data_dir))
        assert done.returncode == 0, done.stderr[-2000:]
    assert "reprocessed 400 bronze rows" in done.stdout
    counts = assert_exact(data_dir, first, window=WINDOW, categories=CATEGORIES)

    new = {key: _content(data_dir / key) for key in WATCHED}
    assert not watch.errors, watch.errors[:3]
    assert watch.reads > 0
    for key, contents in watch.seen.items():
        for version, content in contents.items():
            assert content in (old[key], new[key]), f"{key} version {version}: a partial table"
    assert new["silver/orders"] != old["silver/orders"]  # "Cars" orders entered silver
    # the reader saw the switch: the old silver first, the new one after
    assert next(iter(watch.seen["silver/orders"].values())) == old["silver/orders"]
    assert list(watch.seen["silver/orders"].values())[-1] == new["silver/orders"]

    # the stream continues with the new settings; re-sends of old orders are duplicates
    second = orders_with_faults(12, 150, "b") + first[:40]
    send_all(kafka_broker.bootstrap, topic, second)
    run = Running(
        *_pipeline(
            kafka_broker, topic, data_dir, "--window", WINDOW, "--categories",
            ",".join(CATEGORIES), "--trigger-interval", "0",
        )
    )  # fmt: skip
    try:
        run.wait_for('"event": "batch_phases"', timeout=300)
        refused = run_cli(*_reprocess(data_dir))
        assert refused.returncode != 0
        assert "in use by 'ecomstream pipeline'" in _one_line(refused.stderr)
        _wait_for_bronze(data_dir, run, len(first) + len(second))
        batch = max(r.batch_id for r in metrics_rows(data_dir) if r.query == "bronze")
        run.wait_for(f'"event": "batch_phases", "batch_id": {batch},', timeout=300)
    finally:
        run.proc.send_signal(signal.SIGINT)
        run.proc.wait(timeout=120)
    after = assert_exact(data_dir, first + second, window=WINDOW, categories=CATEGORIES)
    assert after["silver"] > counts["silver"]
    rows = metrics_rows(data_dir)
    silver = [r for r in rows if r.query == "silver"]
    assert sum(r.silver_rows for r in silver) == after["silver"]
    assert sum(r.duplicates_dropped for r in silver) == after["duplicates"]

    refused = run_cli(*_pipeline(kafka_broker, topic, data_dir, "--once"))
    assert refused.returncode != 0
    assert f"gold windows of '{WINDOW}'" in _one_line(refused.stderr)


def _wait_for_bronze(data_dir: Path, run: Running, n: int) -> None:
    import time

    deadline = time.monotonic() + 300
    got = 0
    while time.monotonic() < deadline:
        got = sum(r.input_rows or 0 for r in metrics_rows(data_dir) if r.query == "bronze")
        if got >= n:
            return
        assert run.proc.poll() is None, run.output()[-3000:]
        time.sleep(1)
    raise AssertionError(f"bronze took {got} of {n} records\n{run.output()[-3000:]}")
