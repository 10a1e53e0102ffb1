"""Gold: sales per tumbling window of ``order_timestamp``, exact decimals throughout."""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ecomstream.errors import EcomstreamError
from ecomstream.schemas import CATEGORY_SALES_SCHEMA, LOCATION_SALES_SCHEMA, MONEY_TYPE

DEFAULT_WINDOW = "1 minute"

_UNIT_SECONDS = {
    "millisecond": 0.001,
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
}
_PART = re.compile(r"(\d+)\s*(millisecond|second|minute|hour|day|week)s?", re.IGNORECASE)


def parse_window(text: str) -> str:
    """Validate a window duration ("1 minute", "30 seconds", "1 hour 30 minutes") -> normal form.

    Only fixed-length units: months and years have no fixed length, so an epoch-aligned tumbling
    window of one is not defined. Raises :class:`EcomstreamError` with one clear line.
    """
    cleaned = " ".join(str(text).split()).lower()
    parts = _PART.findall(cleaned)
    rebuilt = " ".join(f"{n} {unit}" for n, unit in parts)
    normalised = " ".join(_PART.sub(lambda m: f"{m.group(1)} {m.group(2)}", cleaned).split())
    total = sum(int(n) * _UNIT_SECONDS[unit.lower()] for n, unit in parts)
    if not parts or normalised != rebuilt.lower() or total <= 0:
        raise EcomstreamError(
            f"invalid --window {text!r}: expected a positive duration such as '1 minute', "
            "'30 seconds' or '1 hour' (units: milliseconds, seconds, minutes, hours, days, weeks)"
        )
    return " ".join(f"{n} {unit.lower()}{'s' if int(n) != 1 else ''}" for n, unit in parts)


def window_seconds(window: str) -> float:
    """The length of a window duration accepted by :func:`parse_window`, in seconds."""
    parts = _PART.findall(parse_window(window))
    return sum(int(n) * _UNIT_SECONDS[unit.lower()] for n, unit in parts)


def category_sales(silver: DataFrame, window: str = DEFAULT_WINDOW) -> DataFrame:
    """Silver orders -> one row per (window, category): counts, units, revenue, average order."""
    return _sales(silver, window, ["category"]).select(*CATEGORY_SALES_SCHEMA.fieldNames())


def location_sales(silver: DataFrame, window: str = DEFAULT_WINDOW) -> DataFrame:
    """Silver orders -> one row per (window, country, city): counts, units and revenue."""
    return _sales(silver, window, ["country", "city"]).select(*LOCATION_SALES_SCHEMA.fieldNames())


def _sales(silver: DataFrame, window: str, keys: list[str]) -> DataFrame:
    bucket = F.window("order_timestamp", parse_window(window))
    return (
        silver.groupBy(bucket.alias("w"), *keys)
        .agg(
            F.count(F.lit(1)).alias("order_count"),
            F.sum(F.col("quantity").cast("long")).alias("units_sold"),
            F.sum("total_amount").cast(MONEY_TYPE).alias("revenue"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            *keys,
            "order_count",
            "units_sold",
            "revenue",
            average_half_up(F.col("revenue"), F.col("order_count")).alias("avg_order_value"),
            window_hour(F.col("w.start")).alias("window_hour"),
        )
    )


def window_hour(start: Column) -> Column:
    """Hours since the epoch of a window start: gold's partition, independent of time zones."""
    return F.floor(F.unix_seconds(start) / 3600).cast("long")


def average_half_up(amount: Column, count: Column) -> Column:
    """``amount / count`` rounded half-up to cents, exactly, for a non-negative decimal amount.

    Integer arithmetic on cents, floor((2 * cents + count) / (2 * count)), so no intermediate
    rounding of a decimal division can move a result that sits on the half-cent boundary.
    """
    numerator = ((amount * 100).cast("decimal(38,0)") * 2 + count).cast("decimal(38,0)")
    denominator = (count * 2).cast("decimal(38,0)")
    # (numerator - remainder) is a multiple of the denominator, so this division is exact.
    whole_cents = (numerator - F.pmod(numerator, denominator)) / denominator
    return (whole_cents.cast("decimal(38,0)") / 100).cast(MONEY_TYPE)
