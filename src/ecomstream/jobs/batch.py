"""One micro-batch of Kafka records through every layer: bronze, quarantine, silver, gold.

Spark does the per-record work in ONE job: the batch is read, parsed, checked and projected to
every column the writes need, and comes to the driver as Arrow. What is per batch is decided
there in vectorised Arrow compute (counts and reasons, the first record per order id, which ids
silver already holds, the new orders' sales per window), and the tables are written side by
side, each its own commit (delta-rs for a local table, Spark for a catalog table):

* ``bronze/orders``: every record, as received;
* ``silver/quarantine``: the rejected records with their reasons;
* ``silver/orders``: the first valid record per order id that silver does not hold yet;
* ``gold/*``: the windows the new orders touch, rewritten as their old rows plus the new
  orders' sales (a partition overwrite of those windows: no MERGE, no re-read of silver);
* ``metrics/pipeline_batches``: the batch's figures, one row per layer.

Silver's order ids and gold's recent windows are kept in memory (:mod:`ecomstream.jobs.state`),
so no batch re-reads the tables it writes.

Every write is idempotent by the batch id in its commit (:mod:`ecomstream.jobs.ledger`), and
each is computed from the batch and the state the tables had before it, so a batch replayed
after a crash at any point writes exactly the tables that missed it. The one input that a
committed write changes is silver itself: on a replay after silver committed, the batch's new
orders are the candidates silver holds at this batch's Kafka coordinates (each record belongs to
exactly one batch), which is what the first run inserted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import functions as F

from ecomstream.adapters.base import Environment, hook
from ecomstream.contract import EVENT_FIELDS
from ecomstream.jobs import metrics
from ecomstream.jobs.arrow import to_arrow
from ecomstream.jobs.ledger import Ledger
from ecomstream.jobs.replay import Replayed
from ecomstream.jobs.settings import PipelineSettings
from ecomstream.jobs.state import GoldHours, Key, Measures, OrderIds
from ecomstream.schemas import (
    BRONZE_SCHEMA,
    CATEGORY_SALES_SCHEMA,
    GOLD_PARTITION,
    LOCATION_SALES_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
)
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.gold import window_seconds
from ecomstream.transforms.silver import (
    REASON_BITS_COLUMN,
    classify,
    reason_codes,
    reasons,
    typed_silver_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

# Test hook, never set in production: "<point>[:<batch>]" ends the process (os._exit, no
# clean-up) right after that point of a batch: "source" (batch read and checked, nothing
# written), a table key (its write committed), or "maintenance" (see jobs/maintenance.py).
CRASH_HOOK_ENV = "ECOMSTREAM_TEST_CRASH_AFTER"
WRITE_SEQUENCE: tuple[str, ...] = (
    "bronze/orders",
    "silver/quarantine",
    "silver/orders",
    "gold/category_sales",
    "gold/location_sales",
    "metrics/pipeline_batches",
)
log = logging.getLogger("ecomstream.pipeline")
# Parquet row groups of bronze's files, in records. A batch holds every Kafka partition's
# records, each partition's together; with row groups this size (instead of one per file) a
# reader of one partition's offsets, as ``ecomstream reprocess`` is (jobs/rebuild.py), skips
# the other partitions' groups by their statistics instead of decoding every payload of the
# file once per partition.
BRONZE_ROW_GROUP = 32_768
# gold table -> (its schema, its key columns within a window)
GOLD = {
    "gold/category_sales": (CATEGORY_SALES_SCHEMA, ("category",)),
    "gold/location_sales": (LOCATION_SALES_SCHEMA, ("country", "city")),
}


def crash_point(point: str, batch_id: int) -> None:
    """End the process here if the test hook asks for this point (and batch)."""
    raw = os.environ.get(CRASH_HOOK_ENV, "")
    if not raw:
        return
    name, _, batch = raw.partition(":")
    if name != point or (batch and int(batch) != batch_id):
        return
    print(f"ECOMSTREAM_TEST_HOOK crash after {point} batch {batch_id}", flush=True)
    sys.stderr.flush()
    os._exit(137)


@dataclass
class BatchFigures:
    """What the small jobs of a batch found out before any write."""

    rows: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    processed_offsets: dict[int, int] = field(default_factory=dict)
    inserted: int = 0
    newest_event: dt.datetime | None = None
    # gold table -> window start -> key -> [orders, units, revenue cents] of the new orders
    increments: dict[str, dict[dt.datetime, dict[Key, Measures]]] = field(default_factory=dict)
    # wall-clock milliseconds of each step, for the log and the benchmarks
    phases_ms: dict[str, int] = field(default_factory=dict)

    def lap(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phases_ms[phase] = int((now - since) * 1000)
        return now

    @property
    def valid(self) -> int:
        return self.rows - self.quarantined

    @property
    def windows(self) -> int:
        return len(self.increments.get("gold/category_sales", {}))


class MedallionBatch:
    """Runs batches for one writer (the streaming query's id) against one environment."""

    def __init__(
        self,
        env: Environment,
        settings: PipelineSettings,
        writer: str,
        tables: Collection[str] = WRITE_SEQUENCE,
    ) -> None:
        self.env = env
        self.settings = settings
        # the tables this batch writes: all of them, or (``ecomstream reprocess``, which reads
        # bronze and keeps metrics of its own) silver, quarantine and gold
        self.tables = frozenset(tables)
        spark = env.spark()
        self.ledger = Ledger(spark, writer)
        self.order_ids = OrderIds(spark, env.table("silver/orders"))
        size = window_seconds(settings.window)
        self.gold = {
            key: GoldHours(
                spark, env.table(key), keys, size, with_average="avg_order_value" in schema.names
            )
            for key, (schema, keys) in GOLD.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=len(WRITE_SEQUENCE), thread_name_prefix="w")
        self._replayed = Replayed(self.collected_frame)
        # next offset read per Kafka partition, for the lag in the metrics
        self._offsets: dict[int, int] = {}
        # the order ids the running batch adds to silver
        self._new_ids: set[str] = set()

    def table(self, key: str) -> Any:
        return self.env.table(key)

    def process(self, kafka_df: DataFrame, batch_id: int) -> BatchFigures:
        started = metrics.utcnow()
        figures = BatchFigures()
        lap = time.monotonic()
        batch = self._collect(kafka_df)
        if batch.num_rows == 0:
            return figures
        lap = figures.lap("read", lap)
        crash_point("source", batch_id)
        self._count(batch, figures)
        bits = batch.column(REASON_BITS_COLUMN)
        # Masks over the whole batch, and each table's columns filtered once: a filter copies
        # what it keeps, and the payload columns are most of a batch's bytes.
        new = _without(batch, _NOT_FOR_SILVER).filter(self._new_mask(batch, batch_id))
        self._sales(new, figures)
        received = _columns(batch, BRONZE_SCHEMA.fieldNames())
        quarantined = _quarantine_rows(batch).filter(pc.not_equal(bits, 0))
        orders = _silver_rows(new)
        lap = figures.lap("decide", lap)

        bronze = self._append("bronze/orders", received, BRONZE_SCHEMA, batch_id, BRONZE_ROW_GROUP)
        writes: list[tuple[str, Callable[[], bool]]] = [
            ("bronze/orders", bronze),
            ("metrics/pipeline_batches", lambda: self._metrics(figures, batch_id, started)),
        ]
        if figures.quarantined:
            write = self._append("silver/quarantine", quarantined, QUARANTINE_SCHEMA, batch_id)
            writes.append(("silver/quarantine", write))
        if figures.inserted:
            writes.append(("silver/orders", lambda: self._silver(orders, batch_id)))
            for key in GOLD:
                writes.append((key, self._gold_write(key, figures, batch_id)))
        self._run([w for w in writes if w[0] in self.tables], batch_id, figures)
        figures.lap("writes", lap)
        log.info(json.dumps({"event": "batch_phases", "batch_id": batch_id, **figures.phases_ms}))
        return figures

    # -- what each write needs -------------------------------------------------------------------
    def _collect(self, kafka_df: DataFrame) -> pa.Table:
        return self.collected(kafka_df).toArrow()

    def collected(self, kafka_df: DataFrame) -> DataFrame:
        """:meth:`collected_frame`, built once and replayed on every later batch
        (jobs/replay.py: building it costs 0.75-1.5 s of py4j calls per batch)."""
        return self._replayed(kafka_df)

    def collected_frame(self, kafka_df: DataFrame) -> DataFrame:
        """The batch's one Spark job: every record parsed and checked, brought to the driver as
        Arrow with what every write needs (bronze's columns, the reason bits, silver's typed
        columns and gold's inputs for a valid record, quarantine's reasons for the others).
        Deduplication, the silver probe and gold's increments are then decided on the driver in
        vectorised Arrow compute, and the tables written from there: no cache, no second job.
        docs/pipeline.md has the figures behind this."""
        checked = classify(to_bronze(kafka_df), self.settings.categories)
        bits = F.col(REASON_BITS_COLUMN)
        valid = bits == 0
        micros = F.unix_micros("_order_ts")
        size = round(window_seconds(self.settings.window) * 1_000_000)
        typed = {f"s_{name}": column for name, column in typed_silver_columns().items()}
        gold = {
            "g_ts": micros,
            "g_window": micros - F.pmod(micros, F.lit(size)),
            "g_units": F.col("_quantity").cast("long"),
            "g_cents": (F.col("_total") * 100).cast("long"),
        }
        return checked.select(
            *BRONZE_SCHEMA.fieldNames(),
            REASON_BITS_COLUMN,
            *(F.when(valid, column).alias(name) for name, column in {**typed, **gold}.items()),
            F.when(~valid, reasons(bits)).alias("q_reasons"),
            F.when(~valid, F.col("_order_id")).alias("q_order_id"),
            F.current_timestamp().alias("q_quarantined_at"),
        )

    @staticmethod
    def _count(facts: pa.Table, figures: BatchFigures) -> None:
        """Records, next offsets per partition and quarantine reasons."""
        figures.rows = facts.num_rows
        last = facts.group_by("kafka_partition").aggregate([("kafka_offset", "max")])
        for partition, offset in zip(
            last.column("kafka_partition").to_pylist(),
            last.column("kafka_offset_max").to_pylist(),
            strict=True,
        ):
            figures.processed_offsets[int(partition)] = int(offset) + 1
        bits = facts.group_by(REASON_BITS_COLUMN).aggregate([(REASON_BITS_COLUMN, "count")])
        for value, n in zip(
            bits.column(REASON_BITS_COLUMN).to_pylist(),
            bits.column(f"{REASON_BITS_COLUMN}_count").to_pylist(),
            strict=True,
        ):
            if value:
                figures.quarantined += n
                for code in reason_codes(value):
                    figures.reasons[code] = figures.reasons.get(code, 0) + n

    def _new_mask(self, batch: pa.Table, batch_id: int) -> pa.ChunkedArray:
        """Which records of ``batch`` it adds to silver: of the valid ones, the first per order
        id (lowest Kafka partition, offset) among those silver does not hold yet."""
        key, silver = "silver/orders", self.table("silver/orders")
        valid = pc.equal(batch.column(REASON_BITS_COLUMN), 0)
        if self.ledger.committed(key, silver, batch_id):
            # a replay after silver took this batch: what it took sits at our coordinates (and
            # the ids silver holds, read from it, already include them)
            self._new_ids = set()
            return pc.and_(valid, self._held_coordinates(batch))
        keep = pc.and_(valid, _first_per_order(batch))
        ids = batch.column("s_order_id")  # NULL for a rejected record
        candidates = set(ids.to_pylist())
        candidates.discard(None)
        already = self.order_ids.held(candidates)
        if already:
            keep = pc.and_(keep, pc.invert(pc.is_in(ids, value_set=pa.array(already))))
        self._new_ids = candidates.difference(already)  # one kept record per id
        return keep

    def _held_coordinates(self, rows: pa.Table) -> pa.ChunkedArray:
        """Which of ``rows`` silver holds, by Kafka coordinates."""
        silver = self.table("silver/orders").read(self.env.spark())
        keep = pa.chunked_array([pa.array([False] * rows.num_rows, pa.bool_())])
        for (topic, partition), offsets in _offsets_by_partition(rows).items():
            found = (
                silver.where(
                    (F.col("kafka_topic") == topic)
                    & (F.col("kafka_partition") == partition)
                    & F.col("kafka_offset").between(min(offsets), max(offsets))
                )
                .select("kafka_offset")
                .toArrow()
                .column("kafka_offset")
            )
            here = pc.and_(
                pc.and_(
                    pc.equal(rows.column("kafka_topic"), topic),
                    pc.equal(rows.column("kafka_partition"), partition),
                ),
                pc.is_in(rows.column("kafka_offset"), value_set=found.combine_chunks()),
            )
            keep = pc.or_(keep, here)
        return keep

    def _sales(self, new: pa.Table, figures: BatchFigures) -> None:
        """The new orders' sales per window and gold key."""
        for key in GOLD:
            figures.increments[key] = {}
        figures.inserted = new.num_rows
        if not new.num_rows:
            return
        figures.newest_event = _from_micros(pc.max(new.column("g_ts")).as_py())
        event = new.column("event")
        inputs = pa.table(
            {
                "window": new.column("g_window"),
                **{k: pc.struct_field(event, k) for k in ("category", "country", "city")},
                "units": new.column("g_units"),
                "cents": new.column("g_cents"),
            }
        )
        sums = inputs.group_by(["window", "category", "country", "city"], use_threads=False)
        for row in sums.aggregate(
            [("units", "count"), ("units", "sum"), ("cents", "sum")]
        ).to_pylist():
            n, units, cents = row["units_count"], row["units_sum"], row["cents_sum"]
            window = _from_micros(row["window"])
            for key, (_, keys) in GOLD.items():
                per_key = figures.increments[key].setdefault(window, {})
                measures = per_key.setdefault(tuple(row[k] for k in keys), [0, 0, 0])
                measures[0] += n
                measures[1] += units
                measures[2] += cents

    def _append(
        self,
        key: str,
        rows: pa.Table,
        schema: StructType,
        batch_id: int,
        row_group_rows: int | None = None,
    ) -> Callable[[], bool]:
        table = self.table(key)
        return lambda: self.ledger.append_rows(rows, schema, key, table, batch_id, row_group_rows)

    def _silver(self, orders: pa.Table, batch_id: int) -> bool:
        key = "silver/orders"
        if not self.ledger.append_rows(orders, SILVER_SCHEMA, key, self.table(key), batch_id):
            return False
        self.order_ids.add(self._new_ids)
        return True

    def _gold_write(self, key: str, figures: BatchFigures, batch_id: int) -> Callable[[], bool]:
        def write() -> bool:
            table, state = self.table(key), self.gold[key]
            if self.ledger.committed(key, table, batch_id):
                return False
            hours = state.updated(figures.increments[key])
            schema = GOLD[key][0]
            rows = to_arrow(state.rows(hours), schema)
            touched = f"{GOLD_PARTITION} IN ({', '.join(str(h) for h in sorted(hours))})"
            self.ledger.replace_rows(rows, schema, key, table, batch_id, touched)
            state.commit(hours)
            return True

        return write

    def _run(
        self, writes: list[tuple[str, Callable[[], bool]]], batch_id: int, figures: BatchFigures
    ) -> None:
        """The writes side by side (each is mostly commit latency, little CPU); any failure
        fails the batch, after every write has finished one way or the other."""

        def run(key: str, write: Callable[[], bool]) -> None:
            since = time.monotonic()
            if write():
                crash_point(key, batch_id)
            figures.lap(f"write:{key}", since)

        futures = [self._pool.submit(run, key, write) for key, write in writes]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _metrics(self, figures: BatchFigures, batch_id: int, started: dt.datetime) -> bool:
        key = "metrics/pipeline_batches"
        table = self.table(key)
        if self.ledger.committed(key, table, batch_id):
            return False
        ends: dict[int, int] | None = hook(self.env, "kafka_end_offsets")()
        self._offsets.update(figures.processed_offsets)
        finished = metrics.utcnow()
        duration = int((finished - started).total_seconds() * 1000)

        def layer(query: str, **figures_of_layer: Any) -> metrics.BatchMetrics:
            return metrics.BatchMetrics(
                query=query,
                batch_id=batch_id,
                started_at=started,
                finished_at=finished,
                duration_ms=duration,
                **figures_of_layer,
            )

        rows = [
            layer(
                "bronze",
                input_rows=figures.rows,
                output_rows=figures.rows,
                kafka_end_offset_total=sum(ends.values()) if ends else None,
                kafka_processed_offset_total=self._processed_total(ends),
            ),
            layer(
                "silver",
                input_rows=figures.rows,
                output_rows=figures.inserted + figures.quarantined,
                silver_rows=figures.inserted,
                quarantine_rows=figures.quarantined,
                duplicates_dropped=figures.valid - figures.inserted,
                quarantine_reasons=figures.reasons,
                max_event_time=figures.newest_event,
            ),
            layer(
                "gold",
                input_rows=figures.inserted,
                output_rows=figures.windows,
                max_event_time=figures.newest_event,
            ),
        ]
        return metrics.write(self.ledger, table, rows, batch_id)

    def _processed_total(self, ends: dict[int, int] | None) -> int | None:
        """Next offsets read, summed over the topic's partitions; a partition this process
        has read nothing from yet counts at its end offset (the lag is a hint)."""
        if not ends:
            return sum(self._offsets.values()) or None
        return sum(self._offsets.get(p, end) for p, end in ends.items())

    def close(self) -> None:
        self._pool.shutdown(wait=True)


_EPOCH = dt.datetime(1970, 1, 1)


def _from_micros(micros: int) -> dt.datetime:
    """Microseconds since the epoch -> a naive UTC datetime (as Spark's collect gives them)."""
    return _EPOCH + dt.timedelta(microseconds=micros)


def _first_per_order(rows: pa.Table) -> pa.ChunkedArray:
    """A mask of ``rows``: True for the first record of each order id (lowest Kafka partition,
    then offset), the contract's "first consumed". (Rows without an id count as one more id:
    the caller masks them out.)"""
    if not rows.num_rows:
        return pa.chunked_array([pa.array([], pa.bool_())])
    order = pc.sort_indices(
        rows, sort_keys=[("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
    )
    ids = pc.take(rows.column("s_order_id"), order)
    ranked = pa.table({"id": ids, "rank": pa.array(range(rows.num_rows), pa.int64())})
    firsts = ranked.group_by("id", use_threads=False).aggregate([("rank", "min")])
    first_positions = pc.take(order, firsts.column("rank_min"))
    positions = pa.array(range(rows.num_rows), pa.uint64())
    return pa.chunked_array([pc.is_in(positions, value_set=first_positions.cast(pa.uint64()))])


def _offsets_by_partition(rows: pa.Table) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    pairs = (
        rows.select(["kafka_topic", "kafka_partition"])
        .group_by(["kafka_topic", "kafka_partition"])
        .aggregate([])
    )
    for topic, partition in zip(
        pairs.column("kafka_topic").to_pylist(),
        pairs.column("kafka_partition").to_pylist(),
        strict=True,
    ):
        here = pc.and_(
            pc.equal(rows.column("kafka_topic"), topic),
            pc.equal(rows.column("kafka_partition"), partition),
        )
        out[(topic, int(partition))] = pc.filter(rows.column("kafka_offset"), here).to_pylist()
    return out


# What silver, gold and the dedup do not read: the payload, its bytes, quarantine's columns.
_NOT_FOR_SILVER = ("raw_value", "raw_bytes", "kafka_key", "q_reasons", "q_order_id")


def _without(rows: pa.Table, names: tuple[str, ...]) -> pa.Table:
    return rows.drop_columns([n for n in names if n in rows.column_names])


def _columns(rows: pa.Table, names: list[str], prefix: dict[str, str] | None = None) -> pa.Table:
    """``names`` of ``rows`` (a name in ``prefix`` read from that column instead)."""
    prefix = prefix or {}
    return pa.table({name: rows.column(prefix.get(name, name)) for name in names})


def _quarantine_rows(rows: pa.Table) -> pa.Table:
    return _columns(
        rows,
        QUARANTINE_SCHEMA.fieldNames(),
        {"reasons": "q_reasons", "order_id": "q_order_id", "quarantined_at": "q_quarantined_at"},
    )


def _silver_rows(rows: pa.Table) -> pa.Table:
    """Silver's columns: typed ones from the ``s_`` columns, texts from the event struct."""
    event = rows.column("event")
    columns = {}
    for name in SILVER_SCHEMA.fieldNames():
        if f"s_{name}" in rows.column_names:
            columns[name] = rows.column(f"s_{name}")
        elif name in EVENT_FIELDS:
            columns[name] = pc.struct_field(event, name)
        else:
            columns[name] = rows.column(name)
    return pa.table(columns)
