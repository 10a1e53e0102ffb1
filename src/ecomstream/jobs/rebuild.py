"""Bronze read back through the stream's own batch, into staging tables (``ecomstream
reprocess``, :mod:`ecomstream.jobs.reprocess`).

The records bronze holds become Kafka records again (the payload byte for byte, key,
coordinates, time, and when each was first ingested) and go through :class:`MedallionBatch`,
the stream's batch: the same parse, checks, first-wins dedup and gold sums, no second
implementation. In Kafka (partition, offset) order, a chunk of offset ranges at a time, so that
the first record of an order id is the contract's (the lowest (partition, offset)); each chunk
is a marked batch of the staging tables, so a rerun skips what a dead run committed.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment, TableRef
from ecomstream.jobs import staging
from ecomstream.jobs.settings import PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

BRONZE = "bronze/orders"
# the tables a reprocess rebuilds, in the order they switch (metrics last, then the binding)
REBUILT: tuple[str, ...] = (
    "silver/quarantine",
    "silver/orders",
    "gold/category_sales",
    "gold/location_sales",
)


def bronze_at(table: TableRef, spark: SparkSession, version: int) -> DataFrame:
    reader = spark.read.format("delta").option("versionAsOf", version)
    return reader.load(table.path) if table.path is not None else reader.table(str(table.name))


# bronze's columns a reprocess reads, as its Parquet files hold them
_READ = (
    ("raw_value", "string"),
    ("raw_bytes", "binary"),
    ("kafka_topic", "string"),
    ("kafka_partition", "int"),
    ("kafka_offset", "bigint"),
    ("kafka_timestamp", "timestamp"),
    ("ingested_at", "timestamp"),
)


class BronzeReader:
    """Bronze at one version, a chunk of offset ranges at a time, as a Spark frame.

    A local bronze table (ours: no deletion vectors, no column mapping) is read as the Parquet
    files its version holds, chosen per chunk by their statistics from delta-rs: Spark then
    plans a Parquet scan, without rebuilding the Delta snapshot's state in a job first (10-15 s
    of a reprocess's first chunk, docs/benchmarks.md) nor one per chunk for data skipping.
    Elsewhere Spark reads the Delta table at the version."""

    def __init__(self, table: TableRef, spark: SparkSession, version: int) -> None:
        self.table = table
        self.spark = spark
        self.version = version
        self._files: list[tuple[str, Any, Any, Any, Any]] | None = None

    def chunk(self, ranges: list[list[int]]) -> DataFrame:
        from pyspark.sql import functions as F

        within = [
            (F.col("kafka_partition") == partition)
            & (F.col("kafka_offset") >= start)
            & (F.col("kafka_offset") < end)
            for partition, start, end in ranges
        ]
        condition = functools.reduce(operator.or_, within)
        local = self.table.local_path()
        if local is None:
            return bronze_at(self.table, self.spark, self.version).where(condition)
        schema = ", ".join(f"{name} {kind}" for name, kind in _READ)
        chosen = [f for f, *span in self._local_files(local) if _overlaps(span, ranges)]
        if not chosen:
            return self.spark.createDataFrame([], schema)
        return self.spark.read.schema(schema).parquet(*chosen).where(condition)

    def _local_files(self, local: str) -> list[tuple[str, Any, Any, Any, Any]]:
        if self._files is None:
            import os
            from urllib.parse import unquote

            import pyarrow as pa
            from deltalake import DeltaTable

            adds = pa.table(DeltaTable(local, version=self.version).get_add_actions(flatten=True))
            columns = ["path"] + [
                f"{bound}.{name}" for name in ("kafka_partition", "kafka_offset")
                for bound in ("min", "max")
            ]  # fmt: skip
            rows = adds.select([c for c in columns if c in adds.column_names]).to_pylist()
            self._files = [
                (
                    os.path.join(local, unquote(r["path"])),
                    r.get("min.kafka_partition"),
                    r.get("max.kafka_partition"),
                    r.get("min.kafka_offset"),
                    r.get("max.kafka_offset"),
                )
                for r in rows
            ]
        return self._files


def _overlaps(span: list[Any], ranges: list[list[int]]) -> bool:
    """Whether a file whose statistics are ``span`` may hold a record of ``ranges`` (a file
    without statistics may hold anything)."""
    low_p, high_p, low_o, high_o = span
    if None in span:
        return True
    return any(
        low_p <= partition <= high_p and low_o < end and start <= high_o
        for partition, start, end in ranges
    )


def bronze_version(table: TableRef, spark: SparkSession) -> int:
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        return int(DeltaTable(local).version())
    rows = table.delta_table(spark).history(1).select("version").collect()
    return int(rows[0]["version"])


def plan_chunks(
    table: TableRef, spark: SparkSession, version: int, chunk_rows: int
) -> tuple[list[list[list[int]]], int]:
    """Chunks covering bronze at ``version``, in (partition, offset) order: each a list of
    Kafka offset ranges ``[partition, first, end)`` spanning ``chunk_rows`` offsets at most
    (the tail of one partition and the head of the next share a chunk: as few Spark jobs as
    the stream's batches); and bronze's row count."""
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        rows = DeltaTable(local, version=version).to_pyarrow_table(
            columns=["kafka_partition", "kafka_offset"]
        )
        spans = rows.group_by("kafka_partition").aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max")]
        )
        found = [
            (int(r["kafka_partition"]), int(r["kafka_offset_min"]), int(r["kafka_offset_max"]))
            for r in spans.to_pylist()
        ]
        total = rows.num_rows
    else:
        from pyspark.sql import functions as F

        df = bronze_at(table, spark, version)
        agg = df.groupBy("kafka_partition").agg(
            F.min("kafka_offset").alias("lo"), F.max("kafka_offset").alias("hi"), F.count("*")
        )
        collected = agg.collect()
        found = [(int(r[0]), int(r[1]), int(r[2])) for r in collected]
        total = sum(int(r[3]) for r in collected)
    return pack(sorted(found), chunk_rows), total


def pack(spans: list[tuple[int, int, int]], chunk_rows: int) -> list[list[list[int]]]:
    """``(partition, first, last)`` offset spans, in order, cut into chunks of ranges."""
    chunks: list[list[list[int]]] = []
    current: list[list[int]] = []
    room = chunk_rows
    for partition, first, last in spans:
        start = first
        while start <= last:
            end = min(start + room, last + 1)
            current.append([partition, start, end])
            room -= end - start
            start = end
            if room == 0:
                chunks.append(current)
                current, room = [], chunk_rows
    if current:
        chunks.append(current)
    return chunks


def kafka_records(bronze: DataFrame) -> DataFrame:
    """Bronze rows as the Kafka source gives records: the payload byte for byte (``raw_bytes``
    when it was not UTF-8, else ``raw_value``'s bytes), coordinates, time; plus when the
    record was first ingested, which bronze keeps."""
    from pyspark.sql import functions as F

    return bronze.select(
        # the key reaches no table but bronze, which a reprocess does not write: not read
        F.lit(None).cast("binary").alias("key"),
        F.coalesce(F.col("raw_bytes"), F.col("raw_value").cast("binary")).alias("value"),
        F.col("kafka_topic").alias("topic"),
        F.col("kafka_partition").alias("partition"),
        F.col("kafka_offset").alias("offset"),
        F.col("kafka_timestamp").alias("timestamp"),
        F.lit(0).alias("timestampType"),
        F.col("ingested_at"),
    )


def stage(
    env: Environment,
    settings: PipelineSettings,
    root: str,
    state: dict[str, Any],
    save: Any = None,
) -> staging.StagingEnvironment:
    """Build the rebuilt tables under ``root``: each chunk of bronze through the stream's batch,
    in order; chunks ``state["done"]`` lists are skipped (a rerun), each new one is added."""

    from ecomstream.jobs.batch import MedallionBatch
    from ecomstream.jobs.pipeline import (
        PARTITION_COLUMNS,
        TABLE_PROPERTIES,
        declared_schemas,
        lenient,
    )

    spark = env.spark()
    staged = staging.StagingEnvironment(env, root)
    schemas = declared_schemas()
    for key in REBUILT:
        staged.table(key).create_if_missing(
            spark, lenient(schemas[key]), TABLE_PROPERTIES.get(key), PARTITION_COLUMNS.get(key, ())
        )
    batch = MedallionBatch(staged, settings, f"reprocess-{state['id']}", REBUILT)
    bronze = BronzeReader(env.table(BRONZE), spark, int(state["bronze_version"]))
    done: dict[str, Any] = state.setdefault("done", {})
    try:
        for i, ranges in enumerate(state["chunks"]):
            if str(i) in done:
                continue
            figures = batch.process(kafka_records(bronze.chunk(ranges)), i)
            newest = figures.newest_event
            done[str(i)] = {
                "rows": figures.rows,
                "quarantined": figures.quarantined,
                "inserted": figures.inserted,
                "reasons": figures.reasons,
                "newest_event": newest.isoformat() if newest is not None else None,
            }
            if save is not None:
                save()
    finally:
        batch.close()
    return staged
