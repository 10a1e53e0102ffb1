"""Bronze: every Kafka record as received, its coordinates, and a strict parse of the payload."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecomstream.schemas import BRONZE_SCHEMA, EVENT_FIELDS, ORDER_EVENT_SCHEMA

# JSON whitespace only (RFC 8259): a payload that is an object starts with "{" after it.
OBJECT_START = r"^[ \t\n\r]*\{"
_END_FIELD = "__ecomstream_end"
_END_VALUE = "end-of-payload"
_WRAPPED_SCHEMA = T.ArrayType(
    T.StructType([*ORDER_EVENT_SCHEMA.fields, T.StructField(_END_FIELD, T.StringType())])
)
# Jackson's StreamReadConstraints as Spark 4 sets them: 1000 levels of nesting and 1000
# characters per number by default. Past either, from_json fails the whole payload, so a valid
# JSON object nested 1001 deep in an ignored field, or holding a 1001-digit price, would read
# as malformed_json, which the contract reserves for a payload that is not a JSON object.
# Both limits guard against recursion and slow number conversion, which this parse does not do:
# nested values are skipped, or copied as text, iteratively, and numbers stay text (a
# 1,000,000-deep array parses in under a second; docs/operations.md). The payload's size is
# bounded by the broker's message.max.bytes. A nested value copied as text (price: [[...]])
# also meets Jackson's write limit: see ecomstream.spark.lift_json_write_depth. Field names stay
# limited to 50,000 characters (Jackson's maxNameLength, which Spark does not expose): such a
# payload reads as malformed_json.
_UNLIMITED = str(2**31 - 1)
# Strict JSON: Spark's defaults also accept 'single quotes' and NaN / Infinity tokens.
_STRICT_JSON = {
    "mode": "PERMISSIVE",
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
    "maxNestingDepth": _UNLIMITED,
    "maxNumLen": _UNLIMITED,
}


def to_bronze(kafka_rows: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze rows, one for one (nothing dropped, nothing added).

    ``raw_value`` is the payload as text, valid UTF-8 whatever arrived: each invalid sequence
    becomes U+FFFD (``make_valid_utf8``: the same U+FFFDs as Python's
    ``decode("utf-8", errors="replace")``, docs/rules.md). A cast alone would keep the invalid
    bytes, and a Delta table holding them is unreadable for pyarrow and delta-rs. ``raw_bytes``
    keeps such a payload byte for byte; it is NULL when the payload is valid UTF-8 (or NULL).
    ``kafka_key`` is repaired the same way. ``ingested_at`` is now, unless ``kafka_rows`` carries
    one (records replayed from bronze by ``ecomstream reprocess`` keep their first ingestion).
    ``event`` is the payload parsed by :data:`ORDER_EVENT_SCHEMA` (every field as text) when the
    payload is exactly one JSON object in valid UTF-8, and NULL otherwise: see
    :func:`parse_event`.
    """
    payload = F.col("value").cast("string")  # the bytes as received, maybe not UTF-8
    # records replayed from bronze (``ecomstream reprocess``) keep when they were first ingested
    replayed = "ingested_at" in kafka_rows.columns
    ingested_at = F.col("ingested_at") if replayed else F.current_timestamp()
    received = kafka_rows.select(
        F.make_valid_utf8(payload).alias("raw_value"),
        F.when(~F.is_valid_utf8(payload), F.col("value")).alias("raw_bytes"),
        F.make_valid_utf8(F.col("key").cast("string")).alias("kafka_key"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        ingested_at.alias("ingested_at"),
        payload.alias(_PAYLOAD),
    )
    return with_event(received, F.col(_PAYLOAD)).select(*BRONZE_SCHEMA.fieldNames())


_PAYLOAD = "__ecomstream_payload"
_WRAPPED = "__ecomstream_wrapped"


def with_event(rows: DataFrame, raw_value: Column) -> DataFrame:
    """``rows`` plus ``event``, :func:`parse_event` of ``raw_value``, parsed once per row.

    Spark does not code-generate ``from_json``, and in an interpreted projection an expression
    that appears several times (the checks and each field read the parsed array) is evaluated
    several times: parsing in a projection of its own and reading the result in the next costs
    a sixth less than :func:`parse_event` inline (measured: docs/pipeline.md).
    """
    parsed = rows.select("*", _wrapped(raw_value).alias(_WRAPPED))
    event = _event(F.col(_WRAPPED), raw_value)
    columns = [c for c in rows.columns if c != "event"]
    return parsed.select(*columns, event.alias("event"))


def parse_event(raw_value: Column) -> Column:
    """The payload as an ``ORDER_EVENT_SCHEMA`` struct if it is exactly one JSON object, else NULL.

    ``raw_value`` is the payload as received, not repaired: a payload that is not valid UTF-8
    is malformed, and after ``make_valid_utf8`` it would look valid.

    Spark's JSON readers stop after the first value and ignore the rest, so ``{"a":1} garbage``
    would parse. Hence the payload is parsed wrapped as ``[<payload>, {END}]``: trailing garbage
    makes the wrapper invalid JSON (NULL), and a payload that closes the array early or adds
    elements leaves END out of second place. One parse, no VARIANT. Field values that are not
    JSON strings arrive as their JSON text (``true``, ``{"a":1}``, numbers through a double:
    silver re-reads long numbers exactly).
    """
    return _event(_wrapped(raw_value), raw_value)


def _wrapped(raw_value: Column) -> Column:
    return F.from_json(
        F.concat(F.lit("["), raw_value, F.lit(f',{{"{_END_FIELD}":"{_END_VALUE}"}}]')),
        _WRAPPED_SCHEMA,
        _STRICT_JSON,
    )


def _event(wrapped: Column, raw_value: Column) -> Column:
    one_object = (
        (F.size(wrapped) == 2)
        & (wrapped[1][_END_FIELD] == F.lit(_END_VALUE))
        & wrapped[0].isNotNull()
        & raw_value.rlike(OBJECT_START)
        & F.is_valid_utf8(raw_value)
    )
    event = F.struct(*(wrapped[0][name].alias(name) for name in EVENT_FIELDS))
    return F.when(F.coalesce(one_object, F.lit(False)), event)
