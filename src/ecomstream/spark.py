"""SparkSession factories, one per profile. Never called at import time.

The local profile builds a session with Delta's extension and catalog and Spark's Kafka
connector; Spark's Ivy resolves both from Maven Central at first start and caches them under
:func:`ecomstream.paths.cache_dir`. The Databricks profile uses the cluster's active session.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ecomstream.errors import EcomstreamError
from ecomstream.paths import cache_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_VERSION = "4.2.0"
KAFKA_CONNECTOR = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{SPARK_VERSION}"

# Fast, small, deterministic: delta-io's own test settings, scaled to a 2-core laptop.
LOCAL_CONF: Mapping[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.streaming.stateStore.providerClass": (
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
    ),
    "spark.sql.adaptive.enabled": "false",
    # The batch's one projection (parse, checks, every write's columns) makes a whole-stage
    # method past HotSpot's 8000-byte JIT limit, which then runs interpreted: a third of the
    # job's CPU. At 8000 Spark splits such a stage into per-operator code the JIT compiles
    # (27 % less per batch, docs/pipeline.md), the limit Spark's own docs advise on HotSpot.
    "spark.sql.codegen.hugeMethodLimit": "8000",
    # The silver batch is cached once per batch and read three times: uncompressed, caching
    # costs a third less CPU (measured: docs/benchmarks.md), and the batch is bounded in size.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.databricks.delta.properties.defaults.autoOptimize.optimizeWrite": "false",
}


def local_session(
    app_name: str = "ecomstream",
    *,
    master: str = "local[2]",
    extra_conf: Mapping[str, str] | None = None,
    log_file: Path | None = None,
) -> SparkSession:
    """A local SparkSession with Delta and the Kafka connector.

    Spark's console chatter (Ivy's resolution report, WARN lines) goes to ``log_file``
    (default ``<cache>/spark.log``) instead of the terminal.
    """
    from delta import configure_spark_with_delta_pip
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    ivy = cache_dir() / "ivy"
    ivy.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in {**LOCAL_CONF, "spark.jars.ivy": str(ivy), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    resolved = _resolved_jars()
    if resolved:
        # Ivy already resolved these once: skip the resolution every JVM start would repeat.
        builder = builder.config("spark.jars", ",".join(resolved))
    else:
        builder = configure_spark_with_delta_pip(builder, extra_packages=[KAFKA_CONNECTOR])
    log_file = log_file or cache_dir() / "spark.log"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        with _jvm_output_to(log_file):
            spark = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        raise EcomstreamError(_launch_failure(log_file, exc)) from None
    spark.sparkContext.setLogLevel("ERROR")
    if not resolved:
        _remember_jars(spark.sparkContext.getConf().get("spark.jars", ""))
    return spark


def _jar_list_file() -> Path:
    from delta import __version__ as delta_version

    return cache_dir() / f"spark-{SPARK_VERSION}-delta-{delta_version}-jars.txt"


def _resolved_jars() -> list[str]:
    """The jar files an earlier start resolved, if every one of them is still there."""
    try:
        jars = _jar_list_file().read_text().split()
    except (OSError, ImportError):
        return []
    if not jars or not all(Path(j).is_file() for j in jars):
        return []
    if not any("delta-spark" in j for j in jars) or not any("sql-kafka" in j for j in jars):
        return []
    return jars


def _remember_jars(spark_jars: str) -> None:
    jars = [urlparse(j).path or j for j in spark_jars.split(",") if j]
    if jars and all(Path(j).is_file() for j in jars):
        with contextlib.suppress(OSError, ImportError):
            _jar_list_file().write_text("\n".join(jars) + "\n")


def active_session() -> SparkSession:
    """The Databricks profile: the cluster owns the session (and its jars)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise EcomstreamError("no active SparkSession: the databricks profile runs on a cluster")
    return spark


@contextlib.contextmanager
def _jvm_output_to(log_file: Path) -> Iterator[None]:
    """Point fds 1 and 2 at ``log_file`` while the JVM starts; it keeps them, we get ours back."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _launch_failure(log_file: Path, exc: Exception) -> str:
    text = ""
    with contextlib.suppress(OSError):
        text = log_file.read_text(errors="replace")[-20000:]
    if "unresolved dependency" in text or "UNRESOLVED DEPENDENCIES" in text:
        return (
            "could not resolve Spark's Delta and Kafka packages from Maven Central "
            f"(offline with an empty cache?); details in {log_file}"
        )
    if "JAVA_HOME" in text or "java: not found" in text or "No such file" in text:
        return f"Spark could not start Java (need Java 17+); details in {log_file}"
    return f"Spark failed to start: {str(exc).splitlines()[0]}; details in {log_file}"
