"""Jars from Maven Central, resolved once and cached under :func:`ecomstream.paths.cache_dir`.

The broker's jars are resolved with Maven (``mvn dependency:copy-dependencies`` on a generated
POM), which follows Kafka's POMs exactly. ``ECOMSTREAM_KAFKA_JARS`` may point at a folder of
jars instead (an offline machine, a Kafka distribution's ``libs/``).
Spark's own packages (Delta, the Kafka connector) are resolved by Spark's Ivy at session start;
see :mod:`ecomstream.spark`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ecomstream.errors import EcomstreamError
from ecomstream.paths import cache_dir

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

# kafka_2.13 holds kafka.Kafka and the StorageTool; kafka-tools the ProducerPerformance tool the
# benchmarks compare against; Kafka's POM leaves out a logging binding, hence log4j.
KAFKA_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ecomstream.local</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def kafka_jar_dir() -> Path:
    """A folder holding every jar the broker needs, resolving it first if not cached."""
    explicit = os.environ.get("ECOMSTREAM_KAFKA_JARS")
    if explicit:
        path = Path(explicit).expanduser()
        if not any(path.glob("kafka_2.13-*.jar")):
            raise EcomstreamError(f"ECOMSTREAM_KAFKA_JARS={path} holds no kafka_2.13-*.jar")
        return path
    target = cache_dir() / f"kafka-{KAFKA_VERSION}" / "jars"
    marker = target.parent / ".complete"
    if marker.exists():
        return target
    _resolve_with_maven(KAFKA_ARTIFACTS, target)
    marker.write_text("ok\n")
    return target


def kafka_classpath() -> str:
    return str(kafka_jar_dir() / "*")


def _resolve_with_maven(artifacts: tuple[tuple[str, str, str], ...], target: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EcomstreamError(
            "mvn not found: Maven resolves the Kafka broker's jars from Maven Central once "
            "(install Maven, or set ECOMSTREAM_KAFKA_JARS to a folder of Kafka jars)"
        )
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in artifacts
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcomstreamError(
            f"cache dir {target.parent} is not writable: {exc.strerror}"
        ) from None
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=target.parent))
    try:
        pom = staging / "pom.xml"
        pom.write_text(_POM.format(deps=deps))
        done = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging / 'jars'}",
            ],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
            detail = lines[0].strip() if lines else f"mvn exited {done.returncode}"
            raise EcomstreamError(
                f"could not resolve the Kafka broker's jars from Maven Central: {detail[:240]}"
            )
        if target.exists():
            shutil.rmtree(target)
        (staging / "jars").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
