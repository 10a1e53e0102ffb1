from __future__ import annotations

from pathlib import Path


def test_session_has_delta_and_utc(spark, tmp_path: Path):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")
    spark.range(3).write.format("delta").save(str(tmp_path / "t"))
    assert sorted(r.id for r in spark.read.format("delta").load(str(tmp_path / "t")).collect()) == [
        0,
        1,
        2,
    ]


def test_kafka_connector_is_on_the_classpath(spark):
    # The Kafka source resolves its provider class lazily; asking for it proves the jar is there.
    jvm = spark.sparkContext._jvm
    cls = jvm.java.lang.Class.forName(
        "org.apache.spark.sql.kafka010.KafkaSourceProvider",
        True,
        jvm.Thread.currentThread().getContextClassLoader(),
    )
    assert cls.getName().endswith("KafkaSourceProvider")
