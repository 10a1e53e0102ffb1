"""A class-data-sharing archive for the driver JVM (JDK's AppCDS, dynamic archive).

A Spark driver loads some 15,000 classes from a few hundred jars at every start: parsed,
verified, linked each time. ``python -m ecomstream.warmup`` (the setup step) runs the pipeline's
own work once in a JVM started with ``-XX:ArchiveClassesAtExit`` and keeps what it loaded; every
later local session maps that archive instead (``-XX:SharedArchiveFile``). Measured on the 2-core
machine: a one-record ``pipeline --once`` 19.1 s -> 13.0 s (benchmarks/bench_startup.py).

An archive is only valid for the JVM and the class path that wrote it, so its name carries a
digest of both (the java binary, Spark's jars, the Delta and Kafka jars). A JDK or package
upgrade names a new archive; until the next warm-up writes it, sessions start without one. A
stale or damaged file costs nothing either: HotSpot checks an archive before mapping it and,
failing that, starts as without (``-Xshare:auto``), with a warning in the Spark log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ecomstream.paths import cache_dir

# What a user's own options may already say about class sharing: then theirs stand alone.
_CDS_OPTIONS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")


def _java() -> Path | None:
    """The java Spark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def _spark_jars_dir() -> Path | None:
    with contextlib.suppress(ImportError):
        import pyspark

        jars = Path(pyspark.__file__).parent / "jars"
        return jars if jars.is_dir() else None
    return None


def path_for(extra_jars: Sequence[str]) -> Path | None:
    """Where the archive for this java, Spark and ``extra_jars`` lives (whether or not it
    exists yet); None when the java or Spark's jars cannot be found."""
    java, jars = _java(), _spark_jars_dir()
    if java is None or jars is None:
        return None
    digest = hashlib.sha256()
    for path in [java, *sorted(jars.glob("*.jar")), *(Path(j) for j in extra_jars)]:
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return cache_dir() / "cds" / f"driver-{digest.hexdigest()[:16]}.jsa"


def java_options(options: str, extra_jars: Sequence[str]) -> str:
    """The driver's Java ``options`` with the archive to map, when one was written for this
    class path and the options do not already decide class sharing."""
    if any(flag in options for flag in _CDS_OPTIONS):
        return options
    archive = path_for(extra_jars)
    if archive is None or not archive.is_file():
        return options
    return f"{options} -XX:SharedArchiveFile={archive}".strip()


def build(extra_jars: Sequence[str], exercise: object) -> Path | None:
    """Start a session that records its classes, run ``exercise(spark)`` in it, end its JVM
    so that the archive is written, and move the archive into place (atomically: a session
    starting meanwhile maps the old one or none). Returns the archive, or None if the JVM wrote
    none."""
    from ecomstream.spark import local_session

    end_jvm()  # a JVM this process started earlier would be joined, not started anew
    target = path_for(extra_jars)
    if target is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".building-", suffix=".jsa")
    os.close(fd)
    os.unlink(name)  # the JVM creates it at exit
    partial = Path(name)
    try:
        spark = local_session(
            "ecomstream-class-archive",
            extra_conf={"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={partial}"},
        )
        exercise(spark)  # type: ignore[operator]
        if end_jvm() != 0 or not _whole(partial):  # the JVM writes the archive as it exits
            return None
        partial.replace(target)
        return target
    except Exception:  # e.g. a non-empty directory on the class path: HotSpot cannot archive
        with contextlib.suppress(Exception):
            end_jvm(timeout=60)
        return None
    finally:
        partial.unlink(missing_ok=True)


def _whole(archive: Path) -> bool:
    """The archive maps: a JVM started with it reads its header and regions (and, finding a
    class path other than the one it was written for, starts without it). A cut file would
    crash every JVM that maps it (SIGBUS), so a JVM killed or out of disk while writing it must
    not leave one in place."""
    java = _java()
    if java is None or not archive.is_file() or archive.stat().st_size == 0:
        return False
    # in a directory of its own: a JVM that crashes on a cut archive writes hs_err_pid<n>.log
    # into its working directory, which would otherwise be the caller's
    with (
        contextlib.suppress(OSError, subprocess.SubprocessError),
        tempfile.TemporaryDirectory(prefix="ecomstream-cds-probe-") as scratch,
    ):
        probe = subprocess.run(
            [str(java), f"-XX:SharedArchiveFile={archive}", "-version"],
            capture_output=True, timeout=120, check=False, cwd=scratch,
        )  # fmt: skip
        return probe.returncode == 0
    return False


def end_jvm(timeout: float = 300) -> int | None:
    """Stop this process's session and end its JVM (Spark's gateway server exits when its stdin
    closes), waiting for the exit: a JVM that writes a class archive writes it then. Returns
    the JVM's exit code (None: this process had none)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return None
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is None:
        return None
    with contextlib.suppress(OSError):
        proc.stdin.close()
    return proc.wait(timeout=timeout)
