"""SparkSession factories, one per profile. Never called at import time.

The local profile builds a session with Delta's extension and catalog and Spark's Kafka
connector; Spark's Ivy resolves both from Maven Central at first start and caches them under
:func:`ecomstream.paths.cache_dir`. The Databricks profile uses the cluster's active session.

The local profile's session runs on any Spark master (``--master``): ``local[*]`` by default, a
standalone cluster (``spark://``), Kubernetes or YARN. The jars travel with the application
(``spark.jars``: executors fetch them from the driver), and what executors must reach besides
is decided by :func:`storage_problem` (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ecomstream import class_archive, driver_jvm
from ecomstream.errors import EcomstreamError
from ecomstream.paths import cache_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_VERSION = "4.2.0"
# What a run without --master uses: every core of this machine.
DEFAULT_MASTER = "local[*]"
KAFKA_CONNECTOR = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{SPARK_VERSION}"

# Fast, small, deterministic: delta-io's own test settings, scaled to a 2-core laptop.
LOCAL_CONF: Mapping[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
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
# Only when every executor runs on this machine: the driver listens on loopback alone. A
# cluster's executors elsewhere must connect back to it, so Spark picks the address there.
LOOPBACK_DRIVER_CONF: Mapping[str, str] = {
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


def local_session(
    app_name: str = "ecomstream",
    *,
    master: str | None = "local[2]",
    extra_conf: Mapping[str, str] | None = None,
    log_file: Path | None = None,
) -> SparkSession:
    """A SparkSession with Delta and the Kafka connector, on ``master`` (None: the one
    spark-submit was given, else Spark's default ``local[*]``).

    Spark's console chatter (Ivy's resolution report, WARN lines) goes to ``log_file``
    (default ``<cache>/spark.log``) instead of the terminal.
    """
    from delta import configure_spark_with_delta_pip
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    ivy = cache_dir() / "ivy"
    ivy.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    on_this_machine = master is not None and executors_on_this_machine(master)
    if master is None and not under_spark_submit():
        on_this_machine = True  # Spark's own default, local[*]
    conf = {
        **LOCAL_CONF,
        **(LOOPBACK_DRIVER_CONF if on_this_machine else {}),
        "spark.jars.ivy": str(ivy),
        **(extra_conf or {}),
    }
    resolved = resolved_jars()
    extra_jars = [j for j in (extra_conf or {}).get("spark.jars", "").split(",") if j]
    options = exit_on_oom(conf.get("spark.driver.extraJavaOptions"))
    if resolved:
        options = class_archive.java_options(options, [*resolved, *extra_jars])
    conf["spark.driver.extraJavaOptions"] = options
    for key, value in conf.items():
        builder = builder.config(key, value)
    if resolved:
        # Ivy already resolved these once: skip the resolution every JVM start would repeat.
        # Executors fetch them from the driver, so a cluster needs nothing installed for them.
        builder = builder.config("spark.jars", ",".join([*resolved, *extra_jars]))
    else:
        builder = configure_spark_with_delta_pip(builder, extra_packages=[KAFKA_CONNECTOR])
    log_file = log_file or cache_dir() / "spark.log"
    if on_this_machine:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    driver_jvm.remember_log(log_file)
    try:
        with _jvm_output_to(log_file):
            spark = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        raise EcomstreamError(_launch_failure(log_file, exc)) from None
    spark.sparkContext.setLogLevel("ERROR")
    lift_json_write_depth(spark)
    if not resolved:
        _remember_jars(spark.sparkContext.getConf().get("spark.jars", ""))
    return spark


_TABLE_DEFAULTS = "spark.databricks.delta.properties.defaults."


def table_property_defaults() -> dict[str, str]:
    """The table properties a local session's CREATE adds (``LOCAL_CONF``'s Delta table
    defaults, as ``delta.<name>``), for tables created without Spark."""
    return {
        f"delta.{key.removeprefix(_TABLE_DEFAULTS)}": value
        for key, value in LOCAL_CONF.items()
        if key.startswith(_TABLE_DEFAULTS)
    }


def exit_on_oom(options: str | None) -> str:
    """The driver's Java options with ``-XX:+ExitOnOutOfMemoryError``, unless they already say
    what to do on an ``OutOfMemoryError``: a JVM out of heap exits at once instead of limping
    on in a thread Spark's own handler does not watch (driver_jvm.py turns its exit into one
    line). Only the JVM this process starts reads them, never spark-submit's or a cluster's."""
    options = (options or "").strip()
    if "OutOfMemoryError" in options:
        return options
    return f"{options} {driver_jvm.EXIT_ON_OOM}".strip()


def lift_json_write_depth(spark: SparkSession) -> None:
    """Lift Jackson's default write nesting limit (1000) in this JVM.

    ``from_json`` reads a field declared as text but sent as an array or object (``"price":
    [[...]]``) by copying it through a JSON generator, which Jackson 2.16+ caps at 1000 levels;
    past it the whole payload fails and reads as ``malformed_json``, though the contract says
    ``invalid_price``. Spark sets the read limits from ``from_json``'s options
    (transforms/bronze.py) but takes the write limits from Jackson's process-wide default,
    which this replaces. The copy is iterative (a 1,000,000-deep price is read in about a
    second). It reaches the executors that share this JVM (``local[...]``), not those of a
    cluster: there such a payload stays ``malformed_json`` (docs/operations.md)."""
    constraints = spark.sparkContext._jvm.com.fasterxml.jackson.core.StreamWriteConstraints  # type: ignore[union-attr]
    constraints.overrideDefaultStreamWriteConstraints(
        constraints.builder().maxNestingDepth(2**31 - 1).build()
    )


def under_spark_submit() -> bool:
    """This Python process was started by spark-submit, whose JVM (and --master) it joins."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def default_master() -> str | None:
    """The master of a run without ``--master``: spark-submit's own when it started us (so its
    ``--master`` is not overridden), else :data:`DEFAULT_MASTER`."""
    return None if under_spark_submit() else DEFAULT_MASTER


# -- masters and what their executors reach --------------------------------------------------
_LOCAL = re.compile(r"local(\[(\*|[1-9][0-9]*)(,\s*[1-9][0-9]*)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\]")
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
_K8S = re.compile(r"k8s://(https?://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?/?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MASTER_FORMS = "local[*], local[N], spark://host:port, k8s://https://host:port or yarn"


def parse_master(text: str) -> str:
    """``text`` as a Spark master URL, or ValueError with what was expected."""
    master = str(text).strip()
    if master.startswith("sc://"):
        raise ValueError(
            f"{master!r} is a Spark Connect address, not a master: the pipeline needs a "
            "classic session (docs/scaling.md says why)"
        )
    if (
        _LOCAL.fullmatch(master)
        or _LOCAL_CLUSTER.fullmatch(master)
        or master == "yarn"
        or _K8S.fullmatch(master)
    ):
        return master
    if master.startswith("spark://"):
        hosts = master.removeprefix("spark://").split(",")
        if all(_valid_host_port(h) for h in hosts):
            return master
    raise ValueError(f"invalid master {master!r}: expected {MASTER_FORMS}")


def _valid_host_port(text: str) -> bool:
    match = _HOST_PORT.fullmatch(text.strip())
    return match is not None and 0 < int(match.group(2)) < 65536


def is_local_master(master: str) -> bool:
    """``local[...]`` or ``local-cluster[...]``: driver and executors on this machine."""
    return bool(_LOCAL.fullmatch(master) or _LOCAL_CLUSTER.fullmatch(master))


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: where it points is not this function's guess to make


def executors_on_this_machine(master: str) -> bool:
    """Whether every executor of ``master`` runs on this machine, so shares its filesystem.

    True for ``local[...]``/``local-cluster[...]`` and for a standalone master on a loopback
    address (``spark://127.0.0.1:7077``, ``spark://localhost:7077``): a worker reaches a master
    listening on loopback only from the same machine. False for every other master, including
    a standalone master under this machine's own name (workers may join it from anywhere) and
    Kubernetes or YARN even when their API is local (executors run in pods or containers with
    filesystems of their own)."""
    if is_local_master(master):
        return True
    if master.startswith("spark://"):
        hosts = [h.rsplit(":", 1)[0] for h in master.removeprefix("spark://").split(",")]
        return all(is_loopback(h) for h in hosts)
    return False


def is_uri(path: str | Path) -> bool:
    """``s3a://...``, ``abfss://...``, ``hdfs://...`` (a one-letter scheme is a Windows drive)."""
    return bool(_URI.match(str(path)))


def storage_problem(
    master: str, data_dir: str | Path, bootstrap_servers: str, shared_data_dir: bool
) -> str | None:
    """Why the local profile's run on ``master`` cannot work, in one line, or None.

    The driver writes every table and checkpoint, but executors read the Delta logs (Spark
    loads a snapshot with a job), and compaction reads and rewrites the tables' files on them:
    the data dir must be the same directory on every node. Executors also read Kafka, so a
    loopback broker address only serves executors on this machine."""
    if executors_on_this_machine(master):
        return None
    brokers = [b.strip().rsplit(":", 1)[0] for b in bootstrap_servers.split(",") if b.strip()]
    loopback = [b for b in brokers if is_loopback(b)]
    if loopback:
        return (
            f"--master {master} runs executors on other machines, which read Kafka: "
            f"--bootstrap-servers {bootstrap_servers} is this machine's loopback; give the "
            "broker's address they can reach"
        )
    if not shared_data_dir:
        return (
            f"--master {master} runs executors on other machines, which cannot read the data "
            f"dir {data_dir} on this one: put it on a filesystem every node mounts at the same "
            "path (NFS, a ReadWriteMany volume) and pass --shared-data-dir (docs/scaling.md)"
        )
    return None


def _jar_list_file() -> Path:
    from delta import __version__ as delta_version

    return cache_dir() / f"spark-{SPARK_VERSION}-delta-{delta_version}-jars.txt"


def resolved_jars() -> list[str]:
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
