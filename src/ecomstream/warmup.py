"""``python -m ecomstream.warmup``: fetch and cache every jar before first use, and write the
driver JVM's class archive (class_archive.py) by running the pipeline's work once (setup step).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ecomstream.errors import EcomstreamError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def exercise(spark: SparkSession) -> None:
    """What a pipeline run does, without a broker: the Kafka source planned, the tables created,
    and two micro-batches of Kafka-shaped rows through the medallion batch into Delta tables in
    a scratch directory (a valid order, a malformed record, a duplicate)."""
    import datetime as dt

    from ecomstream.adapters.local import LocalEnvironment
    from ecomstream.jobs import pipeline
    from ecomstream.jobs.batch import MedallionBatch
    from ecomstream.jobs.settings import PipelineSettings
    from ecomstream.schemas import KAFKA_SOURCE_SCHEMA

    # planning the source loads its classes and connects to nothing
    kafka = {"kafka.bootstrap.servers": "127.0.0.1:9", "subscribe": "warm-up"}
    _ = spark.readStream.format("kafka").options(**kafka).load().schema
    _kafka_client(spark)
    pipeline.warm_up(spark)
    with tempfile.TemporaryDirectory(prefix="ecomstream-warmup-") as tmp:
        data = Path(tmp) / "data"
        env = LocalEnvironment(bootstrap_servers="127.0.0.1:9", topic="warm-up", data_dir=data)
        env._spark = spark
        # no broker here: the metrics' lag column stays empty
        env.kafka_end_offsets = lambda: None  # type: ignore[method-assign]
        settings = PipelineSettings(topic="warm-up", data_dir=data, bootstrap_servers="-")
        pipeline.ensure_tables(spark, env, settings)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        value = pipeline.warm_up_order(now)
        rows: list[tuple[object, ...]] = [(b"k", value, "warm-up", 0, i, now, 0) for i in range(2)]
        rows.append((None, b"{", "warm-up", 1, 0, now, 0))
        source = Path(tmp) / "source"
        spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA).write.parquet(str(source))
        batch = MedallionBatch(env, settings, writer="warm-up")

        def process(df: DataFrame, batch_id: int) -> None:
            batch.process(df, int(batch_id))

        try:
            query = (
                spark.readStream.schema(KAFKA_SOURCE_SCHEMA)
                .option("maxFilesPerTrigger", 1)
                .parquet(str(source))
                .writeStream.foreachBatch(process)
                .option("checkpointLocation", str(Path(tmp) / "checkpoint"))
                .trigger(availableNow=True)
                .start()
            )
            query.awaitTermination()
        finally:
            batch.close()


def _kafka_client(spark: SparkSession) -> None:
    """A Kafka consumer asks a port where no broker listens for a topic's partitions: about
    1,300 classes of kafka-clients (networking, protocol, errors) that a run loads."""
    jvm = spark.sparkContext._jvm
    props = jvm.java.util.Properties()  # type: ignore[union-attr]
    props.put("bootstrap.servers", "127.0.0.1:9")
    deserializer = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
    props.put("key.deserializer", deserializer)
    props.put("value.deserializer", deserializer)
    props.put("reconnect.backoff.ms", "50")
    consumer = jvm.org.apache.kafka.clients.consumer.KafkaConsumer(props)  # type: ignore[union-attr]
    try:
        with contextlib.suppress(Exception):  # a timeout: nothing listens there
            consumer.partitionsFor("warm-up", jvm.java.time.Duration.ofMillis(500))  # type: ignore[union-attr]
    finally:
        consumer.close(jvm.java.time.Duration.ofMillis(0))  # type: ignore[union-attr]


def main() -> int:
    from ecomstream import class_archive, jars
    from ecomstream.spark import local_session, resolved_jars

    try:
        t0 = time.monotonic()
        path = jars.kafka_jar_dir()
        print(f"kafka broker jars: {path} ({time.monotonic() - t0:.1f}s)")
        t0 = time.monotonic()
        if not resolved_jars():
            local_session("ecomstream-warmup")  # resolves them (Ivy) and remembers the list
            class_archive.end_jvm()
        print(f"spark packages (delta, kafka connector): cached ({time.monotonic() - t0:.1f}s)")
        t0 = time.monotonic()
        archive = class_archive.path_for(resolved_jars())
        if archive is not None and archive.is_file():
            print(f"driver class archive: {archive} ({time.monotonic() - t0:.1f}s)")
        else:
            archive = class_archive.build(resolved_jars(), exercise)
            what = archive or "not written (sessions start without one)"
            print(f"driver class archive: {what} ({time.monotonic() - t0:.1f}s)")
    except EcomstreamError as exc:
        print(f"ecomstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
