"""Issue 26: a producer that cannot deliver says so while it happens, and why; a run that went
wrong leaves the client's own log behind."""

from __future__ import annotations

import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ecomstream.errors import register_secret
from ecomstream.producer.generator import OrderGenerator
from ecomstream.producer.runner import RECOVER_AFTER_S, STALL_S, run
from ecomstream.producer.sender import NO_REASON, ClientLog, describe_stall


class SilentBroker:
    """Holds every record handed over and acknowledges them all at ``ack_at`` (fake seconds),
    or never."""

    def __init__(self, clock: Any, ack_at: float | None = None, serving: bool = False) -> None:
        self.sent = self.failed = self.timed_out = 0
        self.errors: Counter[str] = Counter()
        self.clock, self.ack_at, self.serving = clock, ack_at, serving
        self.client_log = ClientLog()
        self.reasons = 0
        self.recoveries: list[float] = []

    def broker_serving(self) -> bool:
        return self.serving

    def recover(self) -> int:
        """As a stuck client replaced by a new one: everything held goes, acknowledged."""
        self.recoveries.append(self.clock())
        self.ack_at = self.clock()
        return self.sent

    @property
    def acknowledged(self) -> int:
        return self.sent if self.ack_at is not None and self.clock() >= self.ack_at else 0

    def stall_reason(self) -> str:
        self.reasons += 1
        return "no connection to a broker is up"

    def send_batch(self, records: Any) -> None:
        self.sent += len(records)

    def send(self, key: bytes | None, value: bytes) -> None:
        self.send_batch([(key, value, None)])

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        return self.sent - self.acknowledged

    def close(self) -> None:
        pass


def _clock() -> tuple[list[float], Any, Any]:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    return now, (lambda: now[0]), sleep


def test_a_stall_is_said_while_it_lasts_with_its_reason_and_named_in_the_summary() -> None:
    _, clock, sleep = _clock()
    sender = SilentBroker(clock)
    stream = io.StringIO()
    summary = run(
        OrderGenerator(3), sender, rate=100, duration_s=35, clock=clock, sleep=sleep,
        stall_stream=stream,
    )  # fmt: skip
    lines = stream.getvalue().splitlines()
    # said at 10, 20 and 30 s of silence, not on every check
    assert len(lines) == 3, lines
    assert all(line.startswith("produce: stalled:") for line in lines)
    assert all("no connection to a broker is up" in line for line in lines)
    assert "nothing acknowledged for 10s" in lines[0] and "for 30s" in lines[2]
    assert summary.stalled_s >= 30 and summary.stall_reason == "no connection to a broker is up"
    assert "stalled: nothing acknowledged for" in summary.text()
    assert summary.to_json()["stall_reason"] == "no connection to a broker is up"
    assert sender.reasons == 3  # the statistics are read when a line is due, not per check


def test_an_acknowledgement_ends_the_stall_and_a_short_wait_is_no_stall() -> None:
    _, clock, sleep = _clock()
    sender = SilentBroker(clock, ack_at=STALL_S + 5)
    stream = io.StringIO()
    summary = run(
        OrderGenerator(3), sender, rate=100, duration_s=40, clock=clock, sleep=sleep,
        stall_stream=stream,
    )  # fmt: skip
    assert len(stream.getvalue().splitlines()) == 1  # at 10 s; the ack at 15 s ended it
    assert STALL_S <= summary.stalled_s < STALL_S + 6
    assert summary.failed == 0 and summary.acknowledged == summary.sent

    _, clock, sleep = _clock()
    quick = SilentBroker(clock, ack_at=STALL_S - 1)
    stream = io.StringIO()
    summary = run(
        OrderGenerator(3), quick, rate=100, duration_s=30, clock=clock, sleep=sleep,
        stall_stream=stream,
    )  # fmt: skip
    assert stream.getvalue() == "" and summary.stalled_s == 0
    assert "stalled" not in summary.text() and quick.reasons == 0


def _stats(**over: Any) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "eos": {"idemp_state": "Assigned", "idemp_stateage": 5_000_000},
        "brokers": {
            "127.0.0.1:9092/bootstrap": {"nodeid": -1, "state": "DOWN"},
            "127.0.0.1:9092/1": {"nodeid": 1, "state": "UP", "waitresp_cnt": 0},
        },
        "topics": {
            "orders": {
                "partitions": {
                    "-1": {"leader": -1, "msgq_cnt": 0, "xmit_msgq_cnt": 0},
                    "0": {"leader": 1, "msgq_cnt": 4, "xmit_msgq_cnt": 3},
                    "1": {"leader": 1, "msgq_cnt": 0, "xmit_msgq_cnt": 0},
                }
            }
        },
    }
    stats.update(over)
    return stats


def test_describe_stall_reads_librdkafkas_statistics() -> None:
    assert describe_stall({}, None) == NO_REASON
    healthy = describe_stall(_stats(), None)
    assert healthy == "queued per partition: 0: 7, 1: 0"

    no_pid = _stats(eos={"idemp_state": "WaitPID", "idemp_stateage": 12_400_000})
    assert "the idempotent producer has no producer id (state WaitPID for 12s)" in describe_stall(
        no_pid, None
    )

    down = _stats()
    down["brokers"]["127.0.0.1:9092/1"] = {"nodeid": 1, "state": "DOWN", "waitresp_cnt": 2}
    down["topics"]["orders"]["partitions"]["1"]["leader"] = -1
    text = describe_stall(down, "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed")
    assert "no connection to a broker is up" in text
    assert "partitions without a leader: [1]" in text  # not the unassigned queue (-1)
    assert "waiting for a partition" not in text
    down["topics"]["orders"]["partitions"]["-1"]["msgq_cnt"] = 1200
    assert "1,200 waiting for a partition" in describe_stall(down, None)
    assert "2 requests awaiting the broker's response" in text
    assert text.endswith(
        "last client error: 127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed"
    )


def test_the_client_log_keeps_the_newest_lines_redacted(tmp_path: Path) -> None:
    secret = "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=notreallyasecret"
    register_secret(secret)
    log = ClientLog(lines=3)
    logger = log.attach("ecomstream.test-client-log")
    for n in range(5):
        logger.debug("line %d %s", n, secret if n == 4 else "")
    logger.warning("the broker went away")
    path = tmp_path / "client.log"
    assert log.write(path) == 3
    text = path.read_text()
    assert "line 0" not in text and "line 1" not in text and "line 2" not in text
    assert "line 3" in text and "line 4" in text and secret not in text
    assert log.last_warning() == "the broker went away"
    assert logging.getLogger("ecomstream.test-client-log").propagate is False


def test_a_stall_with_the_broker_serving_moves_the_queue_to_a_new_client_once() -> None:
    _, clock, sleep = _clock()
    stuck = SilentBroker(clock, serving=True)
    stream = io.StringIO()
    summary = run(
        OrderGenerator(3), stuck, rate=100, duration_s=60, clock=clock, sleep=sleep,
        stall_stream=stream,
    )  # fmt: skip
    # seen serving at the first line (10 s), recovered once it had served for RECOVER_AFTER_S
    assert len(stuck.recoveries) == 1
    assert STALL_S + RECOVER_AFTER_S <= stuck.recoveries[0] < STALL_S + RECOVER_AFTER_S + STALL_S
    text = stream.getvalue()
    assert "the broker serves the topic" in text and "queued records moved to a new client" in text
    assert summary.recovered > 0 and summary.failed == 0 and summary.acknowledged == summary.sent
    assert "recovered:" in summary.text() and summary.to_json()["recovered"] == summary.recovered

    # a broker that is away is an outage, not a stuck client: nothing moves
    _, clock, sleep = _clock()
    away = SilentBroker(clock, serving=False)
    summary = run(
        OrderGenerator(3), away, rate=100, duration_s=60, clock=clock, sleep=sleep,
        stall_stream=io.StringIO(),
    )  # fmt: skip
    assert away.recoveries == [] and summary.recovered == 0


def test_kafka_python_flush_waits_for_the_callbacks_its_flush_leaves_running() -> None:
    """kafka-python's flush returns once each batch's future is done, before the records'
    callbacks have run on its I/O thread. The sender's flush goes by its own count, within its
    timeout, instead of counting a record acknowledged a moment later as unconfirmed."""
    import threading

    from ecomstream.producer.sender import KafkaPythonSender

    sender = KafkaPythonSender.__new__(KafkaPythonSender)
    sender.sent, sender.failed, sender._acked = 3, 0, 2

    class LateCallbacks:
        def flush(self, timeout: float) -> None:
            threading.Timer(0.2, sender._ok, args=(None,)).start()

    sender._producer = LateCallbacks()  # type: ignore[assignment]
    assert sender.flush(5) == 0 and sender.acknowledged == 3

    class NoCallback:
        def flush(self, timeout: float) -> None:
            pass

    sender._producer = NoCallback()  # type: ignore[assignment]
    sender.sent = 4  # one that never comes back is still counted, once the timeout is spent
    assert sender.flush(0.3) == 1
