"""The Event Hubs path, proven locally: the embedded broker's SASL_SSL listener stands in for
``<namespace>.servicebus.windows.net:9093`` (self-signed certificate from keytool, PLAIN, user
``$ConnectionString``, password an Event-Hubs-shaped connection string), and the databricks
profile's own source options (unshaded JAAS class) read from it.

The broker is Event Hubs-shaped (``broker.start(event_hubs=True)``): it closes the connection
of a request over 1,046,528 bytes, refuses a record batch over 1 MB, creates no topic on first
use (each test creates its hub, as ``az eventhubs eventhub create`` would) and closes a
connection idle for IDLE_MS, shortened from Azure's 240 s so a quiet period fits in a test;
the clients read the same shortened value and close theirs at 3/4 of it. Its log names each
connection that authenticated on the SASL_SSL listener and each one the server closed, which
is how the tests tell a reconnect from a reconnect storm.

Every test also checks that the connection string never lands in what was printed or written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecomstream import broker, eventhubs
from ecomstream.adapters.databricks import PREFLIGHT_TIMEOUT_MS
from ecomstream.contract import CONTRACT_REASON_CODES
from tests.kafka_helpers import read_all

HUB = "orders"
# the rehearsal broker's idle limit in these tests (Azure's is 240,000 ms); clients: 6,000
IDLE_MS = 8_000
PARTITIONS = 4


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
            eventhubs.IDLE_ENV: str(IDLE_MS),
            **extra,
        }

    def create_hub(self, prefix: str, partitions: int = PARTITIONS) -> str:
        """A new event hub: the broker creates none on first use, as Event Hubs does not."""
        hub = f"{prefix}-{secrets.token_hex(4)}"
        broker.create_topic(self.data_dir, hub, partitions)
        return hub

    def log_mark(self) -> BrokerLog:
        path = broker.kafka_dir(self.data_dir) / "broker.log"
        return BrokerLog(path, path.stat().st_size)


@dataclass
class BrokerLog:
    """The broker's log from a mark on, counted (the Event Hubs-shaped broker logs each SASL
    connection that authenticated and each connection the server closed)."""

    path: Path
    start: int

    def text(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def counts(self) -> dict[str, int]:
        """On the SASL_SSL listener (its network threads are named after it): connections
        authenticated, connections the server closed on an error (a request over the limit is
        one) and idle ones it closed, those also by the client software that held them
        (``idle:<name>``, from the line the same thread logs next)."""
        counts: Counter[str] = Counter()
        closing: set[str] = set()  # threads that just closed an idle connection
        for line in self.text().splitlines():
            match = _LINE.match(line)
            if match is None or "SASL_SSL" not in match["thread"]:
                continue
            thread, message = match["thread"], match["message"]
            if "Successfully authenticated with" in message:
                counts["connections"] += 1
            elif "Unexpected error from" in message:
                counts["closed_on_error"] += 1
            elif "About to close the idle connection" in message:
                counts["closed_idle"] += 1
                closing.add(thread)
            elif thread in closing and (software := _SOFTWARE.search(message)):
                closing.discard(thread)
                counts[f"idle:{software[1]}"] += 1
        return {"connections": 0, "closed_on_error": 0, "closed_idle": 0, **counts}


_LINE = re.compile(r"^\[[^\]]*\] [A-Z]+ \[(?P<thread>[^\]]*)\] (?P<message>.*)$")
_SOFTWARE = re.compile(r"ClientInformation\(softwareName=([^,]+),")


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
    # one value for both sides, as in production: the broker's idle limit, and every client
    # (in this process and the CLI runs) closes its idle connections at 3/4 of it
    previous = os.environ.get(eventhubs.IDLE_ENV)
    os.environ[eventhubs.IDLE_ENV] = str(IDLE_MS)
    try:
        info = broker.start(
            data_dir,
            broker.free_port(),
            sasl_ssl_port=sasl_port,
            sasl_password=conn,
            event_hubs=True,
        )
        try:
            yield SaslBroker(info=info, connection_string=conn, data_dir=data_dir)
        finally:
            broker.stop(data_dir)
    finally:
        if previous is None:
            os.environ.pop(eventhubs.IDLE_ENV, None)
        else:
            os.environ[eventhubs.IDLE_ENV] = previous


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
    topic = sasl_broker.create_hub("rt", partitions=1)
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

    hub = sasl_broker.create_hub("hub")
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


# -- what Event Hubs enforces, and the clients inside it -------------------------------------
def test_the_rehearsal_broker_enforces_what_event_hubs_enforces(sasl_broker: SaslBroker) -> None:
    """Each limit refuses what Apache Kafka's defaults let through. The broker applies them to
    every listener (Kafka 4.1 has no per-listener form of either), so the raw checks use the
    PLAINTEXT one: a SASL_SSL connection is refused larger requests before it authenticates."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import MessageSizeTooLargeError

    info = sasl_broker.info
    mark = sasl_broker.log_mark()
    # opened first, left idle: the server closes them once its idle limit has passed (the
    # SASL_SSL one also proves the log count the other tests rely on)
    idle = socket.create_connection(("127.0.0.1", info.port))
    idle_sasl = socket.create_connection(("127.0.0.1", info.sasl_ssl_port or 0))
    # Kafka names a connection <its address>-<the client's address>-<n>: these two, exactly (a
    # client an earlier test left idle on the same broker may be closed in the same wait)
    idle_id = f"127.0.0.1:{info.port}-127.0.0.1:{idle.getsockname()[1]}-"
    idle_sasl_id = f"127.0.0.1:{info.sasl_ssl_port}-127.0.0.1:{idle_sasl.getsockname()[1]}-"

    # one byte over the request limit: the connection is closed, nothing is answered
    over = socket.create_connection(("127.0.0.1", info.port))
    over.settimeout(30)
    over.sendall(struct.pack(">i", eventhubs.SERVICE_MAX_REQUEST_BYTES + 1) + b"\0" * 64)
    assert _closed_by_peer(over)

    # no topic on first use: a metadata request for an unknown hub creates none
    consumer = KafkaConsumer(bootstrap_servers=info.bootstrap)
    try:
        missing = f"nohub-{secrets.token_hex(4)}"
        assert not consumer.partitions_for_topic(missing)
        assert missing not in consumer.topics()
    finally:
        consumer.close()

    # a record over 1 MB inside a request under the limit: refused by the broker, not stored
    # (kafka-python's own size check, 1,040,000 here, would raise from send() itself)
    hub = sasl_broker.create_hub("big", partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=info.bootstrap, max_request_size=1_040_000, acks="all", retries=0
    )
    try:
        future = producer.send(hub, value=b"x" * 1_010_000)
        with pytest.raises(MessageSizeTooLargeError):
            future.get(timeout=30)
    finally:
        producer.close()
    assert read_all(info.bootstrap, hub) == []

    # the idle wait is the condition under test, bounded well past the limit
    idle.settimeout(IDLE_MS / 1000 * 5)
    assert _closed_by_peer(idle)
    idle_sasl.settimeout(IDLE_MS / 1000 * 5)
    assert _closed_by_peer(idle_sasl)
    text = mark.text()
    assert f"About to close the idle connection from {idle_id}" in text
    assert f"About to close the idle connection from {idle_sasl_id}" in text
    # the SASL_SSL one is among the idle closes the other tests count
    assert mark.counts()["closed_idle"] >= 1
    assert "InvalidReceiveException: Invalid receive (size = 1046529 larger than 1046528)" in text


def _closed_by_peer(sock: socket.socket) -> bool:
    """The other end closed ``sock`` (a FIN, or a reset when it left bytes unread); False when
    the socket's timeout passed first."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


@pytest.mark.parametrize(("client", "count"), [("confluent", 30_000), ("kafka-python", 10_000)])
def test_full_speed_requests_stay_under_the_limit_and_an_oversize_event_is_refused(
    sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch, client: str, count: int
) -> None:
    """Uncompressed 512 KiB batches on four partitions at full speed: with the old 2 MiB request
    limit kafka-python packed several into one ~2 MB request and the broker (as Event Hubs)
    closed the connection under it, over and over. Now: no closed connection, every order
    acknowledged once, and the one event over the limit refused before it was sent."""
    from ecomstream.cli import build_parser
    from ecomstream.producer.cli import open_for, settings_from_args
    from ecomstream.producer.generator import OrderGenerator

    for name, value in sasl_broker.env().items():
        if name.startswith("ECOMSTREAM_"):
            monkeypatch.setenv(name, value)
    hub = sasl_broker.create_hub(f"speed-{client}")
    argv = ["produce", "--topic", hub, "--client", client, "--compression", "none"]
    settings = settings_from_args(build_parser().parse_args([*argv, "--linger-ms", "100"]))
    orders = [(k, v) for k, v, _ in OrderGenerator(5).batch(count)]
    oversize = (b"too-big", b"x" * eventhubs.MAX_EVENT_BYTES)
    mark = sasl_broker.log_mark()
    sender = open_for(settings)
    try:
        half = count // 2
        sender.send_batch([(k, v, None) for k, v in orders[:half]])
        sender.send_batch([(*oversize, None)])
        sender.send_batch([(k, v, None) for k, v in orders[half:]])
        assert sender.flush(120) == 0
    finally:
        sender.close()
    assert (sender.sent, sender.acknowledged, sender.failed) == (count + 1, count, 1)
    assert list(sender.errors) == [
        "event larger than the Event Hubs limit (999,488 bytes of key + value): "
        "refused by the producer, not sent"
    ]
    assert Counter(read_all(sasl_broker.info.bootstrap, hub, timeout_s=120)) == Counter(orders)
    counts = mark.counts()
    assert counts["closed_on_error"] == 0, counts
    # the hub check, the producer and its readiness probe, two each (measured: 6 with either
    # client): a reconnect storm would be dozens
    assert 0 < counts["connections"] <= 12, counts


def test_full_speed_then_a_quiet_period_past_the_idle_limit_then_more_orders(
    sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The databricks profile's continuous pipeline over the Event Hubs-shaped broker: orders at
    full speed in large batches on four partitions, then nothing for longer than the broker's
    idle limit (producer and the pipeline's consumers idle), then more orders from the same
    producer. Every table exact (nothing lost, nothing doubled), no connection closed on an
    error, no idle connection closed by the broker (the clients' side is the shorter), and the
    quiet period costs each client a reconnect, not a storm."""
    from ecomstream.cli import build_parser
    from ecomstream.producer.cli import open_for, settings_from_args
    from ecomstream.producer.generator import OrderGenerator
    from tests.integration.test_pipeline_checks import Running, assert_exact, metrics_rows

    env = sasl_broker.env()
    for name, value in env.items():
        if name.startswith("ECOMSTREAM_"):
            monkeypatch.setenv(name, value)
    hub = sasl_broker.create_hub("quiet")
    argv = ["produce", "--topic", hub, "--compression", "none", "--linger-ms", "100"]
    sender = open_for(settings_from_args(build_parser().parse_args(argv)))
    generator = OrderGenerator(17, fault_rate=0.05)
    first = generator.batch(20_000)
    later = generator.batch(2_000)
    data_dir = tmp_path / "data"

    def processed() -> int:
        if not (data_dir / "metrics/pipeline_batches/_delta_log").exists():
            return 0
        return sum(r.input_rows or 0 for r in metrics_rows(data_dir) if r.query == "bronze")

    def wait_for_bronze(n: int, run: Running) -> None:
        deadline = time.monotonic() + 300
        while (got := processed()) < n:
            assert run.proc.poll() is None, run.output()[-3000:]
            assert time.monotonic() < deadline, f"bronze {got} of {n}\n{run.output()[-3000:]}"
            time.sleep(0.5)
        assert got == n, f"bronze took {got} records, {n} were sent"

    mark = sasl_broker.log_mark()
    run = Running(
        "pipeline", "--profile", "databricks", "--topic", hub, "--data-dir", str(data_dir),
        "--trigger-interval", "1 second", "--max-offsets-per-trigger", "50000",
        **{k: v for k, v in env.items() if k.startswith("ECOMSTREAM_")},
    )  # fmt: skip
    try:
        sender.send_batch(first)
        assert sender.flush(120) == 0
        wait_for_bronze(len(first), run)
        before_quiet = mark.counts()
        # the quiet period is the condition under test, not a wait for something to happen:
        # longer than the broker's idle limit, so every idle connection is past it
        time.sleep(IDLE_MS / 1000 * 1.5)
        quiet = mark.counts()
        sender.send_batch(later)
        assert sender.flush(120) == 0
        wait_for_bronze(len(first) + len(later), run)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, run.output()[-3000:]
    finally:
        sender.close()
        if run.proc.poll() is None:
            run.kill9()
    assert (sender.acknowledged, sender.failed) == (len(first) + len(later), 0)

    on_topic = read_all(sasl_broker.info.bootstrap, hub, timeout_s=120)
    sent = [(k, v) for k, v, _ in first + later]
    assert Counter(on_topic) == Counter(sent)  # the producer: none lost, none doubled
    assert_exact(data_dir, sent)  # bronze, silver, quarantine and gold: exactly those
    after = mark.counts()
    assert after["closed_on_error"] == 0, after
    figures = (before_quiet, quiet, after)
    # Every client closes its idle connections before the broker would: the producer
    # (librdkafka) and the pipeline's kafka-python probes by their own idle limit, the Kafka
    # consumers Spark keeps between micro-batches by its pool's eviction
    # (eventhubs.spark_session_conf). Without that eviction the broker closed 8 of theirs, 2
    # per partition, in the quiet period; with it, measured three times: none.
    assert after["closed_idle"] == 0, figures
    # after the quiet period each client reconnects once: the second half costs fewer
    # connections than the first (measured: 19 before the quiet period, 8-9 after it)
    reconnects = after["connections"] - quiet["connections"]
    assert 0 < reconnects <= before_quiet["connections"], figures
