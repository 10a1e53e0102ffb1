"""The driver JVM's class archive (class_archive.py): named for its JVM and class path, used only
when whole, and mapped by the sessions this suite starts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ecomstream import class_archive


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ECOMSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _jar(tmp_path: Path, name: str) -> Path:
    jar = tmp_path / name
    jar.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    return jar


def test_the_archive_is_named_for_the_jars_and_used_only_once_written(cache: Path, tmp_path):
    delta, kafka = _jar(tmp_path, "delta.jar"), _jar(tmp_path, "kafka.jar")
    archive = class_archive.path_for([str(delta), str(kafka)])
    assert archive is not None and archive.parent == cache / "cds"
    # another jar list, or the same jar changed, is another class path: another archive
    assert class_archive.path_for([str(delta)]) != archive
    os.utime(kafka, ns=(1, 1))
    assert class_archive.path_for([str(delta), str(kafka)]) != archive
    archive = class_archive.path_for([str(delta), str(kafka)])
    assert archive is not None

    options = "-XX:+ExitOnOutOfMemoryError"
    assert class_archive.java_options(options, [str(delta), str(kafka)]) == options  # not yet
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    with_archive = class_archive.java_options(options, [str(delta), str(kafka)])
    assert with_archive == f"{options} -XX:SharedArchiveFile={archive}"
    # a user's own choice about class sharing stands alone
    for own in ("-Xshare:off", "-XX:SharedArchiveFile=/x.jsa", "-XX:ArchiveClassesAtExit=/y"):
        assert class_archive.java_options(own, [str(delta), str(kafka)]) == own


def test_only_a_whole_archive_counts_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cut archive crashes every JVM that maps it (SIGBUS): the check that keeps one from
    being put in place must tell it from a whole one."""
    if shutil.which("javac") is None or shutil.which("jar") is None:
        pytest.skip("no javac/jar on PATH to build a class to archive (the JDK is Java 17+)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "Hello.java").write_text(
        'public class Hello { public static void main(String[] a) { System.out.println("hi"); } }'
    )
    subprocess.run(["javac", "-d", str(src), str(src / "Hello.java")], check=True)
    jar = tmp_path / "hello.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(src), "Hello.class"], check=True)
    archive = tmp_path / "hello.jsa"
    done = subprocess.run(
        ["java", f"-XX:ArchiveClassesAtExit={archive}", "-cp", str(jar), "Hello"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "hi" and archive.is_file(), done.stderr
    assert class_archive._whole(archive)

    cut = tmp_path / "cut.jsa"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    assert not class_archive._whole(cut)
    # the probe's crashed JVM left its hs_err_pid<n>.log in a scratch directory, not here
    assert list(caller.iterdir()) == []
    assert not class_archive._whole(tmp_path / "missing.jsa")


def test_the_test_session_maps_the_archive_setup_wrote(spark, spark_log: Path):
    """scripts/setup.sh (python -m ecomstream.warmup) writes the archive before the tests; the
    session fixture's JVM was started with it and HotSpot took it (it warns in the Spark log
    when it cannot: another JVM, another class path, a damaged file)."""
    from ecomstream.spark import resolved_jars

    archive = class_archive.path_for(resolved_jars())
    assert archive is not None and archive.is_file(), (
        f"no class archive at {archive}: scripts/setup.sh writes it (python -m ecomstream.warmup)"
    )
    jvm = spark.sparkContext._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={archive}" in args, args
    assert spark_log.is_file()
    assert "[cds" not in spark_log.read_text(errors="replace"), spark_log
