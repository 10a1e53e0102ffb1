"""Silver: strict parsing, validation into (valid, quarantined), typing, derived columns, dedup.

Why the payload is parsed again with ``try_parse_json`` (VARIANT) rather than trusting bronze's
``from_json``: ``from_json`` accepts ``{"a":1} garbage``, single quotes and ``NaN``, and turns
number tokens into text through a double (``1e400`` -> ``"Infinity"``). ``try_parse_json`` is
a strict RFC 8259 parser that keeps exact decimals (up to 38 digits) and each value's JSON type,
which is what the rules in ``docs/rules.md`` need. No Python UDFs: all of it is Catalyst
expressions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.schemas import (
    EVENT_FIELDS,
    PRICE_TYPE,
    QUARANTINE_SCHEMA,
    REASON_CODES,
    SILVER_SCHEMA,
    TOTAL_TYPE,
)

# The same patterns drive the plain-Python model in tests/unit/contract_model.py.
# JSON whitespace only (RFC 8259): a payload that is an object starts with "{" after it.
OBJECT_START = r"^[ \t\n\r]*\{"
# order_id "empty": nothing but ASCII whitespace (Java's \s, spelled out so Python agrees).
BLANK = r"^[ \t\n\r\f\x0B]*$"
# A string holding a number: decimal notation, optional sign, fraction, exponent, and spaces
# around it (Spark's own cast also accepts "1d", "0x10" or "Infinity" in places: we do not).
NUMBER_TEXT = r"^[ \t\n\r]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r]*$"
# ISO-8601 date-time, seconds required, fraction optional (truncated to microseconds), offset
# "Z", +HH:MM, +HHMM or +HH; without an offset the time is read as UTC.
TIMESTAMP_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
TIMESTAMP_OFFSET = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
# A quantity must be integral; decimal(38,27) holds every int exactly with 27 fraction digits.
# A non-zero digit further out than that is caught on the text.
QUANTITY_PROBE_TYPE = T.DecimalType(38, 27)
FAR_FRACTION = r"\.[0-9]{27}[0-9]*[1-9]"

# Written as JSON escapes: a payload could only forge it by containing exactly this string.
_SENTINEL = '"\\u0000ecomstream:end-of-payload\\u0000"'
_SENTINEL_VALUE = "\u0000ecomstream:end-of-payload\u0000"

NUMBER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE")

# Reporting helper: upper bounds (exclusive) of the price bands, in order.
PRICE_BANDS: tuple[tuple[str, int | None], ...] = (
    ("under_25", 25),
    ("25_to_100", 100),
    ("100_to_500", 500),
    ("500_plus", None),
)


def validate(
    bronze: DataFrame, categories: Iterable[str] = DEFAULT_CATEGORIES
) -> tuple[DataFrame, DataFrame]:
    """Bronze rows -> ``(valid, quarantined)``: every input row lands in exactly one of them.

    ``valid`` has the silver columns (typed, derived), not yet deduplicated: see
    :func:`first_per_order`. ``quarantined`` has the contract's quarantine columns with
    ``reasons`` in contract order (``malformed_json`` alone).
    """
    checked = bronze.transform(with_checks(tuple(categories)))
    valid = checked.where(F.size("reasons") == 0).select(*SILVER_SCHEMA.fieldNames())
    quarantined = checked.where(F.size("reasons") > 0).select(
        "raw_value",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "reasons",
        F.current_timestamp().alias("quarantined_at"),
        "order_id",
        "kafka_timestamp",
        "ingested_at",
    )
    return valid, quarantined.select(*QUARANTINE_SCHEMA.fieldNames())


def first_per_order(valid: DataFrame) -> DataFrame:
    """Keep, per ``order_id``, the row with the lowest (kafka_partition, kafka_offset).

    Exact within one frame; across micro-batches the silver job MERGEs by ``order_id`` and
    inserts only ids not yet in silver, so the first one consumed wins globally.
    """
    first = Window.partitionBy("order_id").orderBy("kafka_partition", "kafka_offset")
    return (
        valid.withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") == 1)
        .select(*valid.columns)
    )


def with_checks(categories: tuple[str, ...]) -> Callable[[DataFrame], DataFrame]:
    """A frame transform adding every typed field, the derived columns and ``reasons``."""

    def transform(bronze: DataFrame) -> DataFrame:
        parsed = bronze.withColumn("_doc", strict_object("raw_value"))
        fields = {name: _text(name) for name in EVENT_FIELDS}
        price = _number("price")
        quantity = _number("quantity")
        typed = parsed.select(
            "*",
            *(column.alias(f"_{name}") for name, column in fields.items()),
            *(column.alias(f"_price_{key}") for key, column in price.items()),
            *(column.alias(f"_quantity_{key}") for key, column in quantity.items()),
        )
        return typed.transform(_typed_columns).transform(_with_reasons(categories))

    return transform


def strict_object(raw_value: str | Column) -> Column:
    """The payload as VARIANT when it is exactly one JSON object, else NULL.

    ``try_parse_json`` (like all of Spark's JSON readers) stops after the first value and
    ignores what follows (``{"a":1} garbage``). So the payload is parsed wrapped as
    ``[<payload>, SENTINEL]``: trailing garbage makes that invalid JSON, and anything that
    closes the array early or adds elements leaves the sentinel out of second place.
    """
    raw = F.col(raw_value) if isinstance(raw_value, str) else raw_value
    wrapped = F.try_parse_json(F.concat(F.lit("["), raw, F.lit(f",{_SENTINEL}]")))
    whole = (F.try_variant_get(wrapped, "$[1]", "string") == _SENTINEL_VALUE) & F.try_variant_get(
        wrapped, "$[2]", "variant"
    ).isNull()
    is_object = F.is_valid_utf8(raw) & raw.rlike(OBJECT_START)
    return F.when(is_object & whole, F.try_variant_get(wrapped, "$[0]", "variant"))


def _field(name: str) -> Column:
    """The field as VARIANT: SQL NULL when absent (or no object), variant null when JSON null."""
    return F.try_variant_get("_doc", f"$.{name}", "variant")


def _text(name: str) -> Column:
    """The field as text: strings as they are, numbers and booleans as their JSON text."""
    return F.try_variant_get("_doc", f"$.{name}", "string")


def _number(name: str) -> dict[str, Column]:
    """Presence, numeric text (None when not a number or numeric string) and sign of a field."""
    value = _field(name)
    kind = F.schema_of_variant(value)
    text = F.try_variant_get("_doc", f"$.{name}", "string")
    is_number = kind.isin(*NUMBER_TYPES) | kind.startswith("DECIMAL")
    is_numeric_string = (kind == "STRING") & text.rlike(NUMBER_TEXT)
    numeric_text = F.when(is_number | is_numeric_string, text)
    return {
        "present": value.isNotNull() & ~F.is_variant_null(value),
        "numeric": numeric_text,
        # Sign of values too large for any column type ("-1e30"): a double keeps the sign.
        "sign": F.signum(_strip(numeric_text).try_cast("double")),
    }


def _typed_columns(df: DataFrame) -> DataFrame:
    price = _strip(F.col("_price_numeric")).try_cast(PRICE_TYPE)
    probe = _strip(F.col("_quantity_numeric")).try_cast(QUANTITY_PROBE_TYPE)
    integral = (probe == F.floor(probe)) & ~F.col("_quantity_numeric").rlike(FAR_FRACTION)
    quantity = F.when(integral, probe.try_cast("int"))
    return (
        df.withColumn("_price", price)
        .withColumn("_quantity_value", quantity)
        .withColumn("_order_ts", _utc_timestamp(F.col("_order_timestamp")))
        .withColumn("_total", (F.col("_price") * F.col("_quantity_value")).try_cast(TOTAL_TYPE))
    )


def _strip(text: Column) -> Column:
    return F.btrim(text, F.lit(" \t\n\r"))


def _utc_timestamp(text: Column) -> Column:
    """ISO-8601 text -> timestamp, independent of the session time zone."""
    well_formed = text.rlike(TIMESTAMP_TEXT + r"(" + TIMESTAMP_OFFSET[:-1] + r")?$")
    has_offset = text.rlike(TIMESTAMP_OFFSET)
    with_offset = F.when(has_offset, text).otherwise(F.concat(text, F.lit("Z")))
    return F.when(well_formed, with_offset.try_cast("timestamp"))


def _with_reasons(categories: tuple[str, ...]) -> Callable[[DataFrame], DataFrame]:
    def transform(df: DataFrame) -> DataFrame:
        malformed = F.col("_doc").isNull()
        price_present = F.col("_price_present")
        quantity_present = F.col("_quantity_present")
        checks: dict[str, Column] = {
            "missing_order_id": F.coalesce(F.col("_order_id").rlike(BLANK), F.lit(True)),
            "invalid_timestamp": F.col("_order_ts").isNull(),
            "null_price": ~price_present,
            "invalid_price": price_present & F.col("_price").isNull(),
            "non_positive_price": F.coalesce(
                F.col("_price") <= 0, F.col("_price_sign") <= 0, F.lit(False)
            ),
            "null_quantity": ~quantity_present,
            "invalid_quantity": quantity_present & F.col("_quantity_value").isNull(),
            "non_positive_quantity": F.coalesce(
                F.col("_quantity_value") <= 0, F.col("_quantity_sign") <= 0, F.lit(False)
            ),
            "unknown_category": ~F.coalesce(F.col("_category").isin(*categories), F.lit(False)),
            "total_out_of_range": F.col("_price").isNotNull()
            & F.col("_quantity_value").isNotNull()
            & F.col("_total").isNull(),
        }
        assert tuple(checks) == REASON_CODES[1:]
        codes = [F.when(condition, F.lit(code)) for code, condition in checks.items()]
        reasons = F.when(malformed, F.array(F.lit("malformed_json"))).otherwise(
            F.filter(F.array(*codes), lambda code: code.isNotNull())
        )
        return df.withColumn("reasons", reasons).transform(_silver_columns)

    return transform


def _silver_columns(df: DataFrame) -> DataFrame:
    seconds = F.unix_seconds("_order_ts")
    return df.select(
        "*",
        F.col("_order_id").alias("order_id"),
        F.col("_order_ts").alias("order_timestamp"),
        *(F.col(f"_{name}").alias(name) for name in _PLAIN_FIELDS),
        F.col("_price").alias("price"),
        F.col("_quantity_value").alias("quantity"),
        F.col("_total").alias("total_amount"),
        # From epoch seconds, not to_date(): independent of spark.sql.session.timeZone.
        F.date_from_unix_date(F.floor(seconds / 86400).cast("int")).alias("order_date"),
        F.floor(F.pmod(seconds, F.lit(86400)) / 3600).cast("int").alias("order_hour"),
        price_band(F.col("_price")).alias("price_band"),
    ).drop(*[c for c in df.columns if c.startswith("_")])


_PLAIN_FIELDS = tuple(
    name
    for name in EVENT_FIELDS
    if name not in {"order_id", "order_timestamp", "price", "quantity"}
)


def price_band(price: Column) -> Column:
    """A reporting bucket of the unit price (``PRICE_BANDS``)."""
    band: Column | None = None
    for name, upper in PRICE_BANDS:
        condition = price < upper if upper is not None else price.isNotNull()
        band = F.when(condition, name) if band is None else band.when(condition, name)
    assert band is not None
    return band
