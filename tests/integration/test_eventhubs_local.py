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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecomstream import broker, eventhubs
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


def test_a_wrong_key_is_refused_in_bounded_time_and_not_echoed(
    sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecomstream import adapters
    from ecomstream.errors import EcomstreamError, redact

    wrong = _connection_string(sasl_broker.info.sasl_ssl_port or 0, hub=None)
    monkeypatch.setenv("ECOMSTREAM_EVENTHUB_CONNECTION_STRING", wrong)
    monkeypatch.setenv("ECOMSTREAM_KAFKA_SSL_CAFILE", str(sasl_broker.info.ca_file))
    monkeypatch.setenv("ECOMSTREAM_DATABRICKS_LOCAL_PROOF", "1")
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    env = adapters.get("databricks", topic=HUB, data_dir="unused")
    started = time.monotonic()
    with pytest.raises(EcomstreamError, match="refused the connection string") as caught:
        env.preflight()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 45
    key = wrong.split("SharedAccessKey=")[1]
    assert key not in str(caught.value) and key not in repr(env)
    assert redact(wrong) == "***"


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


def test_spark_reads_through_the_databricks_profiles_source_options(
    spark, sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The databricks adapter's options (unshaded JAAS class locally) drive Spark's Kafka
    source over SASL_SSL into the adapter's bronze path and checkpoint."""
    from kafka import KafkaProducer

    from ecomstream import adapters

    topic = f"src-{secrets.token_hex(4)}"
    sent = [(f"o{i}".encode(), json.dumps({"order_id": f"o{i}"}).encode()) for i in range(500)]
    producer = KafkaProducer(**_python_config(sasl_broker), acks="all")  # type: ignore[arg-type]
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()

    for name, value in sasl_broker.env().items():
        if name.startswith("ECOMSTREAM_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    env = adapters.get("databricks", topic=topic, data_dir=str(tmp_path))
    env.preflight()  # type: ignore[attr-defined]
    options = env.kafka_source_options()
    assert options["kafka.bootstrap.servers"] == sasl_broker.info.sasl_ssl_bootstrap
    assert options["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="$ConnectionString"'
    )
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["failOnDataLoss"] == "true"

    bronze = env.table("bronze/orders")
    assert bronze.path == str(tmp_path / "bronze" / "orders")
    source = spark.readStream.format("kafka").options(**options).load()
    query = (
        source.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
        .writeStream.format("delta")
        .option("checkpointLocation", env.checkpoint("bronze"))
        .trigger(availableNow=True)
        .start(bronze.path)
    )
    try:
        query.awaitTermination(180)
    finally:
        query.stop()
    rows = spark.read.format("delta").load(bronze.path).collect()
    assert sorted((r.key, r.value) for r in rows) == sorted(
        (k.decode(), v.decode()) for k, v in sent
    )
    assert (tmp_path / "_checkpoints" / "bronze" / "offsets").is_dir()
    assert assert_secret_absent(sasl_broker, repr(env), dirs=(tmp_path,)) > 5
