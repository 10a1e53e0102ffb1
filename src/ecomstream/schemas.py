"""Schemas as module constants: the event as parsed in bronze and every layer's output contract.

The event schema reads every field as a string on purpose: a price sent as ``"12.50"``, a
quantity sent as ``2.5`` or ``true`` stays visible in bronze instead of turning into a null, and
silver decides what it means (``docs/rules.md``).
"""

from __future__ import annotations

from pyspark.sql import types as T

from ecomstream.contract import CONTRACT_REASON_CODES, EVENT_FIELDS

ORDER_EVENT_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in EVENT_FIELDS])

# Contract §3, in contract order (``total_out_of_range`` last: price and quantity both valid but
# price x quantity does not fit decimal(14,2) total_amount).
REASON_CODES: tuple[str, ...] = CONTRACT_REASON_CODES

PRICE_TYPE = T.DecimalType(12, 2)
TOTAL_TYPE = T.DecimalType(14, 2)
MONEY_TYPE = T.DecimalType(18, 2)

KAFKA_SOURCE_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField("timestampType", T.IntegerType()),
    ]
)

# Every string column holds valid UTF-8 (contract §2), so that pyarrow, DuckDB, polars and
# delta-rs load every row: raw_value with U+FFFD for each invalid sequence, and raw_bytes the
# payload byte for byte when it was not valid UTF-8 (NULL when it was).
BRONZE_SCHEMA = T.StructType(
    [
        T.StructField("raw_value", T.StringType()),
        T.StructField("raw_bytes", T.BinaryType()),
        T.StructField("kafka_key", T.StringType()),
        T.StructField("kafka_topic", T.StringType()),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("ingested_at", T.TimestampType()),
        T.StructField("event", ORDER_EVENT_SCHEMA),
    ]
)

SILVER_SCHEMA = T.StructType(
    [
        T.StructField("order_id", T.StringType()),
        T.StructField("order_timestamp", T.TimestampType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("product_id", T.StringType()),
        T.StructField("product_name", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("price", PRICE_TYPE),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("currency", T.StringType()),
        T.StructField("payment_method", T.StringType()),
        T.StructField("city", T.StringType()),
        T.StructField("state", T.StringType()),
        T.StructField("country", T.StringType()),
        T.StructField("total_amount", TOTAL_TYPE),
        T.StructField("order_date", T.DateType()),
        T.StructField("order_hour", T.IntegerType()),
        T.StructField("price_band", T.StringType()),
        T.StructField("kafka_topic", T.StringType()),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("ingested_at", T.TimestampType()),
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("raw_value", T.StringType()),
        T.StructField("raw_bytes", T.BinaryType()),
        T.StructField("kafka_topic", T.StringType()),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
        T.StructField("reasons", T.ArrayType(T.StringType(), containsNull=False)),
        T.StructField("quarantined_at", T.TimestampType()),
        T.StructField("order_id", T.StringType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("ingested_at", T.TimestampType()),
    ]
)

CATEGORY_SALES_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType()),
        T.StructField("window_end", T.TimestampType()),
        T.StructField("category", T.StringType()),
        T.StructField("order_count", T.LongType()),
        T.StructField("units_sold", T.LongType()),
        T.StructField("revenue", MONEY_TYPE),
        T.StructField("avg_order_value", MONEY_TYPE),
        T.StructField("window_hour", T.LongType()),
    ]
)

LOCATION_SALES_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType()),
        T.StructField("window_end", T.TimestampType()),
        T.StructField("country", T.StringType()),
        T.StructField("city", T.StringType()),
        T.StructField("order_count", T.LongType()),
        T.StructField("units_sold", T.LongType()),
        T.StructField("revenue", MONEY_TYPE),
        T.StructField("window_hour", T.LongType()),
    ]
)

# Gold tables are partitioned by window_hour (hours since the epoch of window_start): a batch
# rewrites the few hours its orders touched, whatever the size of the table.
GOLD_PARTITION = "window_hour"

# Grain of each gold table: the MERGE keys (null-safe: a valid order may lack country or city).
CATEGORY_SALES_KEYS: tuple[str, ...] = ("window_start", "window_end", "category")
LOCATION_SALES_KEYS: tuple[str, ...] = ("window_start", "window_end", "country", "city")
