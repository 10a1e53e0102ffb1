"""The foundation end to end: real broker -> kafka-python -> Spark's Kafka source -> Delta."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ecomstream import broker
from tests.conftest import Broker, docker_available
from tests.kafka_helpers import read_all, send_all


def _records(topic: str, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"k-{i:05d}".encode(), json.dumps({"i": i, "topic": topic, "text": "é✓"}).encode())
        for i in range(n)
    ]


def test_spark_reads_exactly_what_was_sent_into_delta(spark, kafka_broker: Broker, tmp_path: Path):
    topic = kafka_broker.new_topic()
    sent = _records(topic, 1000)
    send_all(kafka_broker.bootstrap, topic, sent)

    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_broker.bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "offset")
    )
    query = (
        source.writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "_checkpoints" / "t"))
        .trigger(availableNow=True)
        .start(str(tmp_path / "table"))
    )
    try:
        query.awaitTermination()
    finally:
        query.stop()

    rows = spark.read.format("delta").load(str(tmp_path / "table")).collect()
    got = sorted((r.key, r.value) for r in rows)
    assert got == sorted((k.decode(), v.decode()) for k, v in sent)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_broker_restart_keeps_topics_and_records(tmp_path: Path):
    """A second broker of its own: stop it cleanly, restart on the same data dir, read back."""
    port = broker.free_port()
    info = broker.start(tmp_path, port)
    topic = "survives-restart"
    # KAFKA_OPTS reaches the broker's JVM (tests/conftest.py asks for C1 there)
    cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
    assert os.environ["KAFKA_OPTS"].encode() in cmdline, cmdline
    try:
        sent = _records(topic, 300)
        send_all(info.bootstrap, topic, sent)
    finally:
        assert broker.stop(tmp_path) is not None
    assert not broker._pid_alive(info.pid), "the broker JVM outlived stop"
    assert not _port_open(port), "the port is still open after stop"
    assert broker.running(tmp_path) is None

    info2 = broker.start(tmp_path, port)
    try:
        assert sorted(read_all(info2.bootstrap, topic)) == sorted(sent)
    finally:
        broker.stop(tmp_path)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecomstream", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_cli_start_status_stop(tmp_path: Path):
    port = str(broker.free_port())
    started = _cli("kafka", "start", "--port", port, "--data-dir", str(tmp_path))
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"127.0.0.1:{port}"
        status = _cli("kafka", "status", "--data-dir", str(tmp_path))
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout
        again = _cli(
            "kafka", "start", "--port", str(broker.free_port()), "--data-dir", str(tmp_path)
        )
        assert "already running" in _one_clear_line(again)
    finally:
        stopped = _cli("kafka", "stop", "--data-dir", str(tmp_path))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = _cli("kafka", "status", "--data-dir", str(tmp_path))
    assert status.returncode == 3 and "not running" in status.stdout
    nothing = _cli("kafka", "stop", "--data-dir", str(tmp_path))
    assert nothing.returncode == 0 and "no broker running" in nothing.stdout


def test_cli_start_on_a_taken_port(kafka_broker: Broker, tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        line = _one_clear_line(
            _cli("kafka", "start", "--port", str(taken), "--data-dir", str(tmp_path))
        )
    assert f"port {taken}" in line and "in use" in line


def test_cli_start_with_unwritable_data_dir(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_clear_line(_cli("kafka", "start", "--data-dir", str(blocker / "sub")))
    assert "not writable" in line


def test_cli_start_without_java(tmp_path: Path):
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    line = _one_clear_line(
        _cli("kafka", "start", "--data-dir", str(tmp_path / "d"), env={"PATH": str(empty_path)})
    )
    assert "java not found" in line


def test_cli_start_with_maven_central_unreachable_and_empty_cache(tmp_path: Path):
    """mvn in offline mode over an empty local repository is Maven Central out of reach."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_mvn = subprocess.run(["which", "mvn"], capture_output=True, text=True).stdout.strip()
    if not real_mvn:
        pytest.skip("mvn is not installed, so there is no Maven to take offline")
    fake = bin_dir / "mvn"
    fake.write_text(
        f'#!/bin/sh\nexec {real_mvn} -o -Dmaven.repo.local={tmp_path}/empty-repo "$@"\n'
    )
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ECOMSTREAM_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("ECOMSTREAM_KAFKA_JARS", None)
    line = _one_clear_line(_cli("kafka", "start", "--data-dir", str(tmp_path / "d"), env=env))
    assert "could not resolve the Kafka broker's jars from Maven Central" in line


def test_testcontainers_broker_when_docker_exists(tmp_path: Path):
    """The Docker path; where no engine answers, the embedded broker covers the same tests."""
    ok, reason = docker_available()
    if not ok:
        pytest.skip(f"{reason}: the embedded broker runs the same round trip above")
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        bootstrap = container.get_bootstrap_server()
        sent = _records("docker", 50)
        send_all(bootstrap, "docker", sent)
        assert sorted(read_all(bootstrap, "docker")) == sorted(sent)
