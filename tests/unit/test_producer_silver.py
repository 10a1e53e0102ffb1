"""The producer's fault kinds, through the real bronze and silver transforms: each faulty record
is quarantined with exactly its kind, and silver keeps exactly the clean and late orders."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pyspark.sql import types as T

from ecomstream.producer.generator import OrderGenerator

KAFKA_ROWS = T.StructType(
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


def test_fault_kinds_map_one_to_one_onto_silver(spark) -> None:  # type: ignore[no-untyped-def]
    from ecomstream.transforms.bronze import to_bronze
    from ecomstream.transforms.silver import first_per_order, validate

    start = dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)
    gen = OrderGenerator(99, fault_rate=0.4, start_time=start, rate=0)
    records = gen.batch(1200)
    arrived = dt.datetime(2026, 11, 25, 12)
    rows = [(k, v, "orders", 0, i, arrived, 0) for i, (k, v, _) in enumerate(records)]
    bronze = to_bronze(spark.createDataFrame(rows, KAFKA_ROWS)).cache()  # three actions follow
    valid, quarantined = validate(bronze)

    reasons = {
        r.kafka_offset: list(r.reasons)
        for r in quarantined.select("kafka_offset", "reasons").collect()
    }
    valid_offsets = {r.kafka_offset for r in valid.select("kafka_offset").collect()}
    expected_quarantine = {
        i: [kind]
        for i, (_, _, kind) in enumerate(records)
        if kind not in (None, "late", "duplicate")
    }
    assert reasons == expected_quarantine
    assert valid_offsets == {
        i for i, (_, _, kind) in enumerate(records) if kind in (None, "late", "duplicate")
    }
    # silver = clean + late; every duplicate is a re-send of an order already there
    assert first_per_order(valid).count() == gen.clean + gen.kinds["late"]
    assert Counter(k for _, _, k in records)["duplicate"] == gen.kinds["duplicate"] == 40
    bronze.unpersist()
