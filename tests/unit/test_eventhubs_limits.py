"""Every Event Hubs client the project makes stays inside Microsoft's table, row by row.

Microsoft, "Apache Kafka client configurations for Azure Event Hubs" (learn.microsoft.com,
event-hubs/apache-kafka-configurations); docs/databricks.md quotes the rows with the
project's value for each. No broker here: the settings each client is built with.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any, ClassVar

import pytest

from ecomstream import adapters, broker, eventhubs
from ecomstream.cli import main
from ecomstream.errors import EcomstreamError
from ecomstream.producer import sender as sender_module
from ecomstream.producer.oversize import OversizeGuard
from ecomstream.producer.runner import run
from ecomstream.producer.sender import KafkaPythonSender, SenderSettings, _confluent_config

KEY = "Zm9vYmFyU2VjcmV0S2V5MTIzNDU2Nzg5MGFiY2RlZg=="
CONN = (
    "Endpoint=sb://ecomstream-ns.servicebus.windows.net/;"
    f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
)
# Microsoft's bounds
AZURE_IDLE_MS = 240_000
SERVICE_MAX_REQUEST = 1_046_528
MIN_REQUEST_TIMEOUT_MS = 20_000


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ECOMSTREAM_") or name == "DATABRICKS_RUNTIME_VERSION":
            monkeypatch.delenv(name)


def _security() -> dict[str, Any]:
    config = eventhubs.kafka_python_config(eventhubs.parse_connection_string(CONN))
    config.pop("bootstrap_servers")
    return config


class _FakeKafkaProducer:
    """Records the settings kafka-python's producer would get."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        type(self).seen = config

    def partitions_for(self, topic: str) -> set[int]:
        return {0}


def _kafka_python_producer(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> dict[str, Any]:
    import kafka

    monkeypatch.setattr(kafka, "KafkaProducer", _FakeKafkaProducer)
    KafkaPythonSender(SenderSettings("ns.servicebus.windows.net:9093", "orders", **settings))
    return dict(_FakeKafkaProducer.seen)


def _spark_options() -> dict[str, str]:
    def secrets(scope: str, key: str) -> str:
        return CONN

    import os

    os.environ["DATABRICKS_RUNTIME_VERSION"] = "17.3"
    try:
        env = adapters.get(
            "databricks", topic="orders", catalog="main", schema="shop", secrets=secrets
        )
        return env.kafka_source_options()
    finally:
        del os.environ["DATABRICKS_RUNTIME_VERSION"]


def test_kafka_python_clients_probes_and_producer_are_inside_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = _security()  # the pipeline's preflight, offset and lag probes, the producer
    assert common["metadata_max_age_ms"] < AZURE_IDLE_MS
    assert common["connections_max_idle_ms"] < AZURE_IDLE_MS
    assert common["request_timeout_ms"] > MIN_REQUEST_TIMEOUT_MS
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in common["socket_options"]

    config = _kafka_python_producer(monkeypatch, security=common, compression="gzip")
    assert config["max_request_size"] == 1_000_000 < SERVICE_MAX_REQUEST
    assert config["batch_size"] <= config["max_request_size"]
    assert config["metadata_max_age_ms"] < AZURE_IDLE_MS
    assert config["connections_max_idle_ms"] < AZURE_IDLE_MS
    assert config["request_timeout_ms"] >= 60_000
    assert config["compression_type"] == "gzip"
    assert config["acks"] == "all" and config["enable_idempotence"] is True
    assert config.get("retries", float("inf")) > 0
    assert config["delivery_timeout_ms"] >= config["linger_ms"] + config["request_timeout_ms"]


def test_librdkafka_producer_is_inside_the_table() -> None:
    config = _confluent_config(
        SenderSettings("ns:9093", "orders", security=_security(), compression="gzip")
    )
    # librdkafka's message.max.bytes is its request limit (one partition's batch per request)
    assert config["message.max.bytes"] == 1_000_000 < SERVICE_MAX_REQUEST
    assert config["batch.size"] <= config["message.max.bytes"]
    assert config["metadata.max.age.ms"] < AZURE_IDLE_MS
    assert config["connections.max.idle.ms"] < AZURE_IDLE_MS
    assert config["socket.keepalive.enable"] is True
    assert config["request.timeout.ms"] >= 60_000
    assert config["compression.type"] in eventhubs.COMPRESSIONS
    assert config["partitioner"] == "murmur2_random"  # keyed orders: the Java client's choice
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert (
        config["security.protocol"] == "SASL_SSL" and config["sasl.username"] == "$ConnectionString"
    )


def test_sparks_kafka_source_is_inside_the_table() -> None:
    options = _spark_options()
    assert int(options["kafka.metadata.max.age.ms"]) < AZURE_IDLE_MS
    assert int(options["kafka.connections.max.idle.ms"]) < AZURE_IDLE_MS
    assert int(options["kafka.request.timeout.ms"]) > MIN_REQUEST_TIMEOUT_MS
    assert 6_000 <= int(options["kafka.session.timeout.ms"]) <= 300_000


def test_the_local_endpoint_keeps_its_own_larger_limits() -> None:
    config = _confluent_config(SenderSettings("127.0.0.1:9092", "orders"))
    assert config["message.max.bytes"] == sender_module.MAX_REQUEST_BYTES == 2 * 1024 * 1024
    assert "socket.keepalive.enable" not in config and "security.protocol" not in config


def test_a_shortened_idle_limit_keeps_every_client_under_the_rehearsal_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(eventhubs.IDLE_ENV, "6000")
    server = int(eventhubs.broker_overrides()["connections.max.idle.ms"])
    assert server == 6000
    clients = [
        _security()["connections_max_idle_ms"],
        _security()["metadata_max_age_ms"],
        _confluent_config(SenderSettings("ns:9093", "o", security=_security()))[
            "connections.max.idle.ms"
        ],
        _confluent_config(SenderSettings("ns:9093", "o", security=_security()))[
            "metadata.max.age.ms"
        ],
        int(_spark_options()["kafka.connections.max.idle.ms"]),
        int(_spark_options()["kafka.metadata.max.age.ms"]),
    ]
    assert all(0 < ms < server for ms in clients), clients
    # unset: Azure's own limit and Microsoft's recommended 180,000 on the client side
    monkeypatch.delenv(eventhubs.IDLE_ENV)
    assert eventhubs.service_idle_ms() == AZURE_IDLE_MS
    assert eventhubs.client_idle_ms() == 180_000


@pytest.mark.parametrize("value", ["soon", "999", "300000"])
def test_a_bad_idle_limit_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(eventhubs.IDLE_ENV, value)
    with pytest.raises(EcomstreamError, match=eventhubs.IDLE_ENV):
        eventhubs.client_idle_ms()


def test_the_rehearsal_broker_properties_enforce_event_hubs_limits(tmp_path: Any) -> None:
    text = broker.with_overrides(
        broker._server_properties(9092, 9093, tmp_path, 2),
        eventhubs.broker_overrides(service_ms=5000),
    )
    pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a key twice: which one wins would be an accident"
    props = dict(pairs)
    assert props["socket.request.max.bytes"] == "1046528"
    assert props["message.max.bytes"] == "1000000"
    assert props["connections.max.idle.ms"] == "5000"
    assert props["auto.create.topics.enable"] == "false"
    plain = dict(
        line.split("=", 1)
        for line in broker._server_properties(9092, 9093, tmp_path, 2).splitlines()
        if "=" in line
    )
    assert plain["auto.create.topics.enable"] == "true"
    assert plain["message.max.bytes"] == str(broker.MAX_MESSAGE_BYTES)
    assert "socket.request.max.bytes" not in plain


class _Memory:
    def __init__(self) -> None:
        self.sent = self.failed = self.timed_out = 0
        self.errors: Counter[str] = Counter()
        self.records: list[tuple[bytes | None, bytes]] = []

    @property
    def acknowledged(self) -> int:
        return self.sent

    def send_batch(self, records: Any) -> None:
        self.records += [(k, v) for k, v, _ in records]
        self.sent += len(records)

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        return 0

    def close(self) -> None:
        pass


class _Generator:
    """Small orders, and every 1,000th one over Event Hubs' limit."""

    seed = 1

    def __init__(self) -> None:
        self.n = 0

    def batch(self, n: int) -> list[tuple[bytes, bytes, None]]:
        out = []
        for _ in range(n):
            self.n += 1
            size = eventhubs.MAX_EVENT_BYTES + 1 if self.n % 1000 == 0 else 300
            out.append((f"k{self.n:06d}".encode(), b"x" * (size - 7), None))
        return out


def test_an_event_over_the_limit_is_refused_before_it_is_sent_with_one_summary_line() -> None:
    inner = _Memory()
    summary = run(_Generator(), OversizeGuard(inner, eventhubs.MAX_EVENT_BYTES), count=5_000)
    assert (summary.sent, summary.acknowledged, summary.failed) == (5_000, 4_995, 5)
    assert len(inner.records) == 4_995
    assert all(len(k or b"") + len(v) <= eventhubs.MAX_EVENT_BYTES for k, v in inner.records)
    # the others went in order, none lost around a refused one
    assert [k for k, _ in inner.records] == [
        f"k{i:06d}".encode() for i in range(1, 5_001) if i % 1000
    ]
    error_lines = [line for line in summary.text().splitlines() if line.startswith("error")]
    assert error_lines == [
        "error x5: event larger than the Event Hubs limit (999,488 bytes of key + value): "
        "refused by the producer, not sent"
    ]
    # exactly at the limit still goes
    guard = OversizeGuard(_Memory(), eventhubs.MAX_EVENT_BYTES)
    guard.send(b"k", b"x" * (eventhubs.MAX_EVENT_BYTES - 1))
    assert (guard.sent, guard.failed) == (1, 0)


def test_event_hubs_takes_gzip_or_none_and_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["produce", "--eventhub-connection-string", CONN, "--topic", "o", "--compression", "lz4"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "accepts only none or gzip" in err and KEY not in err


def test_create_topic_without_a_broker_or_with_a_bad_count_is_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["kafka", "create-topic", "--topic", "orders", "--data-dir", str(tmp_path)]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no broker running for data dir" in err
    assert main([*base, "--partitions", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--partitions 0 must be from 1 to 1024" in err


def test_a_delivery_timeout_kafka_python_cannot_take_with_event_hubs_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["produce", "--eventhub-connection-string", CONN, "--topic", "o"]
    assert main([*argv, "--client", "kafka-python", "--delivery-timeout", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 60.02s (or --client confluent)" in err


def test_the_job_clusters_close_idle_kafka_consumers_before_event_hubs_does() -> None:
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    jobs = yaml.safe_load(
        (Path(__file__).parents[2] / "resources/ecomstream_pipeline.job.yml").read_text()
    )["resources"]["jobs"]
    wanted = eventhubs.spark_session_conf()
    assert wanted == {
        "spark.kafka.consumer.cache.timeout": "22500ms",
        "spark.kafka.consumer.cache.evictorThreadRunInterval": "11250ms",
    }
    # a bootstrap connection idle for the clients' limit, then evicted within two runs
    assert eventhubs.client_idle_ms() + 22_500 + 2 * 11_250 < AZURE_IDLE_MS
    for name, job in jobs.items():
        for cluster in job["job_clusters"]:
            conf = cluster["new_cluster"]["spark_conf"]
            assert {k: conf.get(k) for k in wanted} == wanted, name
