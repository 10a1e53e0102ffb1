from __future__ import annotations

from datetime import datetime

from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecomstream.schemas import BRONZE_SCHEMA
from ecomstream.transforms.bronze import to_bronze
from tests.unit.order_strategies import KAFKA_TIME, Record, kafka_frame


def test_bronze_keeps_every_record_exactly_with_its_coordinates(spark):
    records = [
        Record(0, 0, b'{"order_id": "a", "price": 2.50, "quantity": "3"}', key=b"a"),
        Record(0, 1, b"not json at all"),
        Record(1, 7, '{"city": "S\u00e3o Paulo"}'.encode()),
        Record(1, 8, None),
        Record(0, 2, b""),
    ]
    bronze = to_bronze(kafka_frame(spark, records))
    assert [(f.name, f.dataType) for f in bronze.schema] == [
        (f.name, f.dataType) for f in BRONZE_SCHEMA
    ]
    actual = bronze.select(
        "raw_value",
        "kafka_key",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "event.order_id",
        "event.price",
        "event.quantity",
        "event.city",
    )
    expected = spark.createDataFrame(
        [
            (
                '{"order_id": "a", "price": 2.50, "quantity": "3"}',
                "a",
                "orders",
                0,
                0,
                KAFKA_TIME.replace(tzinfo=None),
                "a",
                "2.5",
                "3",
                None,
            ),
            (
                "not json at all",
                None,
                "orders",
                0,
                1,
                KAFKA_TIME.replace(tzinfo=None),
                None,
                None,
                None,
                None,
            ),
            (
                '{"city": "S\u00e3o Paulo"}',
                None,
                "orders",
                1,
                7,
                KAFKA_TIME.replace(tzinfo=None),
                None,
                None,
                None,
                "S\u00e3o Paulo",
            ),
            (None, None, "orders", 1, 8, KAFKA_TIME.replace(tzinfo=None), None, None, None, None),
            ("", None, "orders", 0, 2, KAFKA_TIME.replace(tzinfo=None), None, None, None, None),
        ],
        actual.schema,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_bronze_stamps_ingestion_time_now(spark):
    before = datetime.now()
    row = to_bronze(kafka_frame(spark, [Record(0, 0, b"{}")])).select("ingested_at").first()
    after = datetime.now()
    assert row is not None
    assert before.replace(microsecond=0) <= row.ingested_at <= after


def test_bronze_drops_and_adds_nothing(spark):
    records = [Record(p, o, b"x") for p in range(3) for o in range(50)]
    bronze = to_bronze(kafka_frame(spark, records))
    coordinates = bronze.groupBy("kafka_partition", "kafka_offset").agg(F.count("*").alias("n"))
    assert coordinates.count() == 150
    assert coordinates.where("n != 1").count() == 0
