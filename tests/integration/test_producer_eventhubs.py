"""``ecomstream produce`` through the Event Hubs path, proven locally.

The embedded broker's SASL_SSL listener stands in for ``<ns>.servicebus.windows.net:9093``
(PLAIN, user ``$ConnectionString``, password an Event-Hubs-shaped connection string, a
self-signed CA given by ``ECOMSTREAM_KAFKA_SSL_CAFILE``) on a broker that enforces Event Hubs'
limits. Both clients send with nothing but the connection string; the records are read back
over PLAINTEXT; the secret is never printed. A hub that does not exist is one line, at once.
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecomstream import broker
from tests.kafka_helpers import read_all

if "sasl_ssl_port" not in inspect.signature(broker.start).parameters:
    pytest.skip(
        "this broker build has no SASL_SSL listener (broker.start(sasl_ssl_port=...))",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[broker.BrokerInfo, str]]:
    data_dir = tmp_path_factory.mktemp("producer-sasl")
    sasl_port = broker.free_port()
    key = secrets.token_urlsafe(32)
    conn = (
        f"Endpoint=sb://localhost:{sasl_port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key}"
    )
    info = broker.start(
        data_dir,
        broker.free_port(),
        sasl_ssl_port=sasl_port,
        sasl_password=conn,
        heap="384m",
        event_hubs=True,  # Event Hubs' limits, no topic created on first use
    )
    try:
        yield info, conn
    finally:
        broker.stop(data_dir)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_produce_with_only_a_connection_string(
    sasl: tuple[broker.BrokerInfo, str], tmp_path: Path, client: str
) -> None:
    info, conn = sasl
    hub = f"orders-{secrets.token_hex(4)}"
    broker.create_topic(info.data_dir, hub, 2)  # as az eventhubs eventhub create would
    key = conn.split("SharedAccessKey=")[1]
    env = {
        **os.environ,
        # the broker accepts exactly the string it was started with (no EntityPath), as Event
        # Hubs accepts exactly its own: the hub comes from --topic here (EntityPath: unit tests)
        "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": conn,
        "ECOMSTREAM_KAFKA_SSL_CAFILE": str(info.ca_file),
    }
    env.pop("ECOMSTREAM_BOOTSTRAP_SERVERS", None)
    env.pop("ECOMSTREAM_TOPIC", None)
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecomstream",
            "produce",
            "--count",
            "500",
            "--rate",
            "0",
            "--seed",
            "3",
            "--fault-rate",
            "0.1",
            "--client",
            client,
            "--progress",
            "log",
            "--summary-json",
            str(summary_path),
            "--topic",
            hub,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in (done.stdout, done.stderr, summary_path.read_text()):
        assert key not in text and conn not in text
    summary = json.loads(summary_path.read_text())
    assert summary["acknowledged"] == 500 and summary["topic"] == hub
    assert len(read_all(info.bootstrap, hub)) == 500  # over PLAINTEXT: really on the broker


def test_a_wrong_key_fails_in_bounded_time_without_echoing_it(
    sasl: tuple[broker.BrokerInfo, str],
) -> None:
    info, conn = sasl
    wrong = secrets.token_urlsafe(32)
    bad = conn.split("SharedAccessKey=")[0] + f"SharedAccessKey={wrong};EntityPath=orders"
    env = {
        **os.environ,
        "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": bad,
        "ECOMSTREAM_KAFKA_SSL_CAFILE": str(info.ca_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "produce", "--count", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert wrong not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_hub_that_does_not_exist_is_one_line_before_any_order(
    sasl: tuple[broker.BrokerInfo, str],
) -> None:
    info, conn = sasl
    env = {
        **os.environ,
        "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": conn,
        "ECOMSTREAM_KAFKA_SSL_CAFILE": str(info.ca_file),
    }
    hub = f"nohub-{secrets.token_hex(4)}"
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "produce", "--count", "5", "--topic", hub],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"ecomstream: error: event hub {hub!r} does not exist in namespace 'localhost' (or the "
        "connection string may not read it): Event Hubs creates none on first use; create it "
        "first (az eventhubs eventhub create, or on the rehearsal broker ecomstream kafka "
        "create-topic)"
    ]
    assert hub not in _topics(info)  # and asking created none


def _topics(info: broker.BrokerInfo) -> set[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=info.bootstrap)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()
