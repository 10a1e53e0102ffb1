"""Silver: strict validation into (valid, quarantined), typing, derived columns, dedup.

How each contract rule is decided is in ``docs/rules.md``; the short version:

* Bronze's ``event`` is NULL unless the payload is exactly one JSON object (strict parse, see
  :func:`ecomstream.transforms.bronze.parse_event`): that is ``malformed_json``.
* Text fields come from ``event`` as they are. Number tokens went through a double in
  ``from_json`` (``2.50`` -> ``2.5``), exact up to 15 significant digits; in a payload with
  a longer run of digits (or an ``Infinity``), price and quantity are re-read exactly with
  ``try_parse_json`` (VARIANT keeps 38 digits). That costs a second parse, for those rows only.
* ``reasons`` is only built for the quarantined side: the valid side needs one boolean.
* Every string column is valid UTF-8: ``raw_value`` comes repaired from bronze (``raw_bytes``
  beside it), and ``from_json`` only yields valid UTF-8 (a lone surrogate escape such as
  ``"\\ud800"`` arrives as ``?``), so there is nothing left to repair here.

No Python UDFs: everything is a Catalyst expression (and code-generated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.schemas import (
    ORDER_EVENT_SCHEMA,
    PRICE_TYPE,
    QUARANTINE_SCHEMA,
    REASON_CODES,
    SILVER_SCHEMA,
    TOTAL_TYPE,
)
from ecomstream.transforms.bronze import with_event

# Java regexes (rlike). "\z" is the very end: Java's "$" would also match before a final line
# terminator. tests/unit/contract_model.py states the same rules independently in Python.
# order_id "empty": nothing but ASCII whitespace (Java's \s, spelled out so Python agrees).
BLANK = r"^[ \t\n\r\f\x0B]*\z"
# A number, as a JSON token or inside a string: decimal notation, optional sign, fraction,
# exponent, and JSON whitespace around it. (Spark's own casts also take "1d" or "Infinity".)
NUMBER_TEXT = r"^[ \t\n\r]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r]*\z"
# ISO-8601 date-time, seconds required, fraction optional (truncated to microseconds), offset
# "Z", +HH:MM, +HHMM or +HH; without an offset the time is read as UTC.
TIMESTAMP_TEXT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\z"
)
# A quantity must be integral. decimal(38,27) holds every int with 27 fraction digits; a
# non-zero digit further out than that is caught on the text.
QUANTITY_PROBE_TYPE = T.DecimalType(38, 27)
FAR_FRACTION = r"\.[0-9]{27}[0-9]*[1-9]"

# A payload holding a number a double may round: a run of 16+ digits and dots. (A number with at
# most 15 significant digits survives a double exactly; the double's text alone cannot tell,
# since 1234567890.1249999999999999999 comes out as the short 1.234567890125E9.)
LONG_NUMBER = r"[0-9][0-9.]{15}"
_JSON_WS = " \t\n\r"
# try_parse_json refuses a payload holding a lone surrogate escape ("\ud800") anywhere, which
# from_json reads as "?". For the exact re-read, every surrogate escape moves to the private use
# area (\uD8xx -> \uE8xx): still valid JSON, distinct names stay distinct, and only text that
# no number holds changes.
_SURROGATE_ESCAPE = r"\\u[dD]([89a-fA-F][0-9a-fA-F]{2})"
_PRIVATE_USE_ESCAPE = r"\\uE$1"

# Reporting helper: (band, exclusive upper bound of the unit price), in order.
PRICE_BANDS: tuple[tuple[str, int | None], ...] = (
    ("under_25", 25),
    ("25_to_100", 100),
    ("100_to_500", 500),
    ("500_plus", None),
)

# The condition for each reason code but malformed_json (which replaces them all).
_CHECKS: tuple[str, ...] = REASON_CODES[1:]


def validate(
    bronze: DataFrame, categories: Iterable[str] = DEFAULT_CATEGORIES
) -> tuple[DataFrame, DataFrame]:
    """Bronze rows -> ``(valid, quarantined)``: every input row lands in exactly one of them.

    ``valid`` has the silver columns (typed, derived), not yet deduplicated: see
    :func:`first_per_order`. ``quarantined`` has the contract's quarantine columns with
    ``reasons`` in contract order (``malformed_json`` alone) and ``raw_bytes`` as bronze has it,
    plus ``order_id`` (as sent, when readable), ``kafka_timestamp`` and ``ingested_at``.
    """
    return split(classify(bronze, categories))


def classify(bronze: DataFrame, categories: Iterable[str] = DEFAULT_CATEGORIES) -> DataFrame:
    """Bronze plus what :func:`split` needs and nothing more: the typed fields (``_order_id``,
    ``_order_ts``, ``_price``, ``_quantity``, ``_total``) and ``_reason_bits``, an int with bit
    ``i`` set when ``REASON_CODES[i]`` applies (0 for a valid row).

    A caller that needs figures of both sides (the pipeline counts reasons per batch) caches this
    frame once. It is narrow on purpose: every column here is built for every row of a batch and
    held in the cache, while the reasons array is only built for the rows that have one (an int
    per row costs a tenth of an array per row, measured in docs/pipeline.md).
    """
    checked = with_checks(bronze, tuple(categories))
    bits = sum(
        (F.when(F.col(f"_{code}"), 1 << i).otherwise(0) for i, code in enumerate(REASON_CODES)),
        F.lit(0),
    )
    kept = [c for c in bronze.columns if c != "event"]
    kept = [*(kept if "raw_bytes" in kept else [*kept, "raw_bytes"]), "event"]
    return checked.select(*kept, *_TYPED, bits.alias(REASON_BITS_COLUMN))


def split(classified: DataFrame) -> tuple[DataFrame, DataFrame]:
    """A :func:`classify` frame -> ``(valid, quarantined)`` (see :func:`validate`)."""
    failed = F.col(REASON_BITS_COLUMN) != 0
    valid = classified.where(~failed).select(*_silver_columns())
    quarantined = classified.where(failed).select(
        "raw_value",
        "raw_bytes",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        reasons(F.col(REASON_BITS_COLUMN)).alias("reasons"),
        F.current_timestamp().alias("quarantined_at"),
        F.col("_order_id").alias("order_id"),
        "kafka_timestamp",
        "ingested_at",
    )
    return valid, quarantined.select(*QUARANTINE_SCHEMA.fieldNames())


REASON_BITS_COLUMN = "_reason_bits"
_TYPED = ("_order_id", "_order_ts", "_price", "_quantity", "_total")


def reason_codes(bits: int) -> list[str]:
    """The codes of a ``_reason_bits`` value, in contract order."""
    return [code for i, code in enumerate(REASON_CODES) if bits & (1 << i)]


def reasons(bits: Column) -> Column:
    """``_reason_bits`` -> the codes in contract order, built without a lambda so the
    projection stays code-generated."""
    parts = [
        F.when(bits.bitwiseAND(1 << i) != 0, F.array(F.lit(code)))
        for i, code in enumerate(REASON_CODES)
    ]
    empty = F.array().cast(T.ArrayType(T.StringType(), containsNull=False))
    return F.concat(*(F.coalesce(part, empty) for part in parts))


def first_per_order(valid: DataFrame) -> DataFrame:
    """Keep, per ``order_id``, the row with the lowest (kafka_partition, kafka_offset).

    Exact within one frame; across micro-batches the silver job inserts only ids not yet in
    silver, so the first one consumed wins globally. Planned for frames whose ids are nearly
    unique: only (order_id, partition, offset) is aggregated, and the ids that repeat, with
    their first coordinates, are broadcast back, so the wide rows are filtered where they are
    instead of being shuffled and sorted by id. (A frame of nothing but repeats broadcasts one
    small row per id; the batch bounds it.)
    """
    first = F.struct("kafka_partition", "kafka_offset")
    repeated = (
        valid.groupBy(F.col("order_id").alias("_repeated_id"))
        .agg(F.count(F.lit(1)).alias("_copies"), F.min(first).alias("_first"))
        .where(F.col("_copies") > 1)
        .select("_repeated_id", "_first")
    )
    return (
        valid.join(F.broadcast(repeated), F.col("order_id") == F.col("_repeated_id"), "left_outer")
        .where(F.col("_repeated_id").isNull() | (first == F.col("_first")))
        .select(*valid.columns)
    )


def with_checks(bronze: DataFrame, categories: tuple[str, ...]) -> DataFrame:
    """Bronze plus ``_``-prefixed typed fields and one boolean column per reason code."""
    bronze = _with_raw_bytes(bronze)
    if "event" not in bronze.columns:  # a bare (raw_value + coordinates) frame
        payload = F.coalesce(F.col("raw_bytes").cast("string"), F.col("raw_value"))
        bronze = with_event(bronze, payload)
    # one scan of the payload for long digit runs, shared by price and quantity
    return (
        bronze.select("*", F.col("raw_value").rlike(LONG_NUMBER).alias("_long_number"))
        .select(
            "*",
            F.col("event").isNotNull().alias("_object"),
            F.col("event.order_id").alias("_order_id"),
            F.col("event.order_timestamp").alias("_order_timestamp_text"),
            F.col("event.category").alias("_category"),
            F.col("event.price").isNotNull().alias("_price_present"),
            F.col("event.quantity").isNotNull().alias("_quantity_present"),
            _exact_number("price"),
            _exact_number("quantity"),
        )
        .select("*", *_number_columns("price"), *_number_columns("quantity"))
        .transform(_typed)
        .transform(_conditions(categories))
    )


def _with_raw_bytes(bronze: DataFrame) -> DataFrame:
    """A frame without ``raw_bytes`` (a bare frame, or bronze written before the column existed)
    may hold a ``raw_value`` that is not valid UTF-8: split it as ``to_bronze`` does."""
    if "raw_bytes" in bronze.columns:
        return bronze
    raw = F.col("raw_value")
    return bronze.withColumns(
        {
            "raw_value": F.make_valid_utf8(raw),
            "raw_bytes": F.when(~F.is_valid_utf8(raw), raw.cast("binary")),
        }
    )


def _exact_number(name: str) -> Column:
    """``_<name>_exact``: the field as VARIANT, re-read from the payload, for the rare rows whose
    ``event`` text a double may have rounded (payload has 16+ digits in a row, or the text is
    ``Infinity``); else NULL.

    Kept in a projection of its own, under the CASE, so that Spark evaluates ``try_parse_json``
    for those rows only instead of hoisting it as a common subexpression.
    """
    text = F.col(f"event.{name}")
    suspect = (text.isNotNull() & F.col("_long_number")) | text.contains("Infinity")
    payload = F.regexp_replace("raw_value", _SURROGATE_ESCAPE, _PRIVATE_USE_ESCAPE)
    exact = F.try_variant_get(F.try_parse_json(payload), f"$.{name}", "variant")
    return F.when(suspect, exact).alias(f"_{name}_exact")


def _number_columns(name: str) -> list[Column]:
    """``_<name>_text``: the field's exact numeric text, NULL when it is not a number token or a
    string holding one; ``_<name>_infinite``: -1/1 for a number token beyond a double's range.

    As text, a JSON string is its content and a number its digits, so ``"2.5"`` and ``2.5`` read
    alike while ``true`` or ``{}`` never match the number pattern.
    """
    exact = F.col(f"_{name}_exact")
    exact_text = F.try_variant_get(exact, "$", "string")
    chosen = F.when(exact.isNotNull(), exact_text).otherwise(F.col(f"event.{name}"))
    numeric = F.when(chosen.rlike(NUMBER_TEXT), F.btrim(chosen, F.lit(_JSON_WS)))
    infinite = F.when(
        exact.isNotNull(),
        F.when(
            exact_text.isin("Infinity", "-Infinity") & (F.schema_of_variant(exact) == "DOUBLE"),
            F.when(exact_text == "-Infinity", -1).otherwise(1),
        ),
    )
    return [numeric.alias(f"_{name}_text"), infinite.alias(f"_{name}_infinite")]


def _typed(df: DataFrame) -> DataFrame:
    price = F.col("_price_text").try_cast(PRICE_TYPE)
    probe = F.col("_quantity_text").try_cast(QUANTITY_PROBE_TYPE)
    integral = (probe == F.floor(probe)) & ~F.col("_quantity_text").rlike(FAR_FRACTION)
    return (
        df.withColumn("_price", price)
        .withColumn("_quantity", F.when(integral, probe.try_cast("int")))
        .withColumn("_order_ts", utc_timestamp(F.col("_order_timestamp_text")))
        .withColumn("_total", (F.col("_price") * F.col("_quantity")).try_cast(TOTAL_TYPE))
    )


def utc_timestamp(text: Column) -> Column:
    """ISO-8601 text -> timestamp, independent of the session time zone (no offset = UTC)."""
    # Once TIMESTAMP_TEXT matched, anything after "YYYY-MM-DDTHH:MM:SS" is a fraction and/or an
    # offset, and only an offset holds "Z", "+" or "-".
    tail = F.substring(text, 20, 64)
    has_offset = tail.contains("Z") | tail.contains("+") | tail.contains("-")
    with_offset = F.when(has_offset, text).otherwise(F.concat(text, F.lit("Z")))
    return F.when(text.rlike(TIMESTAMP_TEXT), with_offset.try_cast("timestamp"))


def _sign(name: str) -> Column:
    """Sign of a number too large for the column type ("-1e30"): a double keeps the sign."""
    return F.coalesce(F.signum(F.col(f"_{name}_text").try_cast("double")), f"_{name}_infinite")


def _conditions(categories: tuple[str, ...]) -> Callable[[DataFrame], DataFrame]:
    def transform(df: DataFrame) -> DataFrame:
        price, quantity = F.col("_price"), F.col("_quantity")
        price_present, quantity_present = F.col("_price_present"), F.col("_quantity_present")
        conditions: dict[str, Column] = {
            "missing_order_id": F.coalesce(F.col("_order_id").rlike(BLANK), F.lit(True)),
            "invalid_timestamp": F.col("_order_ts").isNull(),
            "null_price": ~price_present,
            "invalid_price": price_present & price.isNull(),
            "non_positive_price": F.coalesce(price <= 0, _sign("price") <= 0, F.lit(False)),
            "null_quantity": ~quantity_present,
            "invalid_quantity": quantity_present & quantity.isNull(),
            "non_positive_quantity": F.coalesce(
                quantity <= 0, _sign("quantity") <= 0, F.lit(False)
            ),
            "unknown_category": ~F.coalesce(F.col("_category").isin(*categories), F.lit(False)),
            "total_out_of_range": price.isNotNull()
            & quantity.isNotNull()
            & F.col("_total").isNull(),
        }
        assert tuple(conditions) == _CHECKS
        malformed = ~F.col("_object")
        return df.select(
            "*",
            malformed.alias("_malformed_json"),
            *((~malformed & condition).alias(f"_{code}") for code, condition in conditions.items()),
        )

    return transform


def _silver_columns() -> list[Column]:
    event = {name: F.col(f"event.{name}") for name in ORDER_EVENT_SCHEMA.fieldNames()}
    columns = {**event, **typed_silver_columns()}
    return [
        (columns[name] if name in columns else F.col(name)).alias(name)
        for name in SILVER_SCHEMA.fieldNames()
    ]


def typed_silver_columns() -> dict[str, Column]:
    """The silver columns that are not an event field's text or a bronze column, from a
    :func:`classify` frame: typed fields and derived columns."""
    seconds = F.unix_seconds("_order_ts")
    return {
        "order_id": F.col("_order_id"),
        "order_timestamp": F.col("_order_ts"),
        "price": F.col("_price"),
        "quantity": F.col("_quantity"),
        "total_amount": F.col("_total"),
        # From epoch seconds, not to_date(): independent of spark.sql.session.timeZone.
        "order_date": F.date_from_unix_date(F.floor(seconds / 86400).cast("int")),
        "order_hour": F.floor(F.pmod(seconds, F.lit(86400)) / 3600).cast("int"),
        "price_band": price_band(F.col("_price")),
    }


def price_band(price: Column) -> Column:
    """A reporting bucket of the unit price (``PRICE_BANDS``)."""
    band: Column | None = None
    for name, upper in PRICE_BANDS:
        condition = price < upper if upper is not None else price.isNotNull()
        band = F.when(condition, name) if band is None else band.when(condition, name)
    assert band is not None
    return band
