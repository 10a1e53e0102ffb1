"""Wiring: validate at the edge, create the tables, run the medallion query.

``--once``: the query with an availableNow trigger, so when it returns every table is up to
date with everything that was on the topic at start. Continuous: a processing-time trigger
until SIGINT/SIGTERM, which stop it cleanly; table maintenance runs beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ecomstream import adapters
from ecomstream.adapters.base import Environment, hook
from ecomstream.errors import EcomstreamError, RedactingFormatter, redact, redact_library_logs
from ecomstream.jobs import checkpoints, memory, space, staging
from ecomstream.jobs.medallion import NAME as QUERY
from ecomstream.jobs.settings import PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructType

    from ecomstream.jobs.base import StreamJob
    from ecomstream.jobs.maintenance import Maintenance
    from ecomstream.jobs.outage import OutageWatch

log = logging.getLogger("ecomstream.pipeline")
POLL_S = 0.5


def run(settings: PipelineSettings) -> int:
    """Run the pipeline; returns the exit code (0: the work asked for was done)."""
    # collect()/createDataFrame() turn timestamps into naive Python datetimes in the local zone
    os.environ["TZ"] = "UTC"
    time.tzset()
    env = adapters.get(settings.profile, **settings.adapter_settings())
    try:
        # Asked to wait for the topic: start (and warm) Spark meanwhile instead of after.
        early = _start_spark_early(env) if settings.wait_for_topic_s > 0 else None
        hook(env, "preflight")()
        hook(env, "lock")("pipeline")
        staging.refuse_unfinished(env)
        hook(env, "bind")(settings.topic, settings.window, settings.categories)
        start = checkpoints.guard(env, settings)
        if early is not None:
            early.join()
        spark = env.spark()
        ensure_tables(spark, env, settings)
        jobs = make_jobs(env, settings, start)
        mode = "once" if settings.once else f"continuous, trigger {settings.trigger_interval}"
        log.info(
            '{"event": "start", "topic": "%s", "profile": "%s", "mode": "%s", "window": "%s"}',
            settings.topic,
            settings.profile,
            mode,
            settings.window,
        )
        with _stop_on_sigterm():
            if settings.once:
                run_once(jobs)
            else:
                run_continuous(jobs, maintenance(env, settings), outage_watch(env, settings))
        return 0
    except EcomstreamError:
        raise
    except Exception as exc:  # a first start's table creation or binding file on a full disk
        space.raise_if_full(exc, space.state_root(env.checkpoint(QUERY)))
        # the JVM died (out of heap in a batch, killed): Py4J lost its gateway
        memory.raise_if_jvm_gone_or_out_of_memory(exc, env.checkpoint(QUERY), settings.spark_conf)
        raise
    finally:
        hook(env, "close")()


def _start_spark_early(env: Environment) -> threading.Thread:
    """Start the session in the background and run the transforms once on a tiny frame, so the
    JVM's class loading and code generation are done before the first batch. A failure here is
    left for the main thread's own ``env.spark()`` to report."""

    def start() -> None:
        with contextlib.suppress(Exception):
            warm_up(env.spark())

    thread = threading.Thread(target=start, name="ecomstream-spark-start", daemon=True)
    thread.start()
    return thread


def warm_up_order(now: dt.datetime) -> bytes:
    """A valid order event at ``now``, as its Kafka value: what warm-ups run through the
    transforms."""
    fields = {
        "order_id": "warm-up",
        "order_timestamp": now.isoformat(),
        "customer_id": "c",
        "product_id": "p",
        "product_name": "n",
        "category": "Books",
        "price": "1.00",
        "quantity": 1,
        "currency": "USD",
        "payment_method": "card",
        "city": "c",
        "state": "s",
        "country": "c",
    }
    return json.dumps(fields).encode()


def warm_up(spark: SparkSession) -> tuple[int, int]:
    """Bronze, silver and gold transforms over one valid and one malformed record, in memory;
    returns (orders in gold, rows quarantined): (1, 1)."""
    from ecomstream.schemas import KAFKA_SOURCE_SCHEMA
    from ecomstream.transforms.bronze import to_bronze
    from ecomstream.transforms.gold import category_sales, location_sales
    from ecomstream.transforms.silver import first_per_order, validate

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    kafka = spark.createDataFrame(
        [
            (b"k", warm_up_order(now), "warm-up", 0, 0, now, 0),
            (b"k", b"{", "warm-up", 0, 1, now, 0),
        ],
        KAFKA_SOURCE_SCHEMA,
    )
    valid, quarantined = validate(to_bronze(kafka))
    silver = first_per_order(valid)
    rejected = quarantined.collect()
    location_sales(silver).collect()
    return sum(int(r["order_count"]) for r in category_sales(silver).collect()), len(rejected)


def make_jobs(
    env: Environment, settings: PipelineSettings, start: dict[int, int] | None = None
) -> list[StreamJob]:
    """The query; ``start``: where a reset checkpoint starts (:func:`checkpoints.guard`)."""
    from ecomstream.jobs.medallion import MedallionJob

    return [MedallionJob(env, settings, start)]


def declared_schemas() -> dict[str, StructType]:
    """Each table's schema as declared in :mod:`ecomstream.schemas` (what ``ensure_tables`` uses:
    analysing the transforms instead costs seconds of a cold JVM at every start; a test holds
    the two equal)."""
    from ecomstream import schemas
    from ecomstream.jobs.metrics import METRICS_SCHEMA

    return {
        "bronze/orders": schemas.BRONZE_SCHEMA,
        "silver/orders": schemas.SILVER_SCHEMA,
        "silver/quarantine": schemas.QUARANTINE_SCHEMA,
        "gold/category_sales": schemas.CATEGORY_SALES_SCHEMA,
        "gold/location_sales": schemas.LOCATION_SALES_SCHEMA,
        "metrics/pipeline_batches": METRICS_SCHEMA,
    }


# Delta collects min/max/null-count statistics for the first 32 columns of every file it
# writes, which is a third of the cost of writing bronze and silver (docs/benchmarks.md). These
# tables keep them for the columns that prune reads: Kafka coordinates and times.
# A long-running stream commits every second: the log is checkpointed every 20 commits and
# kept for a day (time travel further back is not what these tables are for).
_LOG = {
    "delta.checkpointInterval": "20",
    "delta.logRetentionDuration": "interval 1 days",
    "delta.deletedFileRetentionDuration": "interval 1 days",
}
TABLE_PROPERTIES: dict[str, dict[str, str]] = {
    "bronze/orders": {
        **_LOG,
        "delta.dataSkippingStatsColumns": (
            "kafka_partition,kafka_offset,kafka_timestamp,ingested_at"
        ),
    },
    "silver/orders": {
        **_LOG,
        "delta.dataSkippingStatsColumns": (
            "order_timestamp,order_date,kafka_partition,kafka_offset,ingested_at"
        ),
    },
    "silver/quarantine": _LOG,
    "gold/category_sales": _LOG,
    "gold/location_sales": _LOG,
    "metrics/pipeline_batches": _LOG,
}
# Gold is partitioned by the hour of its windows: a batch replaces the hours it touched with a
# metadata-only overwrite of their partitions (one small file each), instead of a MERGE that
# joins and rewrites.
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {
    "gold/category_sales": ("window_hour",),  # schemas.GOLD_PARTITION (no pyspark import here)
    "gold/location_sales": ("window_hour",),
}


def lenient(schema: StructType) -> StructType:
    """``schema`` nullable at the top level: NOT NULL constraints on the tables would only add
    ways to fail a batch."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])


def ensure_tables(spark: SparkSession, env: Environment, settings: PipelineSettings) -> None:
    """Create the empty tables a downstream query reads, so an empty topic is not an error."""
    for key, schema in declared_schemas().items():
        env.table(key).create_if_missing(
            spark, lenient(schema), TABLE_PROPERTIES.get(key), PARTITION_COLUMNS.get(key, ())
        )


# Set by SIGINT/SIGTERM (see _stop_on_sigterm); the loops below poll it, so a signal never
# interrupts a Py4J call half way (which would leave the gateway connection unusable).
_STOP = threading.Event()


def run_once(jobs: list[StreamJob]) -> None:
    for job in jobs:
        query = job.start()
        try:
            _await(job, query)
        except BaseException:
            _stop_all(jobs)
            raise
        finally:
            job.close()


def maintenance(env: Environment, settings: PipelineSettings) -> Maintenance:
    from ecomstream.jobs.maintenance import Maintenance

    return Maintenance(env, settings.maintenance_interval_s)


def outage_watch(env: Environment, settings: PipelineSettings) -> OutageWatch:
    from ecomstream.jobs.outage import OutageWatch, quiet_kafka_client_logs

    quiet_kafka_client_logs()
    broker = settings.bootstrap_servers or f"the broker of topic {settings.topic}"
    return OutageWatch(hook(env, "kafka_reachable"), broker, settings.broker_outage_limit_s)


def run_continuous(
    jobs: list[StreamJob], upkeep: Maintenance | None = None, watch: OutageWatch | None = None
) -> None:
    for job in jobs:
        job.start()
    if upkeep is not None:
        upkeep.start()
    if watch is not None:
        watch.start()
    try:
        while not _STOP.is_set():
            if watch is not None:
                watch.check()  # first: a query failing after the limit is the outage's doing
            for job in jobs:
                _check(job)
            _STOP.wait(POLL_S)
    except KeyboardInterrupt:
        pass
    except BaseException:
        if watch is not None:
            watch.stop()
        if upkeep is not None:
            upkeep.stop()
        _stop_all(jobs)
        raise
    if watch is not None:
        watch.stop()
    log.info('{"event": "stopping", "reason": "interrupted"}')
    if upkeep is not None:
        upkeep.stop()
    _stop_all(jobs)
    log.info('{"event": "stopped"}')


def _await(job: StreamJob, query: StreamingQuery) -> None:
    while query.isActive:
        if _STOP.is_set():
            raise KeyboardInterrupt
        _STOP.wait(POLL_S)
    _check(job)


def _check(job: StreamJob) -> None:
    query = job.query
    if query is None:
        return
    if query.isActive:
        return
    exc = query.exception()
    if exc is not None:
        space.raise_if_full(exc, space.state_root(job.env.checkpoint(job.name)))
        _raise_if_data_loss(exc, job.settings.topic)
        memory.raise_if_jvm_gone_or_out_of_memory(
            exc, job.env.checkpoint(job.name), job.settings.spark_conf
        )
        raise EcomstreamError(f"the {job.name} query failed: {_first_line(exc)}", exit_code=1)
    if not job.settings.once:
        raise EcomstreamError(f"the {job.name} query stopped unexpectedly", exit_code=1)


# Spark's error condition when records it was about to read left the topic mid-run (retention
# overtook the query, or delete-records): at start-up jobs/checkpoints.py says it first.
_DATA_LOSS_MARKS = ("KAFKA_DATA_LOSS", "Some data may have been lost")


def _raise_if_data_loss(exc: Any, topic: str) -> None:
    text = str(getattr(exc, "desc", None) or exc)
    if any(mark in text for mark in _DATA_LOSS_MARKS):
        raise EcomstreamError(
            f"topic {topic!r} lost records the pipeline had not read yet while it ran (retention "
            "or delete-records): the batch that met the gap was not committed. To go on without "
            "them, run once with --fail-on-data-loss false",
            exit_code=1,
        )


def _first_line(exc: Any) -> str:
    # redacted before it is cut: a cut through a secret leaves a part no redaction recognises
    text = redact(str(getattr(exc, "desc", None) or exc))
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("==="):
            return line[:400]
    return type(exc).__name__


def _stop_all(jobs: list[StreamJob]) -> None:
    # stopping a query interrupts the batch it runs; Py4J would log that as an ERROR traceback
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    for job in reversed(jobs):
        if job.query is not None:
            with contextlib.suppress(Exception):
                job.query.stop()
        with contextlib.suppress(Exception):
            job.close()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM ask the loops to stop the queries (see ``_STOP``)."""

    def _request_stop(signum: int, frame: object) -> None:
        _STOP.set()

    _STOP.clear()
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    redact_library_logs()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
