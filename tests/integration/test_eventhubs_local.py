"""The Event Hubs path, proven locally: the embedded broker's SASL_SSL listener stands in for
``<namespace>.servicebus.windows.net:9093`` (self-signed certificate from keytool, PLAIN, user
``$ConnectionString``, password an Event-Hubs-shaped connection string), and the databricks
profile's own source options (unshaded JAAS class) read from it.

Every test also checks that the connection string never lands in what was printed or written.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecomstream import broker, eventhubs
from ecomstream.adapters.databricks import PREFLIGHT_TIMEOUT_MS
from ecomstream.contract import CONTRACT_REASON_CODES
from tests.kafka_helpers import read_all

HUB = "orders"


@dataclass
class SaslBroker:
    info: broker.BrokerInfo
    connection_string: str
    data_dir: Path

    @property
    def key(self) -> str:
        """The SharedAccessKey: the part of the secret a leak would most likely show."""
        return self.connection_string.split("SharedAccessKey=")[1].split(";")[0]

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": self.connection_string,
            "ECOMSTREAM_KAFKA_SSL_CAFILE": str(self.info.ca_file),
            "ECOMSTREAM_DATABRICKS_LOCAL_PROOF": "1",
            **extra,
        }


def _connection_string(port: int, hub: str | None = HUB) -> str:
    key = secrets.token_urlsafe(32)
    entity = f";EntityPath={hub}" if hub else ""
    return (
        f"Endpoint=sb://localhost:{port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key}{entity}"
    )


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    data_dir = tmp_path_factory.mktemp("sasl-broker")
    sasl_port = broker.free_port()
    conn = _connection_string(sasl_port, hub=None)
    info = broker.start(data_dir, broker.free_port(), sasl_ssl_port=sasl_port, sasl_password=conn)
    try:
        yield SaslBroker(info=info, connection_string=conn, data_dir=data_dir)
    finally:
        broker.stop(data_dir)


def assert_secret_absent(sb: SaslBroker, *texts: str, dirs: tuple[Path, ...] = ()) -> int:
    """Neither the connection string nor its key in ``texts`` or any file under ``dirs``;
    returns how many files were searched (so a caller can check the search covered something)."""
    needles = [sb.connection_string.encode(), sb.key.encode()]
    for text in texts:
        for needle in needles:
            assert needle.decode() not in text, "the secret was printed"
    searched = 0
    for root in (*dirs, sb.data_dir):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                searched += 1
                for needle in needles:
                    assert needle not in data, f"the secret was written to {path}"
    return searched


def _python_config(sb: SaslBroker, password: str | None = None) -> dict[str, object]:
    conn = eventhubs.parse_connection_string(password or sb.connection_string)
    return eventhubs.kafka_python_config(conn, ca_file=str(sb.info.ca_file))


def test_kafka_python_round_trip_through_sasl_ssl(sasl_broker: SaslBroker) -> None:
    from kafka import KafkaProducer

    config = _python_config(sasl_broker)
    assert config["bootstrap_servers"] == sasl_broker.info.sasl_ssl_bootstrap
    assert config["security_protocol"] == "SASL_SSL"
    topic = f"rt-{secrets.token_hex(4)}"
    sent = [(f"k{i}".encode(), json.dumps({"i": i}).encode()) for i in range(300)]
    producer = KafkaProducer(**config, acks="all")  # type: ignore[arg-type]
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()
    # read back over PLAINTEXT: what went in through SASL_SSL is really on the broker
    assert sorted(read_all(sasl_broker.info.bootstrap, topic)) == sorted(sent)
    assert_secret_absent(sasl_broker)


def test_cli_starts_the_sasl_listener_and_refuses_without_a_password(tmp_path: Path) -> None:
    port, sasl_port = broker.free_port(), broker.free_port()
    base = [
        sys.executable,
        "-m",
        "ecomstream",
        "kafka",
        "start",
        "--port",
        str(port),
        "--sasl-ssl-port",
        str(sasl_port),
        "--data-dir",
        str(tmp_path),
    ]
    env = {k: v for k, v in os.environ.items() if k != "ECOMSTREAM_EVENTHUB_CONNECTION_STRING"}
    refused = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0
    assert (
        refused.stderr.count("\n") == 1
        and "ECOMSTREAM_EVENTHUB_CONNECTION_STRING" in refused.stderr
    )
    assert broker.running(tmp_path) is None


# the producer's fault kinds that silver rejects: one per contract reason code
INVALID_KINDS = CONTRACT_REASON_CODES


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecomstream", *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_producer_and_pipeline_end_to_end_through_the_event_hubs_path(
    spark,
    sasl_broker: SaslBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``ecomstream produce`` with an Event Hubs connection string, then the databricks
    profile's pipeline (the wheel task entry point, all layers, availableNow) over SASL_SSL.
    A run with a wrong key fails first. Neither run prints or writes the secret."""
    from ecomstream import entrypoints

    hub = f"hub-{secrets.token_hex(4)}"
    # a namespace-level string, as Azure's RootManageSharedAccessKey gives: the hub is --topic
    env = sasl_broker.env()
    summary_file = tmp_path / "summary.json"
    produced = _cli(
        "produce",
        "--topic",
        hub,
        "--count",
        "2000",
        "--fault-rate",
        "0.1",
        "--seed",
        "11",
        "--rate",
        "0",
        "--summary-json",
        str(summary_file),
        env=env,
    )
    assert produced.returncode == 0, produced.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["acknowledged"] == 2000 and summary["failed"] == 0

    # a failing run: the right endpoint, a wrong key
    wrong = _connection_string(sasl_broker.info.sasl_ssl_port or 0, hub=hub)
    failed = _cli(
        "pipeline",
        "--profile",
        "databricks",
        "--topic",
        hub,
        "--data-dir",
        str(tmp_path / "failed"),
        "--once",
        env=sasl_broker.env(ECOMSTREAM_EVENTHUB_CONNECTION_STRING=wrong),
    )
    assert failed.returncode != 0
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "refused the connection string" in failed.stderr
    # the bounded preflight gave up, not kafka-python's endless retry (which _cli's timeout
    # would have cut short with no line at all)
    assert f"within {PREFLIGHT_TIMEOUT_MS // 1000}s" in failed.stderr, failed.stderr
    assert wrong.split("SharedAccessKey=")[1].split(";")[0] not in failed.stderr + failed.stdout

    # the succeeding run, in this process so it reuses the test session's JVM
    for name, value in env.items():
        if name.startswith("ECOMSTREAM_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    data = tmp_path / "data"
    code = entrypoints.run(
        entrypoints.LAYERS,
        [
            "--profile=databricks",
            f"--topic={hub}",
            "--trigger=available-now",
            f"--data-dir={data}",
            "--max-offsets-per-trigger=100000",
        ],
    )
    assert code == 0
    printed = capfd.readouterr()

    def count(key: str) -> int:
        return spark.read.format("delta").load(str(data / key)).count()

    invalid = sum(summary["faults"].get(kind, 0) for kind in INVALID_KINDS)
    assert count("bronze/orders") == summary["acknowledged"]
    assert count("silver/quarantine") == invalid
    assert count("silver/orders") == (
        summary["acknowledged"] - invalid - summary["faults"].get("duplicate", 0)
    )
    assert count("gold/category_sales") > 0
    bronze_topics = spark.read.format("delta").load(str(data / "bronze/orders"))
    assert {r.kafka_topic for r in bronze_topics.select("kafka_topic").distinct().collect()} == {
        hub
    }
    assert (data / "_checkpoints" / "medallion" / "offsets").is_dir()

    searched = assert_secret_absent(
        sasl_broker,
        produced.stdout,
        produced.stderr,
        failed.stdout,
        failed.stderr,
        printed.out,
        printed.err,
        dirs=(tmp_path,),
    )
    assert searched > 20  # tables, checkpoints, logs, the summary: not an empty search
