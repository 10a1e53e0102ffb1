"""Issue 11 case 1 without a broker: the outage watch's arithmetic, the source options it
implies, the settings, and the producer's give-up (the integration proof with a real broker
stopped and killed is tests/integration/test_broker_outage.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ecomstream.cli import build_parser
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.outage import OutageWatch, source_options
from ecomstream.jobs.settings import PipelineSettings
from ecomstream.producer.cli import settings_from_args
from ecomstream.producer.generator import OrderGenerator
from ecomstream.producer.runner import run
from ecomstream.producer.sender import SenderSettings, _confluent_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_stops_only_after_the_limit_of_unbroken_silence() -> None:
    clock, answers = Clock(), [True, False, False, True, False, False, False]
    watch = OutageWatch(lambda: answers.pop(0), "127.0.0.1:9", 10.0, clock=clock)
    watch.observe()  # answered
    watch.check()
    clock.now = 110.0
    watch.observe()  # silent from 110
    clock.now = 119.9
    watch.observe()
    watch.check()  # 9.9 s: still riding through
    clock.now = 125.0
    watch.observe()  # answered: the outage is over, and counted
    assert watch.outages == 1 and watch.down_for() == 0.0
    watch.check()
    clock.now = 130.0
    watch.observe()  # a new outage from 130
    clock.now = 139.0
    watch.observe()
    watch.check()
    clock.now = 140.0
    watch.observe()
    with pytest.raises(EcomstreamError) as caught:
        watch.check()
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "--broker-outage-limit 10s" in message
    assert "\n" not in message and caught.value.exit_code == 1


def test_a_probe_that_cannot_tell_or_breaks_never_counts_as_an_outage() -> None:
    clock = Clock()

    def broken() -> bool:
        raise RuntimeError("no client")

    for probe in (lambda: None, broken):
        watch = OutageWatch(probe, "b", 1.0, clock=clock)
        watch.observe()
        clock.now += 1000
        watch.observe()
        watch.check()
        assert watch.down_for() == 0.0


def test_source_options_are_sparks_defaults_at_the_default_limit_and_outlast_a_longer_one() -> None:
    assert source_options(60.0) == {
        "fetchOffset.numRetries": "3",
        "fetchOffset.retryIntervalMs": "1000",
        "kafkaConsumer.pollTimeoutMs": "120000",
    }
    for limit in (61.0, 300.0, 3600.0):
        options = source_options(limit)
        # each driver attempt waits the AdminClient's 60 s default.api.timeout.ms, then 1 s
        driver_s = int(options["fetchOffset.numRetries"]) * 61.0
        assert driver_s > limit + 60
        assert int(options["kafkaConsumer.pollTimeoutMs"]) / 1000 >= limit + 60


def test_the_outage_limit_is_validated_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base: dict[str, Any] = {"topic": "t", "data_dir": tmp_path, "bootstrap_servers": "b:1"}
    for bad in (0.0, -5.0, float("inf"), float("nan")):
        with pytest.raises(EcomstreamError, match="--broker-outage-limit must be a positive"):
            PipelineSettings(**base, broker_outage_limit_s=bad)
    assert PipelineSettings(**base).broker_outage_limit_s == 60.0
    monkeypatch.setenv("ECOMSTREAM_BROKER_OUTAGE_LIMIT", "90")
    monkeypatch.setenv("ECOMSTREAM_DELIVERY_TIMEOUT", "7.5")
    args = build_parser().parse_args(["pipeline", "--topic", "t"])
    assert args.broker_outage_limit == 90.0
    produce = build_parser().parse_args(["produce", "--bootstrap-servers", "b:1", "--topic", "t"])
    assert settings_from_args(produce).delivery_timeout == 7.5


def test_the_delivery_timeout_reaches_the_client_and_is_validated() -> None:
    config = _confluent_config(SenderSettings("b:1", "t", delivery_timeout_s=4.0))
    assert config["message.timeout.ms"] == 4000
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    args = build_parser().parse_args(
        ["produce", "--bootstrap-servers", "b:1", "--topic", "t", "--delivery-timeout", "0.5"]
    )
    with pytest.raises(EcomstreamError, match="--delivery-timeout must be at least 1 second"):
        settings_from_args(args)


class DeadBroker:
    """Holds everything handed over; after ``expire_after`` polls every record still held
    times out, as librdkafka reports it once message.timeout.ms has passed."""

    def __init__(self, expire_after: int) -> None:
        self.sent = self.failed = self.timed_out = self.polls = 0
        self.errors: Counter[str] = Counter()
        self.expire_after = expire_after
        self.held = 0

    @property
    def acknowledged(self) -> int:
        return 0

    def stall_reason(self) -> str:
        return "no connection to a broker is up"

    def broker_serving(self) -> bool:
        return False

    def recover(self) -> int:
        return 0

    def send_batch(self, records: Any) -> None:
        self.sent += len(records)
        self.held += len(records)
        self.poll()

    def send(self, key: bytes | None, value: bytes) -> None:
        self.send_batch([(key, value, None)])

    def poll(self) -> None:
        self.polls += 1
        if self.polls > self.expire_after and self.held:
            self.failed += self.held
            self.timed_out += self.held
            self.errors["Local: Message timed out"] += self.held
            self.held = 0

    def flush(self, timeout_s: float) -> int:
        self.poll()
        return 0

    def close(self) -> None:
        pass


def test_the_run_gives_up_once_orders_time_out_and_counts_every_one() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    sender = DeadBroker(expire_after=40)
    summary = run(
        OrderGenerator(5), sender, rate=100, clock=lambda: now[0], sleep=sleep
    )  # no --count, no --duration: only giving up ends it
    assert summary.gave_up and summary.timed_out == summary.failed == summary.sent > 0
    assert summary.acknowledged == 0
    assert summary.to_json()["gave_up"] is True
    assert "gave up" in summary.text()
