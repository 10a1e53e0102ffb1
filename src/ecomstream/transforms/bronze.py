"""Bronze: every Kafka record as received, plus its coordinates and a lenient parse."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ecomstream.schemas import BRONZE_SCHEMA, ORDER_EVENT_SCHEMA


def to_bronze(kafka_rows: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze rows, one for one (nothing dropped, nothing added).

    ``raw_value`` is the value's bytes as a string, untouched; ``event`` is a best-effort parse
    by :data:`ORDER_EVENT_SCHEMA` for people browsing bronze. Silver does not trust ``event``
    (Spark's ``from_json`` accepts trailing garbage and rewrites number tokens): it re-parses
    ``raw_value`` strictly.
    """
    raw_value = F.col("value").cast("string")
    return kafka_rows.select(
        raw_value.alias("raw_value"),
        F.col("key").cast("string").alias("kafka_key"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingested_at"),
        _lenient_event(raw_value).alias("event"),
    ).select(*BRONZE_SCHEMA.fieldNames())


def _lenient_event(raw_value: Column) -> Column:
    return F.from_json(raw_value, ORDER_EVENT_SCHEMA, {"mode": "PERMISSIVE"})
