"""The medallion batch in-process, table by table against the plain-Python contract model.

Every test feeds Kafka micro-batches to :class:`MedallionBatch` and compares every column the
model knows of every table (bronze, quarantine, silver, both gold tables, the metrics rows)
with what the contract says they must hold after those batches. Tables are read back with
delta-rs, a reader independent of the Spark that wrote most of them.

A crash is simulated in-process (:func:`dying_right_after`): the batch dies right after one
point and none of its other writes commits; a new :class:`MedallionBatch` with the same writer
id (a restarted process: empty in-memory state) then replays the batch.

Across batches "first" means first consumed: the first batch holding a valid record of an
order id puts it in silver, and within a batch the lowest (partition, offset) wins. A later
batch may bring a lower (partition, offset) on another partition; it never replaces what
silver holds (CONTRACT.md §3: later ones never enter, however late they arrive).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ecomstream.adapters.base import TABLE_KEYS
from ecomstream.adapters.local import LocalEnvironment
from ecomstream.jobs import batch as batch_module
from ecomstream.jobs import pipeline
from ecomstream.jobs.batch import CRASH_HOOK_ENV, WRITE_SEQUENCE, MedallionBatch
from ecomstream.jobs.ledger import UNSAFE_NO_IDEMPOTENCE_ENV, Ledger
from ecomstream.jobs.settings import PipelineSettings
from ecomstream.transforms.gold import window_seconds
from tests.profiles import stateful_examples
from tests.unit import contract_model as model
from tests.unit.order_strategies import (
    KAFKA_TIME,
    MALFORMED_PAYLOADS,
    Raw,
    Record,
    clean_order,
    dumps,
    kafka_frame,
    streams,
)

WRITER = "w"
KAFKA_TIMESTAMP = KAFKA_TIME.replace(tzinfo=None)
SILVER_COLUMNS = (
    "order_id", "order_timestamp", *model.PLAIN_FIELDS, "price", "quantity", "total_amount",
    "order_date", "order_hour", "price_band", "kafka_topic", "kafka_partition", "kafka_offset",
    "kafka_timestamp",
)  # fmt: skip
GOLD_COLUMNS = {
    "gold/category_sales": (
        "window_start", "window_end", "category", "order_count", "units_sold", "revenue",
        "avg_order_value", "window_hour",
    ),
    "gold/location_sales": (
        "window_start", "window_end", "country", "city", "order_count", "units_sold", "revenue",
        "window_hour",
    ),
}  # fmt: skip
STATEFUL_STEPS = 6  # batches, restarts, crashes: each batch costs a Spark job and ~6 commits
METRICS_COLUMNS = (
    "query", "batch_id", "input_rows", "output_rows", "silver_rows", "quarantine_rows",
    "duplicates_dropped", "quarantine_reasons", "max_event_time",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_hooks_and_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The real crash hook would end the test process; a stray unsafe switch would void a test.
    monkeypatch.delenv(CRASH_HOOK_ENV, raising=False)
    monkeypatch.delenv(UNSAFE_NO_IDEMPOTENCE_ENV, raising=False)
    # collect() turns timestamps into naive datetimes of the local zone, which the gold state
    # reads as UTC: the pipeline sets TZ=UTC at start (jobs/pipeline.py run), so do we.
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
    time.tzset()


# --- the pipeline under test ------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_tables(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """A data dir with every table as ``ensure_tables`` creates it, made once and copied per
    test: an empty Delta table is its log, which holds no absolute path."""
    data_dir = tmp_path_factory.mktemp("empty-tables") / "d"
    env, settings_ = _environment(spark, data_dir, "1 minute")
    pipeline.ensure_tables(spark, env, settings_)
    return data_dir


def _environment(spark, data_dir: Path, window: str) -> tuple[LocalEnvironment, PipelineSettings]:  # type: ignore[no-untyped-def]
    env = LocalEnvironment(bootstrap_servers="x:1", topic="t", data_dir=data_dir)
    env._spark = spark
    env.kafka_end_offsets = lambda: None  # type: ignore[method-assign]  # no broker here
    return env, PipelineSettings(
        topic="t", data_dir=data_dir, bootstrap_servers="x:1", window=window
    )


@dataclass
class Pipeline:
    """One data dir; :meth:`restart` is a new process: a fresh batch object, empty state."""

    spark: Any
    data_dir: Path
    window: str = "1 minute"
    batches: list[MedallionBatch] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env, self.settings = _environment(self.spark, self.data_dir, self.window)

    @property
    def current(self) -> MedallionBatch:
        return self.batches[-1] if self.batches else self.restart()

    def restart(self) -> MedallionBatch:
        if self.batches:
            self.batches[-1].close()
        self.batches.append(MedallionBatch(self.env, self.settings, writer=WRITER))
        return self.batches[-1]

    def process(self, records: Sequence[Record], batch_id: int) -> None:
        self.current.process(kafka_frame(self.spark, records), batch_id)

    def close(self) -> None:
        for b in self.batches:
            b.close()

    def path(self, key: str) -> str:
        return str(self.env.table(key))

    def versions(self) -> dict[str, int]:
        return {key: DeltaTable(self.path(key)).version() for key in TABLE_KEYS}

    def tables(self) -> dict[str, Counter[tuple[Any, ...]]]:
        return {key: _observed(key, self._rows(key)) for key in TABLE_KEYS}

    def _rows(self, key: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = DeltaTable(self.path(key)).to_pyarrow_table().to_pylist()
        return [{k: model.naive_utc(v) for k, v in row.items()} for row in rows]


@pytest.fixture
def new_pipeline(spark, empty_tables: Path, tmp_path: Path) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    made: list[Pipeline] = []

    def make(window: str = "1 minute") -> Pipeline:
        data_dir = tmp_path / f"d{len(made)}"
        shutil.copytree(empty_tables, data_dir)
        made.append(Pipeline(spark, data_dir, window))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _observed(key: str, rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """A table as a multiset of the columns the model knows (a duplicate row counts twice)."""
    if key == "bronze/orders":
        columns: Sequence[str] = (
            "kafka_topic", "kafka_partition", "kafka_offset", "raw_value", "raw_bytes",
            "kafka_key", "kafka_timestamp",
        )  # fmt: skip
    elif key == "silver/quarantine":
        columns = (
            "kafka_topic", "kafka_partition", "kafka_offset", "reasons", "raw_value", "raw_bytes",
            "kafka_timestamp",
        )  # fmt: skip
    elif key == "silver/orders":
        columns = SILVER_COLUMNS
    elif key in GOLD_COLUMNS:
        columns = GOLD_COLUMNS[key]
    else:
        columns = METRICS_COLUMNS
    return Counter(tuple(_hashable(row[c]) for c in columns) for row in rows)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):  # reasons (in order), or a map as (key, value) pairs
        if value and isinstance(value[0], tuple):
            return tuple(sorted(value))
        return tuple(value)
    return value


# --- what the contract model says the tables hold ---------------------------------------------


@dataclass
class Expected:
    """The tables after the batches fed so far, per tests/unit/contract_model.py."""

    window_s: float
    bronze: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    quarantine: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    metrics: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    silver: dict[str, dict[str, Any]] = field(default_factory=dict)

    def points(self, records: Sequence[Record]) -> set[str]:
        """The points a batch of ``records`` passes: "source" and each table it writes."""
        if not records:
            return set()
        outcome = model.run([(r.partition, r.offset, r.value) for r in records])
        points = {"source", "bronze/orders", "metrics/pipeline_batches"}
        if outcome.quarantine:
            points.add("silver/quarantine")
        if any(order_id not in self.silver for order_id in outcome.silver):
            points.update(("silver/orders", *GOLD_COLUMNS))
        return points

    def feed(self, records: Sequence[Record], batch_id: int) -> None:
        if not records:
            return  # an empty micro-batch writes nothing, not even metrics
        outcome = model.run([(r.partition, r.offset, r.value) for r in records])
        record = {(r.partition, r.offset): r for r in records}
        for r in records:
            raw_value, raw_bytes = model.raw_columns(r.value)
            key = model.raw_columns(r.key)[0]
            self.bronze[
                (r.topic, r.partition, r.offset, raw_value, raw_bytes, key, KAFKA_TIMESTAMP)
            ] += 1
        reasons: Counter[str] = Counter()
        for (partition, offset), codes in outcome.quarantine.items():
            raw_value, raw_bytes = outcome.raw[(partition, offset)]
            topic = record[(partition, offset)].topic
            self.quarantine[
                (topic, partition, offset, tuple(codes), raw_value, raw_bytes, KAFKA_TIMESTAMP)
            ] += 1
            reasons.update(codes)
        new = [row for order_id, row in outcome.silver.items() if order_id not in self.silver]
        for row in new:
            topic = record[(row["kafka_partition"], row["kafka_offset"])].topic
            self.silver[row["order_id"]] = {
                **row,
                "kafka_topic": topic,
                "kafka_timestamp": KAFKA_TIMESTAMP,
            }
        rows, rejected = len(records), len(outcome.quarantine)
        valid = rows - rejected
        newest = max((row["order_timestamp"] for row in new), default=None)
        windows = {model.window_start(row["order_timestamp"], self.window_s) for row in new}
        self.metrics.update(
            [
                ("bronze", batch_id, rows, rows, None, None, None, None, None),
                (
                    "silver", batch_id, rows, len(new) + rejected, len(new), rejected,
                    valid - len(new), tuple(sorted(reasons.items())), newest,
                ),
                ("gold", batch_id, len(new), len(windows), None, None, None, None, newest),
            ]
        )  # fmt: skip

    def tables(self) -> dict[str, Counter[tuple[Any, ...]]]:
        silver = list(self.silver.values())
        category = model.category_sales(silver, self.window_s)
        location = model.location_sales(silver, self.window_s)
        return {
            "bronze/orders": self.bronze,
            "silver/quarantine": self.quarantine,
            "silver/orders": Counter(tuple(row[c] for c in SILVER_COLUMNS) for row in silver),
            "gold/category_sales": Counter((*k, *v, _hour(k[0])) for k, v in category.items()),
            "gold/location_sales": Counter((*k, *v, _hour(k[0])) for k, v in location.items()),
            "metrics/pipeline_batches": self.metrics,
        }


def _hour(window_start: dt.datetime) -> int:
    return model.epoch_micros(window_start) // 3_600_000_000


class TablesDiffer(AssertionError):
    def __init__(self, tables: list[str], details: str) -> None:
        super().__init__(
            f"tables differing from the contract model: {', '.join(tables)}\n{details}"
        )
        self.tables = tables


def assert_tables_match(pipeline_: Pipeline, expected: Expected) -> None:
    got, want = pipeline_.tables(), expected.tables()
    differing = [key for key in TABLE_KEYS if got[key] != want[key]]
    if differing:
        details = "\n".join(
            f"{key}: missing {list((want[key] - got[key]).elements())[:3]}, "
            f"unexpected {list((got[key] - want[key]).elements())[:3]}"
            for key in differing
        )
        raise TablesDiffer(differing, details)


# --- a crash in-process: the crash point raises, the writes still under way never commit -----


class Died(Exception):
    """The process ended here (in-process stand-in for the test hook's os._exit)."""


@contextmanager
def dying_right_after(point: str) -> Iterator[None]:
    """The batch dies right after ``point``: ``crash_point(point)`` raises, and every other write
    of the batch (they run side by side) dies before it commits. So exactly the table ``point``
    names holds the batch (none for "source"), the state the most a replay has to make up for."""
    dead = threading.Event()
    save, save_rows = Ledger._save, Ledger._save_rows

    def crash_point(name: str, batch_id: int) -> None:
        if name == point:
            dead.set()
            raise Died(f"after {name} of batch {batch_id}")

    def hold(key: str) -> None:
        if key == point:
            return
        if not dead.wait(timeout=120):
            raise AssertionError(f"the batch never reached {point}")
        raise Died(f"before {key} committed")

    def gated_save(self: Ledger, writer: Any, key: str, table: Any, batch: int) -> bool:
        hold(key)
        return save(self, writer, key, table, batch)

    def gated_save_rows(self: Ledger, rows: Any, schema: Any, key: str, *args: Any) -> bool:
        hold(key)
        return save_rows(self, rows, schema, key, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_module, "crash_point", crash_point)
        patch.setattr(Ledger, "_save", gated_save)
        patch.setattr(Ledger, "_save_rows", gated_save_rows)
        yield


# --- a) a stream fed in random batches, with restarts, crashes and replays anywhere ------------


class StreamInBatches(RuleBasedStateMachine):
    """One topic's records (:func:`streams`) fed to the batch function in random micro-batches,
    in order: each batch takes the next 0..n records of every partition (a Kafka source reads
    each partition's offset range on its own), in any row order. Between batches, a restarted
    process (state rebuilt from the tables), a batch that dies right after any of its points
    and is replayed by a new process, or the last batch replayed once more (a checkpoint that
    lost it after every write committed). After every step every table equals the contract
    model's: validation, global first-consumed deduplication (an earlier batch wins; within a
    batch the lowest (partition, offset)), gold updated across batches, metrics, the ledger."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make
        self.run: Pipeline | None = None
        self.last: tuple[list[Record], int] | None = None

    @initialize(
        records=streams(max_orders=12),
        window=st.sampled_from(["1 minute", "30 seconds", "1 hour"]),
    )
    def start(self, records: list[Record], window: str) -> None:
        self.run = self.make(window)
        self.expected = Expected(window_seconds(window))
        self.pending: dict[int, list[Record]] = {}
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            self.pending.setdefault(r.partition, []).append(r)
        self.batch_id = 0

    def _take(self, data: st.DataObject) -> list[Record]:
        taken: list[Record] = []
        for partition, waiting in self.pending.items():
            n = data.draw(st.integers(0, len(waiting)), label=f"from partition {partition}")
            taken += waiting[:n]
            self.pending[partition] = waiting[n:]
        return data.draw(st.permutations(taken), label="row order")

    def _fed(self, records: list[Record]) -> None:
        self.expected.feed(records, self.batch_id)
        self.last = (records, self.batch_id)
        self.batch_id += 1

    def _waiting(self) -> bool:
        return self.run is not None and any(self.pending.values())

    @precondition(_waiting)
    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        assert self.run is not None
        records = self._take(data)
        self.run.process(records, self.batch_id)
        self._fed(records)

    @precondition(_waiting)
    @rule(data=st.data())
    def batch_dies_then_replays(self, data: st.DataObject) -> None:
        assert self.run is not None
        records = self._take(data)
        points = sorted(self.expected.points(records))
        if points:
            point = data.draw(st.sampled_from(points), label="dies right after")
            event(f"dies right after {point}")
            with dying_right_after(point), pytest.raises(Died):
                self.run.process(records, self.batch_id)
            self.run.restart()
        self.run.process(records, self.batch_id)
        self._fed(records)

    @precondition(lambda self: self.run is not None)
    @rule()
    def restart(self) -> None:
        assert self.run is not None
        self.run.restart()

    @precondition(lambda self: self.last is not None)
    @rule()
    def last_batch_again(self) -> None:
        assert self.run is not None and self.last is not None
        versions = self.run.versions()
        self.run.process(*self.last)
        assert self.run.versions() == versions, "a replayed batch committed again"

    @invariant()
    def every_table_matches_the_model(self) -> None:
        if self.run is not None:
            assert_tables_match(self.run, self.expected)

    def teardown(self) -> None:
        if self.run is not None:
            self.run.close()


def test_every_table_matches_the_contract_model_after_every_batch(new_pipeline):
    """The state machine above, run by Hypothesis: each example a new data dir, a stream and up
    to STATEFUL_STEPS steps (tests/profiles.py: 8 examples under ci, 2 under dev)."""
    run_state_machine_as_test(
        lambda: StreamInBatches(new_pipeline),
        settings=settings(
            max_examples=stateful_examples(),
            stateful_step_count=STATEFUL_STEPS,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# --- b) a crash right after any write, then the restart replays the batch ----------------------


def _order(order_id: str, when: str, category: str = "Books", **fields: Any) -> bytes:
    order = clean_order(order_id=order_id, category=category)
    order["order_timestamp"] = when
    order.update(fields)
    return dumps(order).encode()


FIRST_BATCH = [
    Record(0, 0, _order("a", "2026-11-25T10:00:05Z", price="12.50", quantity=2)),
    Record(0, 1, _order("b", "2026-11-25T10:00:40Z", "Toys", price="0.1", quantity=3, city="Lyon")),
    Record(0, 2, _order("a", "2026-11-25T10:00:05Z", price="12.50", quantity=2)),  # exact re-send
    Record(0, 3, _order("c", "2026-11-25T10:00:10Z", price="abc")),
    Record(0, 4, _order("d", "2026-11-25T10:01:00Z", price=Raw("19.995"), quantity="3")),
    Record(1, 0, _order("c", "2026-11-25T07:59:59.5Z", country=None)),  # corrected, late
    Record(1, 1, b"{broken"),
    Record(1, 2, MALFORMED_PAYLOADS[-1]),  # not UTF-8
    Record(1, 3, _order("b", "2026-11-25T10:00:41Z", "Toys", price="99.00")),  # loses to (0, 1)
]  # fmt: skip
SECOND_BATCH = [
    Record(0, 5, _order("a", "2026-11-25T10:00:06Z", price="1.00")),  # silver holds a already
    Record(0, 6, _order("f", "2026-11-25T10:00:30Z", quantity=0)),
    Record(0, 7, _order("h", "2026-11-25T11:00:00Z", "Sports")),
    Record(1, 4, _order("e", "2026-11-25T10:00:59.999Z", price="0.01")),  # a's window
    Record(1, 5, _order("g", "2026-11-25T10:59:59Z", "Electronics")),
    Record(1, 6, _order("d", "2026-11-25T10:01:00Z", price=Raw("19.995"), quantity="3")),
]  # fmt: skip


def crash_restart_and_go_on(run: Pipeline, point: str) -> None:
    """Batch 0 dies right after ``point``; a new process replays it, then runs batch 1. The
    tables are checked against the model after the replay and after batch 1."""
    before = run.versions()
    with dying_right_after(point), pytest.raises(Died):
        run.process(FIRST_BATCH, 0)
    committed = {key for key, version in run.versions().items() if version != before[key]}
    assert committed == ({point} - {"source"}), "the crash left another state than intended"
    run.restart()
    expected = Expected(window_seconds(run.window))
    run.process(FIRST_BATCH, 0)
    expected.feed(FIRST_BATCH, 0)
    assert_tables_match(run, expected)
    run.process(SECOND_BATCH, 1)
    expected.feed(SECOND_BATCH, 1)
    assert_tables_match(run, expected)
    layers = Counter((row[1], row[0]) for row in run.tables()["metrics/pipeline_batches"])
    assert layers == {(b, q): 1 for b in (0, 1) for q in ("bronze", "silver", "gold")}


@pytest.mark.parametrize("point", ["source", *WRITE_SEQUENCE])
def test_a_crash_right_after_any_write_is_made_good_by_the_replay(new_pipeline, point: str):
    """Protection: the ledger's per-table batch marker, plus silver's replay path (the orders a
    committed silver took are found at the batch's Kafka coordinates, so gold and the metrics
    still get them). The restarted process writes exactly the tables that missed the batch:
    nothing twice (bronze, quarantine, metrics: 3 rows per batch), nothing lost, gold's hours
    read back from the table and counted once."""
    crash_restart_and_go_on(new_pipeline(), point)


# Without a table's ledger check, what a replay after that table's commit breaks. Silver itself
# stays right (its order ids are probed anyway), but the replay finds nothing new in the batch:
# gold misses the batch's orders and the metrics count them as duplicates.
BROKEN_WITHOUT_THE_CHECK = {
    "bronze/orders": ["bronze/orders"],
    "silver/quarantine": ["silver/quarantine"],
    "silver/orders": ["gold/category_sales", "gold/location_sales", "metrics/pipeline_batches"],
    "gold/category_sales": ["gold/category_sales"],
    "gold/location_sales": ["gold/location_sales"],
    "metrics/pipeline_batches": ["metrics/pipeline_batches"],
}


@pytest.mark.parametrize("point", WRITE_SEQUENCE)
def test_without_the_ledger_check_the_same_crash_breaks_the_tables(
    new_pipeline, monkeypatch: pytest.MonkeyPatch, point: str
):
    """Negative control of the test above: with ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE naming the
    table that committed before the crash, the replay writes it again (bronze, quarantine,
    metrics: duplicate rows; gold: the batch counted twice; silver: see
    BROKEN_WITHOUT_THE_CHECK), and the same check fails for those tables only."""
    monkeypatch.setenv(UNSAFE_NO_IDEMPOTENCE_ENV, point)
    with pytest.raises(TablesDiffer) as failed:
        crash_restart_and_go_on(new_pipeline(), point)
    assert failed.value.tables == BROKEN_WITHOUT_THE_CHECK[point]
    assert all(table in str(failed.value) for table in BROKEN_WITHOUT_THE_CHECK[point])


# --- c) a replayed batch changes nothing -------------------------------------------------------


def test_a_replayed_batch_changes_no_table(new_pipeline):
    """Protection: every table's ledger marker. A batch the tables already hold (the checkpoint
    lost it after every write committed) commits nothing, whether the same process or a
    restarted one runs it again."""
    run = new_pipeline()
    run.process(FIRST_BATCH, 0)
    expected = Expected(window_seconds(run.window))
    expected.feed(FIRST_BATCH, 0)
    assert_tables_match(run, expected)
    versions, tables = run.versions(), run.tables()
    assert all(versions[key] == 1 for key in TABLE_KEYS)
    run.process(FIRST_BATCH, 0)
    assert (run.versions(), run.tables()) == (versions, tables)
    run.restart()
    run.process(FIRST_BATCH, 0)
    assert (run.versions(), run.tables()) == (versions, tables)


# --- d) maintenance changes no content ---------------------------------------------------------


def test_table_maintenance_leaves_every_table_unchanged(new_pipeline):
    """Protection: compaction is content-neutral (OPTIMIZE, dataChange=false). Two batches
    leave several files per table; after compact() a table of several files holds fewer, and
    every table holds exactly the same rows as before (and as the contract model says)."""
    from ecomstream.jobs.maintenance import COMPACTED, compact

    run = new_pipeline()
    expected = Expected(window_seconds(run.window))
    for batch_id, records in enumerate((FIRST_BATCH, SECOND_BATCH)):
        run.process(records, batch_id)
        expected.feed(records, batch_id)
    before = run.tables()
    files = {k: len(DeltaTable(run.env.table(k).local_path()).file_uris()) for k in COMPACTED}
    removed = compact(run.env)
    assert run.tables() == before
    for key in COMPACTED:
        after = len(DeltaTable(run.env.table(key).local_path()).file_uris())
        assert after < files[key] if files[key] > 1 else after == files[key], (key, files, after)
    assert sum(removed.values()) > 0  # there was something to compact
    assert_tables_match(run, expected)
