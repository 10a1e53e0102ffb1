"""One micro-batch of Kafka records through every layer: bronze, quarantine, silver, gold.

The batch is parsed and checked once and cached; a handful of small Spark jobs then answer
what the writes need to know (counts, reasons, which order ids silver already holds, which
windows the new orders touch), and the table writes run side by side, each its own commit:

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

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ecomstream.adapters.base import Environment, hook
from ecomstream.jobs import metrics
from ecomstream.jobs.arrow import to_arrow
from ecomstream.jobs.ledger import Ledger
from ecomstream.jobs.settings import PipelineSettings
from ecomstream.jobs.state import GoldHours, Key, Measures, OrderIds
from ecomstream.schemas import (
    BRONZE_SCHEMA,
    CATEGORY_SALES_SCHEMA,
    GOLD_PARTITION,
    LOCATION_SALES_SCHEMA,
    SILVER_SCHEMA,
)
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.gold import window_seconds
from ecomstream.transforms.silver import REASONS_COLUMN, classify, first_per_order, split

if TYPE_CHECKING:
    import datetime as dt

    from pyspark.sql import DataFrame

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

    def __init__(self, env: Environment, settings: PipelineSettings, writer: str) -> None:
        self.env = env
        self.settings = settings
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
        # next offset read per Kafka partition, for the lag in the metrics
        self._offsets: dict[int, int] = {}
        # the order ids the running batch adds to silver
        self._new_ids: set[str] = set()

    def table(self, key: str) -> Any:
        return self.env.table(key)

    def process(self, kafka_df: DataFrame, batch_id: int) -> BatchFigures:
        started = metrics.utcnow()
        # read from Kafka, parsed and checked once: every write below reads this cache
        checked = classify(to_bronze(kafka_df), self.settings.categories).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        new_orders: DataFrame | None = None
        try:
            figures = BatchFigures()
            lap = time.monotonic()
            self._count(checked, figures)
            if figures.rows == 0:
                return figures
            lap = figures.lap("read", lap)
            crash_point("source", batch_id)
            valid, quarantined = split(checked)
            new_orders = self._new_orders(valid, batch_id).persist(StorageLevel.MEMORY_AND_DISK)
            lap = figures.lap("probe", lap)
            self._sales(new_orders, figures)
            lap = figures.lap("sales", lap)

            orders = new_orders
            received = checked.select(*BRONZE_SCHEMA.fieldNames())
            writes: list[tuple[str, Callable[[], bool]]] = [
                ("bronze/orders", lambda: self._append("bronze/orders", received, batch_id)),
                ("metrics/pipeline_batches", lambda: self._metrics(figures, batch_id, started)),
            ]
            if figures.quarantined:
                writes.append(
                    (
                        "silver/quarantine",
                        lambda: self._append("silver/quarantine", quarantined, batch_id),
                    )
                )
            if figures.inserted:
                writes.append(("silver/orders", lambda: self._silver(orders, batch_id)))
                for key in GOLD:
                    writes.append((key, self._gold_write(key, figures, batch_id)))
            self._run(writes, batch_id, figures)
            figures.lap("writes", lap)
            log.info(
                json.dumps({"event": "batch_phases", "batch_id": batch_id, **figures.phases_ms})
            )
            return figures
        finally:
            if new_orders is not None:
                new_orders.unpersist()
            checked.unpersist()

    # -- what each write needs -------------------------------------------------------------------
    @staticmethod
    def _count(checked: DataFrame, figures: BatchFigures) -> None:
        """Records, next offsets per partition and quarantine reasons, in the job that fills
        the cache."""
        for row in (
            checked.groupBy("kafka_partition", REASONS_COLUMN)
            .agg(F.count(F.lit(1)).alias("n"), F.max("kafka_offset").alias("last"))
            .collect()
        ):
            n, partition = int(row["n"]), int(row["kafka_partition"])
            figures.rows += n
            following = int(row["last"]) + 1
            figures.processed_offsets[partition] = max(
                following, figures.processed_offsets.get(partition, 0)
            )
            if row[REASONS_COLUMN]:
                figures.quarantined += n
                for code in row[REASONS_COLUMN]:
                    figures.reasons[code] = figures.reasons.get(code, 0) + n

    def _new_orders(self, valid: DataFrame, batch_id: int) -> DataFrame:
        """The valid records this batch adds to silver: the first per order id (lowest Kafka
        partition, offset) among those silver does not hold yet."""
        candidates = first_per_order(valid)
        key, silver = "silver/orders", self.table("silver/orders")
        if self.ledger.committed(key, silver, batch_id):
            # a replay after silver took this batch: what it took sits at our coordinates (and
            # the ids silver holds, read from it, already include them)
            self._new_ids = set()
            coordinates = ["kafka_topic", "kafka_partition", "kafka_offset"]
            held = silver.read(self.env.spark()).select(*coordinates)
            return candidates.join(held, coordinates, "left_semi")
        ids = set(valid.select("order_id").toArrow().column("order_id").to_pylist())
        already = self.order_ids.held(ids)
        # every id of the batch that silver lacks gets exactly one row: these are the new ids
        self._new_ids = ids.difference(already)
        if not already:
            return candidates
        return candidates.where(~F.col("order_id").isin(already))

    def _sales(self, new_orders: DataFrame, figures: BatchFigures) -> None:
        """The new orders' sales per window and gold key, in one small job."""
        window = F.window("order_timestamp", self.settings.window).start
        grain = ["category", "country", "city"]
        for key in GOLD:
            figures.increments[key] = {}
        for row in (
            new_orders.groupBy(window.alias("w"), *grain)
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(F.col("quantity").cast("long")).alias("units"),
                F.sum("total_amount").alias("revenue"),
                F.max("order_timestamp").alias("newest"),
            )
            .collect()
        ):
            n, units, cents = int(row["n"]), int(row["units"]), int(row["revenue"] * 100)
            figures.inserted += n
            if figures.newest_event is None or row["newest"] > figures.newest_event:
                figures.newest_event = row["newest"]
            for key, (_, keys) in GOLD.items():
                per_key = figures.increments[key].setdefault(row["w"], {})
                measures = per_key.setdefault(tuple(row[k] for k in keys), [0, 0, 0])
                measures[0] += n
                measures[1] += units
                measures[2] += cents

    def _append(self, key: str, rows: DataFrame, batch_id: int) -> bool:
        return self.ledger.append(rows, key, self.table(key), batch_id)

    def _silver(self, orders: DataFrame, batch_id: int) -> bool:
        key = "silver/orders"
        rows = orders.select(*SILVER_SCHEMA.fieldNames())
        if not self.ledger.append(rows, key, self.table(key), batch_id):
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
