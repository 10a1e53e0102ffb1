"""jobs/replay.py: the batch transform built once, then replayed on every later batch."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ecomstream.jobs.replay import Replayed
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.silver import classify
from tests.profiles import drawn
from tests.unit.order_strategies import kafka_frame, streams


def _checked(df):  # type: ignore[no-untyped-def]
    """Bronze and the silver checks."""
    return classify(to_bronze(df))


def _same(got, want) -> None:  # type: ignore[no-untyped-def]
    """Equal but for ``ingested_at``, which reads the clock."""
    assert_df_equality(got.drop("ingested_at"), want.drop("ingested_at"), ignore_row_order=True)


def test_a_replayed_transform_is_the_transform_built_for_each_frame(spark) -> None:
    first, *others = drawn(streams(), n=4)
    replayed = Replayed(_checked)
    built = replayed(kafka_frame(spark, first))
    assert len(replayed.calls) >= 5  # the projections of bronze and the checks, recorded
    _same(built, _checked(kafka_frame(spark, first)))
    calls = replayed.calls
    for records in others:
        frame = kafka_frame(spark, records)
        _same(replayed(frame), _checked(frame))
    assert replayed.calls is calls  # replayed, not built again


def test_a_frame_of_another_schema_builds_the_transform_again(spark) -> None:
    replayed = Replayed(lambda df: df.select(*df.columns, F.lit(1).alias("one")))
    a = replayed(spark.createDataFrame([(1,)], "x int"))
    b = replayed(spark.createDataFrame([("s", 2)], "y string, z int"))
    assert a.columns == ["x", "one"] and b.columns == ["y", "z", "one"]
    assert b.collect()[0]["one"] == 1


def test_a_call_that_cannot_be_replayed_is_refused(spark) -> None:
    replayed = Replayed(lambda df: df.where("x > 0"))
    with pytest.raises(AttributeError, match=r"DataFrame\.where cannot be replayed"):
        replayed(spark.createDataFrame([(1,)], "x int"))
