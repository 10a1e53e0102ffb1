"""``bronze/orders`` -> ``silver/orders`` + ``silver/quarantine`` (foreachBatch).

Per micro-batch: validate (pure), append the rejected rows to quarantine, keep the first valid
row per order_id within the batch, then MERGE into silver inserting only order_ids silver does
not hold yet. Silver itself is the dedup state: exact however late a duplicate arrives, and it
grows with the data, not with a streaming state store. Each write is idempotent (see
:mod:`ecomstream.jobs.writes`), so a batch replayed after a crash changes nothing.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ecomstream.jobs import metrics, writes
from ecomstream.jobs.base import StreamJob, foreach_batch
from ecomstream.transforms.silver import first_per_order, validate, with_checks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamWriter


def checked_frame(batch_df: DataFrame, categories: tuple[str, ...]) -> DataFrame | None:
    """Cache the validation checks of a batch, so both sides of ``validate`` reuse them.

    ``validate`` derives valid and quarantined rows from ``with_checks(bronze)``; Spark's cache
    manager substitutes a cached frame for any identical sub-plan, so caching that frame here
    makes the (regex- and cast-heavy) checks run once per batch instead of once per action.
    Purely an optimisation: if the transform's shape changes, nothing is cached.
    """
    checks: Any = with_checks  # its signature is the transforms' business; both shapes work
    try:
        if len(inspect.signature(checks).parameters) >= 2:
            checked = checks(batch_df, categories)
        else:
            checked = checks(categories)(batch_df)
    except Exception:
        return None
    return checked.persist(StorageLevel.MEMORY_AND_DISK)


class SilverJob(StreamJob):
    name = "silver"

    def _writer(self) -> DataStreamWriter:
        bronze = self.env.table("bronze/orders").read_stream(
            self.env.spark(), maxBytesPerTrigger=self.settings.max_bytes_per_trigger
        )
        return bronze.writeStream.foreachBatch(foreach_batch(self))

    def process(self, batch_df: DataFrame, batch_id: int) -> None:
        row = metrics.BatchMetrics("silver", batch_id, metrics.utcnow())
        checked = checked_frame(batch_df, self.settings.categories)
        valid, quarantined = validate(batch_df, self.settings.categories)
        try:
            valid_stats = valid.agg(
                F.count(F.lit(1)).alias("n"), F.max("order_timestamp").alias("newest")
            ).first()
            reason_sets = quarantined.groupBy("reasons").count().collect()
            n_valid = int(valid_stats["n"]) if valid_stats else 0
            reasons: dict[str, int] = {}
            for r in reason_sets:
                for code in r["reasons"]:
                    reasons[code] = reasons.get(code, 0) + int(r["count"])
            n_quarantined = sum(int(r["count"]) for r in reason_sets)

            if n_quarantined:
                writes.append(
                    quarantined,
                    self.env.table("silver/quarantine"),
                    self.app_id("quarantine"),
                    batch_id,
                )
            inserted = 0
            if n_valid:
                inserted_or_none = writes.insert_new(
                    first_per_order(valid),
                    self.env.table("silver/orders"),
                    "order_id",
                    self.app_id("orders"),
                    batch_id,
                    candidate_keys=valid,
                )
                row.replayed = inserted_or_none is None
                inserted = inserted_or_none or 0
            self.pause_for_tests(batch_id)

            row.input_rows = n_valid + n_quarantined
            row.output_rows = inserted + n_quarantined
            row.silver_rows = inserted
            row.quarantine_rows = n_quarantined
            row.duplicates_dropped = None if row.replayed else n_valid - inserted
            row.quarantine_reasons = reasons
            row.max_event_time = valid_stats["newest"] if valid_stats else None
            self.metrics_table_write(row)
        finally:
            if checked is not None:
                checked.unpersist()
