"""Session-wide fixtures: one SparkSession, one Kafka broker.

Broker choice, in order: ``ECOMSTREAM_BOOTSTRAP_SERVERS`` (any existing broker), then Docker via
testcontainers when ``ECOMSTREAM_TEST_DOCKER=1`` and an engine answers, then the embedded broker
(real Apache Kafka from Maven Central jars), which needs nothing but Java.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tests.profiles  # noqa: F401  (registers and loads the Hypothesis profiles)

TESTS = Path(__file__).parent

# The Spark drivers the suite starts as processes (every pipeline, demo and CLI run) compile
# with C1 only: each runs seconds on a few records, where C2's compiler threads cost two cores'
# time and pay nothing back (a one-record `pipeline --once`: 17.9 -> ~14 s here). Spark's
# launcher adds SPARK_SUBMIT_OPTS to the driver's command line; benchmarks and users keep the
# JVM's default tiered compilation. So does each worker's own session (the `spark` fixture):
# it lives the whole run and C2 pays there (the Spark-backed unit modules: 486 -> 355 s, 598 ->
# 496 CPU-s).
SESSION_SUBMIT_OPTS = os.environ.get("SPARK_SUBMIT_OPTS")
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")
# The same for the brokers the suite starts (broker.start reads KAFKA_OPTS, as Kafka's scripts
# do): a test's traffic is small, and an idle broker's C2 threads kept compiling for a minute.
# Measured here: 3.0 s to ready with 3.7 CPU-s (C2: 3.4-4.2 s, 5.5-6.7 CPU-s), then 3.8 CPU-s
# per idle 20 s against 5.2.
os.environ.setdefault("KAFKA_OPTS", "-XX:TieredStopAtLevel=1")


# The longest modules first (by a serial run's figures): with two workers (scripts/test.sh),
# a long chain that starts last runs alone at the end while the other worker idles.
LONGEST_FIRST = (
    "integration/test_crash.py",
    "unit/test_batch.py",
    "integration/test_cluster.py",
    "integration/test_broker_outage.py",
    "integration/test_eventhubs_local.py",
    "integration/test_reprocess.py",
    "integration/test_batch_memory.py",
    "integration/test_demo.py",
    "integration/test_pipeline.py",
    "integration/test_crash_negative.py",
    "integration/test_reprocess.py",
    "unit/test_reprocess.py",
)


def _rank(item: pytest.Item) -> int:
    path = Path(str(item.fspath)).relative_to(TESTS).as_posix()
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each module keeps its own order
    for item in items:
        path = Path(str(item.fspath))
        if TESTS / "unit" in path.parents:
            item.add_marker(pytest.mark.unit)
        elif TESTS / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def spark_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's JVM writes its console output."""
    return tmp_path_factory.mktemp("spark-log") / "spark.log"


@pytest.fixture(scope="session")
def spark(spark_log: Path):  # type: ignore[no-untyped-def]
    from ecomstream.spark import local_session

    child_opts = os.environ["SPARK_SUBMIT_OPTS"]
    if SESSION_SUBMIT_OPTS is None:
        del os.environ["SPARK_SUBMIT_OPTS"]
    else:
        os.environ["SPARK_SUBMIT_OPTS"] = SESSION_SUBMIT_OPTS
    try:
        session = local_session("ecomstream-tests", log_file=spark_log)
    finally:
        os.environ["SPARK_SUBMIT_OPTS"] = child_opts
    yield session
    session.stop()


@dataclass
class Broker:
    bootstrap: str
    kind: str  # "external" | "docker" | "embedded"
    data_dir: Path | None = None
    port: int | None = None

    def new_topic(self, prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


def docker_available() -> tuple[bool, str]:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return False, f"no Docker engine answers ({type(exc).__name__})"
    return True, ""


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    external = os.environ.get("ECOMSTREAM_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(bootstrap=external, kind="external")
        return
    if os.environ.get("ECOMSTREAM_TEST_DOCKER") == "1" and docker_available()[0]:
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer().with_kraft() as container:
            yield Broker(bootstrap=container.get_bootstrap_server(), kind="docker")
        return
    from ecomstream import broker

    data_dir = tmp_path_factory.mktemp("kafka-broker")
    port = broker.free_port()
    info = broker.start(data_dir, port)
    try:
        yield Broker(bootstrap=info.bootstrap, kind="embedded", data_dir=data_dir, port=port)
    finally:
        broker.stop(data_dir)
