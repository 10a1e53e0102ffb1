"""``silver/orders`` -> ``gold/category_sales`` + ``gold/location_sales`` (foreachBatch).

Per micro-batch of new silver rows: find the tumbling windows they fall in, recompute exactly
those windows from the whole silver table in batch, and MERGE the results over the gold rows of
those windows. A late order updates its (old) window at once, nothing waits for a watermark, and
after ``--once`` every gold row equals the batch aggregate of silver. Recomputing from silver is
idempotent by itself; the MERGEs carry Delta's txn identifiers as well.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecomstream.jobs import metrics, writes
from ecomstream.jobs.base import StreamJob, foreach_batch
from ecomstream.schemas import CATEGORY_SALES_KEYS, LOCATION_SALES_KEYS
from ecomstream.transforms.gold import category_sales, location_sales, window_seconds

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamWriter


class GoldJob(StreamJob):
    name = "gold"

    def _writer(self) -> DataStreamWriter:
        # silver only ever receives inserts; skipChangeCommits guards against a manual rewrite
        silver = self.env.table("silver/orders").read_stream(
            self.env.spark(),
            skipChangeCommits="true",
            maxBytesPerTrigger=self.settings.max_bytes_per_trigger,
        )
        return silver.writeStream.foreachBatch(foreach_batch(self))

    def process(self, batch_df: DataFrame, batch_id: int) -> None:
        row = metrics.BatchMetrics("gold", batch_id, metrics.utcnow())
        window = self.settings.window
        touched = (
            batch_df.groupBy(F.window("order_timestamp", window).start.alias("window_start"))
            .agg(F.count(F.lit(1)).alias("n"), F.max("order_timestamp").alias("newest"))
            .collect()
        )
        row.input_rows = sum(int(r["n"]) for r in touched)
        starts = [r["window_start"] for r in touched if r["window_start"] is not None]
        affected = 0
        replayed = False
        if starts:
            spark = batch_df.sparkSession
            size = dt.timedelta(seconds=window_seconds(window))
            touched_df = F.broadcast(
                spark.createDataFrame(
                    [(s,) for s in starts],
                    T.StructType([T.StructField("_window_start", T.TimestampType())]),
                )
            )
            silver = self.env.table("silver/orders").read(spark)
            in_windows = (
                silver.where(
                    (F.col("order_timestamp") >= F.lit(min(starts)))
                    & (F.col("order_timestamp") < F.lit(max(starts) + size))
                )
                .withColumn("_window_start", F.window("order_timestamp", window).start)
                .join(touched_df, "_window_start", "left_semi")
                .drop("_window_start")
            )
            for table, aggregate, keys in (
                ("gold/category_sales", category_sales, CATEGORY_SALES_KEYS),
                ("gold/location_sales", location_sales, LOCATION_SALES_KEYS),
            ):
                n = writes.merge_upsert(
                    aggregate(in_windows, window),
                    self.env.table(table),
                    keys,
                    self.app_id(table.split("/")[1]),
                    batch_id,
                )
                replayed = replayed or n is None
                affected += n or 0
        self.pause_for_tests(batch_id)
        row.replayed = replayed
        row.output_rows = affected
        newest = [r["newest"] for r in touched if r["newest"] is not None]
        row.max_event_time = max(newest) if newest else None
        self.metrics_table_write(row)
