"""``ecomstream produce`` without a broker: bad input, Event Hubs, the run loop, progress."""

from __future__ import annotations

import argparse
import io
from collections import Counter
from typing import Any

import pytest

from ecomstream.cli import build_parser, main
from ecomstream.producer.cli import settings_from_args
from ecomstream.producer.generator import FAULT_KINDS, OrderGenerator
from ecomstream.producer.progress import Progress
from ecomstream.producer.runner import run
from ecomstream.producer.sender import SenderSettings, _confluent_config

SECRET = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
CONN = (
    "Endpoint=sb://shop-ns.servicebus.windows.net/;SharedAccessKeyName=send;"
    f"SharedAccessKey={SECRET};EntityPath=orders"
)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["produce", *argv])


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BOOTSTRAP_SERVERS",
        "TOPIC",
        "EVENTHUB_CONNECTION_STRING",
        "COUNT",
        "DURATION",
        "RATE",
        "FAULT_RATE",
        "SEED",
        "CLIENT",
        "COMPRESSION",
    ):
        monkeypatch.delenv(f"ECOMSTREAM_{name}", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "-5"], "--rate must be 0"),
        (["--fault-rate", "1.5"], "--fault-rate must be between 0 and 1"),
        (["--fault-rate", "-0.1"], "--fault-rate must be between 0 and 1"),
        (["--count", "10", "--duration", "5"], "--count or --duration, not both"),
        (["--count", "0"], "--count must be at least 1"),
        (["--duration", "0"], "--duration must be a positive"),
        (["--start-time", "last tuesday"], "--start-time 'last tuesday' is not an ISO-8601"),
        (["--categories", " , "], "--categories names no category"),
        (["--topic", "bad topic!"], "is not a legal Kafka topic name"),
        (["--flush-timeout", "0"], "--flush-timeout must be positive"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["produce", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", *argv])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_number_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["produce", "--topic", "t", "--rate", "fast"])
    assert exit_info.value.code == 2
    assert "invalid float value: 'fast'" in capsys.readouterr().err


def test_env_variables_feed_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOMSTREAM_BOOTSTRAP_SERVERS", "10.0.0.1:9092")
    monkeypatch.setenv("ECOMSTREAM_TOPIC", "orders-env")
    monkeypatch.setenv("ECOMSTREAM_FAULT_RATE", "0.25")
    s = settings_from_args(_args("--seed", "4"))
    assert (s.bootstrap_servers, s.topic, s.fault_rate, s.seed) == (
        "10.0.0.1:9092",
        "orders-env",
        0.25,
        4,
    )


def test_missing_broker_or_topic_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--topic", "t"]) == 2
    assert "--bootstrap-servers" in capsys.readouterr().err
    assert main(["produce", "--bootstrap-servers", "h:1"]) == 2
    assert "no topic" in capsys.readouterr().err


def test_event_hubs_connection_string_gives_bootstrap_topic_and_sasl() -> None:
    s = settings_from_args(_args("--eventhub-connection-string", CONN))
    assert s.bootstrap_servers == "shop-ns.servicebus.windows.net:9093"
    assert s.topic == "orders"
    assert s.compression == "gzip"
    assert s.security["security_protocol"] == "SASL_SSL"
    assert s.security["sasl_mechanism"] == "PLAIN"
    assert s.security["sasl_plain_username"] == "$ConnectionString"
    assert s.security["sasl_plain_password"] == CONN
    assert SECRET not in repr(s)
    # --topic wins over EntityPath; the env variable works like the option
    s2 = settings_from_args(_args("--eventhub-connection-string", CONN, "--topic", "other"))
    assert s2.topic == "other"
    config = _confluent_config(SenderSettings(s.bootstrap_servers, s.topic, security=s.security))
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanisms"] == "PLAIN"
    assert config["sasl.username"] == "$ConnectionString" and config["sasl.password"] == CONN
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert SECRET not in repr(SenderSettings(s.bootstrap_servers, s.topic, security=s.security))


def test_event_hubs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOMSTREAM_EVENTHUB_CONNECTION_STRING", CONN)
    s = settings_from_args(_args())
    assert s.bootstrap_servers == "shop-ns.servicebus.windows.net:9093" and s.topic == "orders"


@pytest.mark.parametrize(
    "bad",
    [
        f"Endpoint=sb://shop-ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey{SECRET}",
        f"Endpoint=https://shop-ns/;SharedAccessKeyName=send;SharedAccessKey={SECRET}",
        f"SharedAccessKeyName=send;SharedAccessKey={SECRET}",
    ],
)
def test_malformed_connection_string_never_echoes_the_secret(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["produce", "--count", "1", "--eventhub-connection-string", bad])
    out = capsys.readouterr()
    assert code == 2
    assert "connection string is malformed" in out.err
    assert SECRET not in out.err + out.out
    assert len(out.err.strip().splitlines()) == 1


def test_no_topic_with_event_hubs_and_no_entity_path(capsys: pytest.CaptureFixture[str]) -> None:
    conn = CONN.replace(";EntityPath=orders", "")
    assert main(["produce", "--count", "1", "--eventhub-connection-string", conn]) == 2
    err = capsys.readouterr().err
    assert "EntityPath" in err and SECRET not in err


# -- the run loop, against an in-memory sender ----------------------------------------------
class MemorySender:
    """Acknowledges everything except the keys listed in ``fail``; can raise Ctrl-C."""

    def __init__(self, fail: set[bytes] = frozenset(), interrupt_at: int | None = None) -> None:  # type: ignore[assignment]
        self.sent = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.records: list[tuple[bytes | None, bytes]] = []
        self.fail = fail
        self.interrupt_at = interrupt_at
        self.flushed = False

    @property
    def acknowledged(self) -> int:
        return self.sent - self.failed

    def send(self, key: bytes | None, value: bytes) -> None:
        if self.interrupt_at is not None and self.sent == self.interrupt_at:
            raise KeyboardInterrupt
        self.sent += 1
        self.records.append((key, value))
        if key in self.fail:
            self.failed += 1
            self.errors["Broker: boom"] += 1

    def send_batch(self, records: Any) -> None:
        for key, value, _ in records:
            self.send(key, value)

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        self.flushed = True
        return 0

    def close(self) -> None:
        pass


def test_run_counts_every_kind_and_matches_what_was_handed_over() -> None:
    sender = MemorySender()
    summary = run(OrderGenerator(8, fault_rate=0.24), sender, count=5003)
    assert summary.sent == len(sender.records) == 5003
    assert summary.acknowledged == 5003 and summary.failed == 0
    assert summary.clean + sum(summary.faults.values()) == 5003
    assert sum(summary.faults.values()) in (1200, 1201)
    doc = summary.to_json()
    assert set(doc["faults"]) == set(FAULT_KINDS)
    assert {"sent", "acknowledged", "failed", "faults", "clean", "elapsed_s", "rate"} <= set(doc)
    assert max(doc["faults"].values()) - min(doc["faults"].values()) <= 1


def test_run_interrupted_mid_batch_flushes_and_counts_exactly_what_was_sent() -> None:
    sender = MemorySender(interrupt_at=3210)
    gen = OrderGenerator(8, fault_rate=0.5)
    summary = run(gen, sender, count=10_000)
    assert summary.interrupted and sender.flushed
    assert summary.sent == len(sender.records) == 3210
    assert summary.clean + sum(summary.faults.values()) == 3210
    replay = OrderGenerator(8, fault_rate=0.5).batch(3210)
    assert Counter(k for _, _, k in replay if k) == summary.faults


def test_run_reports_failures_with_their_error() -> None:
    records = OrderGenerator(2).batch(10)
    sender = MemorySender(fail={records[3][0], records[7][0]})  # type: ignore[arg-type]
    summary = run(OrderGenerator(2), sender, count=10)
    assert (summary.acknowledged, summary.failed) == (8, 2)
    assert summary.errors == {"Broker: boom": 2}
    assert "2 failed" in summary.text()


def test_run_paces_to_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    sender = MemorySender()
    summary = run(
        OrderGenerator(3), sender, count=1000, rate=200, clock=lambda: now[0], sleep=sleep
    )
    assert summary.sent == 1000
    # 1000 records at 200/s: the last batch leaves at ~4.95 s
    assert 4.5 <= now[0] <= 5.1 and slept


def test_run_stops_after_the_duration() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    sender = MemorySender()
    summary = run(
        OrderGenerator(3), sender, duration_s=2.0, rate=500, clock=lambda: now[0], sleep=sleep
    )
    assert 950 <= summary.sent <= 1050


def test_progress_live_and_log_lines() -> None:
    t = [0.0]
    live = io.StringIO()
    p = Progress(live, live=True, interval_s=0.5, clock=lambda: t[0])
    t[0] = 1.0
    p.update(1000, 900, 0, 10)
    t[0] = 2.0
    p.update(3000, 2900, 1, 30)
    p.close()
    text = live.getvalue()
    assert text.startswith(
        "\r1,000 events/s | sent 1,000 | acknowledged 900 | failed 0 | faults 10"
    )
    assert "\r2,000 events/s | sent 3,000 | acknowledged 2,900 | failed 1 | faults 30" in text
    assert text.endswith("\n") and text.count("\n") == 1

    log = io.StringIO()
    p = Progress(log, live=False, clock=lambda: t[0])
    assert p.interval_s == 10.0
    t[0] = 5.0
    p.update(10, 10, 0, 0)  # not due yet
    t[0] = 13.0
    p.update(20, 20, 0, 0)
    assert log.getvalue().splitlines() == [
        "produce: 2 events/s | sent 20 | acknowledged 20 | failed 0 | faults 0 | 11s"
    ]
