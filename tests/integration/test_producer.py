"""``ecomstream produce`` against a real broker: read every record back and check it exactly."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ecomstream import broker
from ecomstream.producer.generator import FAULT_KINDS, VALID_KINDS, OrderGenerator
from ecomstream.producer.sender import CONNECT_TIMEOUT_S
from tests.conftest import Broker
from tests.kafka_helpers import read_all, wait_for_records
from tests.unit.test_producer_generator import _parse_ts, assert_clean_order, reasons

START = "2026-11-25T10:00:00Z"
START_DT = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)


def produce(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecomstream", "produce", "--progress", "log", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(("client", "n"), [("confluent", 4000), ("kafka-python", 600)])
def test_produce_with_faults_reads_back_exactly(
    kafka_broker: Broker, tmp_path: Path, client: str, n: int
) -> None:
    topic = kafka_broker.new_topic("produce")
    summary_path = tmp_path / "summary.json"
    done = produce(
        "--bootstrap-servers",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--count",
        str(n),
        "--rate",
        "0",
        "--seed",
        "17",
        "--fault-rate",
        "0.3",
        "--start-time",
        START,
        "--client",
        client,
        "--summary-json",
        str(summary_path),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    assert (summary["sent"], summary["acknowledged"], summary["failed"]) == (n, n, 0)
    assert set(summary["faults"]) == set(FAULT_KINDS)
    assert summary["clean"] + sum(summary["faults"].values()) == n
    assert sum(summary["faults"].values()) in (int(n * 0.3), int(n * 0.3) + 1)
    assert f"sent {n:,} orders to {topic} via {client}" in done.stdout

    got = read_all(kafka_broker.bootstrap, topic)
    # keys and payloads, byte for byte: the seed and --start-time fix the whole stream
    expected = OrderGenerator(17, fault_rate=0.3, start_time=START_DT, rate=0).batch(n)
    assert sorted(got, key=repr) == sorted(((k, v) for k, v, _ in expected), key=repr)

    # and independently of the generator: classify what is on the topic with the contract model
    found: Counter[str] = Counter()
    seen_valid: set[tuple[bytes | None, bytes]] = set()
    for key, value in got:  # per partition in offset order; a re-send shares its key's partition
        codes = reasons(value)
        if codes:
            assert len(codes) == 1, (codes, value)  # exactly one fault per record
            found[codes[0]] += 1
            if codes != ["missing_order_id"] and codes != ["malformed_json"]:
                assert key == json.loads(value)["order_id"].encode()
            if codes == ["missing_order_id"]:
                assert key is None
            continue
        event = assert_clean_order(
            key,
            value,
            (
                "Electronics",
                "Fashion",
                "Home & Kitchen",
                "Books",
                "Beauty",
                "Sports",
                "Toys",
                "Grocery",
            ),
        )
        if (key, value) in seen_valid:
            found["duplicate"] += 1
        elif (START_DT - _parse_ts(event["order_timestamp"])).total_seconds() > 100:  # type: ignore[operator]
            found["late"] += 1
        seen_valid.add((key, value))
    assert found == Counter({k: v for k, v in summary["faults"].items() if v})
    assert set(found) <= set(FAULT_KINDS) and VALID_KINDS <= set(found)


def test_ctrl_c_flushes_and_summarises(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic("interrupt")
    summary_path = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecomstream",
            "produce",
            "--bootstrap-servers",
            kafka_broker.bootstrap,
            "--topic",
            topic,
            "--rate",
            "1500",
            "--fault-rate",
            "0.1",
            "--summary-json",
            str(summary_path),
            "--progress",
            "log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # mid-run: well over the 100 records asserted below are acknowledged on the topic
        wait_for_records(kafka_broker.bootstrap, topic, 300, timeout_s=120, proc=proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err  # no --count/--duration: Ctrl-C is the normal end
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] is True and summary["failed"] == 0
    assert summary["sent"] == summary["acknowledged"] > 100
    assert "acknowledged" in out and "Traceback" not in err
    got = read_all(kafka_broker.bootstrap, topic)
    assert len(got) == summary["acknowledged"]


def test_duration_and_rate(kafka_broker: Broker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic("duration")
    summary_path = tmp_path / "summary.json"
    done = produce(
        "--bootstrap-servers",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--duration",
        "3",
        "--rate",
        "400",
        "--summary-json",
        str(summary_path),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    assert 1000 <= summary["acknowledged"] <= 1300  # 3 s at 400/s, in batches of 20
    assert len(read_all(kafka_broker.bootstrap, topic)) == summary["acknowledged"]
    # event time follows the clock when --start-time is not given
    newest = max(
        _parse_ts(json.loads(v)["order_timestamp"])
        for _, v in read_all(kafka_broker.bootstrap, topic)
    )  # type: ignore[type-var]
    assert abs((dt.datetime.now(dt.UTC) - newest).total_seconds()) < 120  # type: ignore[operator]


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_new_topic_has_a_leader_on_every_partition_before_the_first_record(
    kafka_broker: Broker, client: str
) -> None:
    """A new idempotent producer can lose a new topic's first records while reporting them
    delivered, when they reach a partition still getting its leader (seen in CI: partition 0
    began at sequence 3). ``open_sender`` returns only once every partition's leader answers."""
    from kafka import KafkaConsumer, TopicPartition

    from ecomstream.producer.sender import SenderSettings, open_sender

    topic = kafka_broker.new_topic("ready")
    sender = open_sender(SenderSettings(kafka_broker.bootstrap, topic, client=client))
    if kafka_broker.data_dir is not None:  # the embedded broker: its partitions' logs
        logs = kafka_broker.data_dir / "kafka/logs"
        made = [p for p in range(broker.DEFAULT_PARTITIONS) if (logs / f"{topic}-{p}").is_dir()]
        assert made == list(range(broker.DEFAULT_PARTITIONS)), made
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, enable_auto_commit=False)
    try:
        # no waiting here: the topic the sender asked the broker to create is there, and each
        # partition's leader answers at once
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"{topic} is not in the broker's metadata yet"
        tps = [TopicPartition(topic, p) for p in partitions]
        assert consumer.end_offsets(tps, timeout_ms=2_000) == dict.fromkeys(tps, 0)
    finally:
        consumer.close()
        sender.close()


def test_the_wait_for_a_writable_topic_gives_up_when_no_broker_answers() -> None:
    import time

    from ecomstream.producer.sender import SenderSettings, wait_until_writable

    settings = SenderSettings(f"127.0.0.1:{broker.free_port()}", "t")
    started = time.monotonic()
    assert wait_until_writable(settings, timeout_s=3.0) is False
    assert time.monotonic() - started < 30


def test_unreachable_broker_fails_fast_with_one_line() -> None:
    port = broker.free_port()  # nothing listens there
    done = produce(
        "--bootstrap-servers", f"127.0.0.1:{port}", "--topic", "t", "--count", "5", timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach Kafka at 127.0.0.1:{port}" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    # it gave up after the bounded connect, not after a client's own (endless) retries
    assert f"within {CONNECT_TIMEOUT_S:.0f}s" in lines[0], lines[0]


def test_event_hubs_unreachable_never_shows_the_secret() -> None:
    secret = "ZmFrZS1zZWNyZXQta2V5LW5vdC1yZWFs"
    conn = (
        f"Endpoint=sb://127.0.0.1:{broker.free_port()}/;SharedAccessKeyName=send;"
        f"SharedAccessKey={secret};EntityPath=orders"
    )
    env = {**os.environ, "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": conn}
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "produce", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert secret not in done.stderr + done.stdout
    assert "cannot reach Kafka" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_broker_lost_mid_run_counts_failures_and_exits_non_zero(tmp_path: Path) -> None:
    """A broker of its own, stopped while records are in flight: nothing is silently lost."""
    data_dir = tmp_path / "broker"
    info = broker.start(data_dir, broker.free_port(), heap="384m")
    summary_path = tmp_path / "summary.json"
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecomstream",
                "produce",
                "--bootstrap-servers",
                info.bootstrap,
                "--topic",
                "lost",
                "--rate",
                "2000",
                "--duration",
                "8",
                "--flush-timeout",
                "4",
                "--summary-json",
                str(summary_path),
                "--progress",
                "off",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # in flight: records are acknowledged and the 8 s run is far from its end
        wait_for_records(info.bootstrap, "lost", 500, timeout_s=120, proc=proc)
    finally:
        broker.stop(data_dir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    summary = json.loads(summary_path.read_text())
    assert summary["failed"] > 0 and summary["acknowledged"] > 0
    assert summary["acknowledged"] + summary["failed"] == summary["sent"]
    assert summary["errors"] and "Traceback" not in err
    assert f"{summary['failed']:,} failed" in out


def test_recover_moves_only_queued_records_to_a_new_client_each_once(
    kafka_broker: Broker,
) -> None:
    """Issue 26: the producer's way out of a stuck librdkafka client. Records the old client
    still queues (a long linger keeps them there) move to a new client; the topic then holds
    every record exactly once and the counts add up."""
    from ecomstream.producer.sender import ConfluentSender, SenderSettings, wait_until_writable

    topic = kafka_broker.new_topic("recover")
    settings = SenderSettings(kafka_broker.bootstrap, topic, client="confluent", linger_ms=60_000)
    sender = ConfluentSender(settings)
    assert wait_until_writable(settings)
    records = [(key, value, None) for key, value, _ in OrderGenerator(26).batch(500)]
    try:
        sender.send_batch(records)
        assert sender.acknowledged == 0  # all queued behind the linger
        assert sender.broker_serving()
        moved = sender.recover()
        assert moved == 500 and sender.moved == 500
        assert sender.flush(30) == 0
        assert sender.failed == 0 and sender.acknowledged == sender.sent == 500
    finally:
        sender.close()
    on_topic = read_all(kafka_broker.bootstrap, topic)
    assert Counter(on_topic) == Counter((key, value) for key, value, _ in records)
