from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecomstream.errors import EcomstreamError
from ecomstream.schemas import CATEGORY_SALES_SCHEMA, LOCATION_SALES_SCHEMA, SILVER_SCHEMA
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.gold import category_sales, location_sales, parse_window, window_seconds
from ecomstream.transforms.silver import first_per_order, validate
from tests.profiles import drawn, examples
from tests.unit import contract_model as model
from tests.unit.order_strategies import kafka_frame, on_topics, streams


def _silver(spark, rows):
    """Silver rows from (timestamp, category, country, city, price, quantity)."""
    full = []
    for i, (ts, category, country, city, price, quantity) in enumerate(rows):
        price = Decimal(price)
        full.append(
            (
                f"o-{i}",
                ts,
                "C",
                "P",
                "p",
                category,
                price,
                quantity,
                "USD",
                "paypal",
                city,
                "S",
                country,
                price * quantity,
                ts.date(),
                ts.hour,
                "under_25",
                "orders",
                0,
                i,
                ts,
                ts,
            )
        )
    return spark.createDataFrame(full, SILVER_SCHEMA)


def _hour(window_start: datetime) -> int:
    """gold's partition: hours since the epoch of a (naive UTC) window start."""
    return int(window_start.replace(tzinfo=UTC).timestamp()) // 3600


def test_category_sales_per_minute_with_exact_decimals(spark):
    silver = _silver(
        spark,
        [
            (datetime(2026, 11, 25, 10, 0, 0), "Books", "US", "Austin", "10.00", 1),
            (datetime(2026, 11, 25, 10, 0, 59, 999999), "Books", "US", "Austin", "0.01", 2),
            (datetime(2026, 11, 25, 10, 0, 30), "Books", "DE", "Berlin", "0.02", 1),
            (datetime(2026, 11, 25, 10, 1, 0), "Books", "US", "Austin", "3.33", 3),
            (datetime(2026, 11, 25, 10, 0, 1), "Toys", "US", "Dallas", "0.10", 5),
        ],
    )
    actual = category_sales(silver)
    assert [(f.name, f.dataType) for f in actual.schema] == [
        (f.name, f.dataType) for f in CATEGORY_SALES_SCHEMA
    ]
    m0, m1, m2 = (datetime(2026, 11, 25, 10, m) for m in range(3))
    expected = spark.createDataFrame(
        [
            # 10.04 / 3 = 3.3466.. -> 3.35
            (m0, m1, "Books", 3, 4, Decimal("10.04"), Decimal("3.35"), _hour(m0)),
            (m1, m2, "Books", 1, 3, Decimal("9.99"), Decimal("9.99"), _hour(m1)),
            (m0, m1, "Toys", 1, 5, Decimal("0.50"), Decimal("0.50"), _hour(m0)),
        ],
        CATEGORY_SALES_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_average_rounds_half_up_exactly(spark):
    # 0.01 + 0.02 = 0.03 over 2 orders = 0.015 -> 0.02 (half-up), 0.05 / 4 = 0.0125 -> 0.01
    t = datetime(2026, 11, 25, 10, 0)
    silver = _silver(
        spark,
        [
            (t, "Books", "US", "A", "0.01", 1),
            (t, "Books", "US", "A", "0.02", 1),
            (t, "Toys", "US", "A", "0.01", 1),
            (t, "Toys", "US", "A", "0.02", 1),
            (t, "Toys", "US", "A", "0.01", 1),
            (t, "Toys", "US", "A", "0.01", 1),
        ],
    )
    got = {r.category: r.avg_order_value for r in category_sales(silver).collect()}
    assert got == {"Books": Decimal("0.02"), "Toys": Decimal("0.01")}


def test_location_sales_by_window_country_city(spark):
    t = datetime(2026, 11, 25, 10, 0, 10)
    silver = _silver(
        spark,
        [
            (t, "Books", "US", "Austin", "1.10", 1),
            (t, "Toys", "US", "Austin", "2.20", 2),
            (t, "Toys", "US", None, "3.30", 1),
            (datetime(2026, 11, 25, 10, 7), "Books", "FR", "Paris", "9999999999.99", 1),
        ],
    )
    actual = location_sales(silver, "5 minutes")
    w0, w5, w10 = (datetime(2026, 11, 25, 10, m) for m in (0, 5, 10))
    expected = spark.createDataFrame(
        [
            (w0, w5, "US", "Austin", 2, 3, Decimal("5.50"), _hour(w0)),
            (w0, w5, "US", None, 1, 1, Decimal("3.30"), _hour(w0)),
            (w5, w10, "FR", "Paris", 1, 1, Decimal("9999999999.99"), _hour(w5)),
        ],
        LOCATION_SALES_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("1 minute", "1 minute"),
        ("  5   Minutes ", "5 minutes"),
        ("30 seconds", "30 seconds"),
        ("1 hour 30 minutes", "1 hour 30 minutes"),
        ("2 days", "2 days"),
        ("500 milliseconds", "500 milliseconds"),
    ],
)
def test_parse_window_accepts_fixed_durations(text, normal):
    assert parse_window(text) == normal


@pytest.mark.parametrize(
    "text",
    [
        "",
        "minute",
        "0 minutes",
        "-1 minute",
        "1 month",
        "1 year",
        "1.5 minutes",
        "1 minute x",
        "abc",
        "1 fortnight",
        "1minute and 2 seconds",
    ],
)
def test_parse_window_rejects_with_one_line(text):
    with pytest.raises(EcomstreamError) as info:
        parse_window(text)
    assert "\n" not in str(info.value)
    assert "--window" in str(info.value)


# --- properties: gold equals the model's aggregate of the model's silver ---------------------


WINDOWS = ["1 minute", "30 seconds", "5 minutes", "1 hour"]


@pytest.mark.parametrize("window", WINDOWS)
def test_gold_equals_the_model_aggregate_of_silver(spark, window):
    """Hypothesis draws the streams (tests/profiles.py: 100 under ci, split over the four
    windows); one Spark job aggregates them together, each stream on its own topic with its
    order ids qualified by topic (so each stream's silver is its own), against the model's
    aggregate of the union of the streams' silvers."""
    streams_ = on_topics(drawn(streams(max_orders=120), max(1, examples() // len(WINDOWS))))
    records = [r for stream in streams_ for r in stream]
    valid = validate(to_bronze(kafka_frame(spark, records)))[0]
    silver = first_per_order(
        valid.withColumn("order_id", F.concat_ws("/", "kafka_topic", "order_id"))
    )
    expected_silver = {}
    for stream in streams_:
        outcome = model.run([(r.partition, r.offset, r.value) for r in stream])
        expected_silver.update({(stream[0].topic, k): v for k, v in outcome.silver.items()})
    seconds = window_seconds(window)

    def micros(column):
        return F.unix_micros(column)

    category = {
        (r.s, r.e, r.category): (r.order_count, r.units_sold, r.revenue, r.avg_order_value)
        for r in category_sales(silver, window)
        .select(
            micros("window_start").alias("s"),
            micros("window_end").alias("e"),
            "category", "order_count", "units_sold", "revenue", "avg_order_value",
        )
        .collect()
    }  # fmt: skip
    location = {
        (r.s, r.e, r.country, r.city): (r.order_count, r.units_sold, r.revenue)
        for r in location_sales(silver, window)
        .select(
            micros("window_start").alias("s"),
            micros("window_end").alias("e"),
            "country", "city", "order_count", "units_sold", "revenue",
        )
        .collect()
    }  # fmt: skip

    def keyed(aggregate):
        return {
            (model.epoch_micros(k[0]), model.epoch_micros(k[1]), *k[2:]): v
            for k, v in aggregate.items()
        }

    assert category == keyed(model.category_sales(expected_silver.values(), seconds))
    assert location == keyed(model.location_sales(expected_silver.values(), seconds))
    # Nothing lost between silver and gold: every silver order is counted once in each table.
    assert sum(v[0] for v in category.values()) == len(expected_silver)
    assert sum(v[0] for v in location.values()) == len(expected_silver)
