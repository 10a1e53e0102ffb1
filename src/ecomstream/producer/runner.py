"""The produce loop: generate in batches, pace to the rate, hand over, flush, summarise.

The loop gives up once a record has gone unacknowledged for the sender's delivery timeout (the
broker has been away that long): it stops handing over more, flushes what is outstanding and
returns a summary with ``gave_up`` set, so the command can say so in one line.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from ecomstream.errors import redact
from ecomstream.producer.generator import FAULT_KINDS, OrderGenerator
from ecomstream.producer.progress import Progress
from ecomstream.producer.sender import Sender

FLUSH_TIMEOUT_S = 60.0
MAX_BATCH = 2_000
# Records outstanding and none acknowledged for this long is a stall: said on stderr while it
# lasts (every STALL_S), with the client's own account of why, and named in the summary
STALL_S = 10.0
# A stall this long while the broker serves the topic (each partition answers from its leader)
# is the client's own: its queued records move to a new client (Sender.recover), issue 26
RECOVER_AFTER_S = 20.0


@dataclass
class Summary:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    timed_out: int = 0  # of ``failed``: not acknowledged within the delivery timeout
    gave_up: bool = False  # stopped early: the broker did not acknowledge within that time
    faults: Counter[str] = field(default_factory=Counter)
    clean: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    errors: Counter[str] = field(default_factory=Counter)
    seed: int | None = None
    topic: str = ""
    client: str = ""
    stalled_s: float = 0.0  # the longest time records waited with none acknowledged
    stall_reason: str = ""  # what the client said during that stall
    client_log: str | None = None  # where the client's debug lines went (a run gone wrong)
    recovered: int = 0  # records moved to a new client after a stall with the broker serving

    @property
    def rate(self) -> float:
        return self.acknowledged / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The agreed summary shape (plus seed, topic, client, interrupted, errors)."""
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "gave_up": self.gave_up,
            "faults": {kind: self.faults.get(kind, 0) for kind in FAULT_KINDS},
            "clean": self.clean,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 1),
            "seed": self.seed,
            "topic": self.topic,
            "client": self.client,
            "interrupted": self.interrupted,
            "errors": dict(self.errors.most_common(10)),
            "stalled_s": round(self.stalled_s, 1),
            "stall_reason": self.stall_reason,
            "recovered": self.recovered,
            "client_log": self.client_log,
        }

    def text(self) -> str:
        faults = sum(self.faults.values())
        lines = [
            f"sent {self.sent:,} orders to {self.topic} via {self.client} in "
            f"{self.elapsed_s:.2f}s: {self.acknowledged:,} acknowledged, {self.failed:,} failed "
            f"({self.rate:,.0f} acknowledged/s)"
            + (" [interrupted]" if self.interrupted else "")
            + (" [gave up: the delivery timeout passed]" if self.gave_up else ""),
            f"clean {self.clean:,}, with one fault each {faults:,}"
            + (
                ": " + ", ".join(f"{k} {self.faults[k]:,}" for k in FAULT_KINDS if self.faults[k])
                if faults
                else ""
            ),
            f"seed {self.seed} (the same seed sends the same orders)",
        ]
        lines += [f"error x{n}: {msg}" for msg, n in self.errors.most_common(5)]
        if self.stalled_s >= STALL_S:
            lines.append(
                f"stalled: nothing acknowledged for {self.stalled_s:.0f}s at the longest: "
                f"{self.stall_reason}"
            )
        if self.recovered:
            lines.append(
                f"recovered: {self.recovered:,} queued records moved to a new client after the "
                f"broker was back and serving for {RECOVER_AFTER_S:.0f}s with none acknowledged"
            )
        if self.client_log:
            lines.append(f"client log (its newest lines): {self.client_log}")
        return "\n".join(lines)


class StallWatch:
    """Notices records waiting with none acknowledged, and says why while it lasts.

    Each time a line is due it also probes the broker: a broker that has served the topic for
    RECOVER_AFTER_S while the client still had nothing acknowledged means the client is stuck
    (issue 26), and its queued records move to a new client."""

    def __init__(
        self, sender: Sender, clock: Any, stream: TextIO | None, after_s: float = STALL_S
    ) -> None:
        self.sender, self.clock, self.stream, self.after_s = sender, clock, stream, after_s
        self.acked = sender.acknowledged
        self.since = clock()
        self.said = float("-inf")
        self.current = ""
        self.longest, self.reason = 0.0, ""
        self.serving_since: float | None = None
        self.recovered = 0

    def check(self) -> None:
        now, acked = self.clock(), self.sender.acknowledged
        outstanding = self.sender.sent - acked - self.sender.failed
        if acked != self.acked or outstanding <= 0:
            self.acked, self.since, self.said = acked, now, float("-inf")
            self.serving_since = None
            return
        stalled = now - self.since
        if stalled < self.after_s:
            return
        if now - self.said >= self.after_s:  # said at most every after_s
            self.said = now
            self.current = self.sender.stall_reason()
            serving = self.sender.broker_serving()
            if not serving:
                self.serving_since = None
            elif self.serving_since is None:
                self.serving_since = now
            note = "" if not serving else "; the broker serves the topic"
            self._say(
                f"{outstanding:,} records outstanding, nothing acknowledged for {stalled:.0f}s: "
                f"{self.current}{note}"
            )
            if self.serving_since is not None and now - self.serving_since >= RECOVER_AFTER_S:
                moved = self.sender.recover()
                self.recovered += moved
                self.serving_since = None
                self._say(f"{moved:,} queued records moved to a new client")
        if stalled > self.longest:
            self.longest, self.reason = stalled, self.current

    def _say(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(f"produce: stalled: {redact(text)}\n")
            self.stream.flush()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: flush what was handed over, then summarise."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run(
    generator: OrderGenerator,
    sender: Sender,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    rate: float = 0.0,
    progress: Progress | None = None,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
    stall_stream: TextIO | None = None,
) -> Summary:
    """Send until ``count`` records, ``duration_s`` seconds, or Ctrl-C / SIGTERM. A stall is
    said on ``stall_stream`` (default: stderr as it is when the run starts)."""
    summary = Summary(seed=generator.seed)
    watch = StallWatch(sender, clock, stall_stream or sys.stderr)
    faults = summary.faults
    batch_size = MAX_BATCH if rate <= 0 else max(1, min(MAX_BATCH, int(rate / 20)))
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: no signal handling
        previous = None
    start = clock()
    already = sender.sent
    batch: list[Any] = []
    try:
        while True:
            if count is not None and summary.sent >= count:
                break
            if duration_s is not None and clock() - start >= duration_s:
                break
            n = batch_size if count is None else min(batch_size, count - summary.sent)
            if rate > 0:
                ahead = start + summary.sent / rate - clock()
                if ahead > 0:
                    sender.poll()
                    watch.check()
                    if _timed_out(sender):
                        summary.gave_up = True
                        break
                    sleep(min(ahead, 0.5))
                    continue
            batch = generator.batch(n)
            sender.send_batch(batch)
            _count_kinds(batch, faults, summary)
            batch = []
            watch.check()
            if _timed_out(sender):
                summary.gave_up = True
                break
            if progress is not None and progress.due():
                progress.update(
                    summary.sent, sender.acknowledged, sender.failed, sum(faults.values())
                )
    except KeyboardInterrupt:
        summary.interrupted = True
        # the sender counts a record once it holds it: the uncounted ones open the current batch
        missing = sender.sent - already - summary.sent
        _count_kinds(batch[:missing] if missing > 0 else [], faults, summary)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    try:
        sender.flush(flush_timeout_s)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, count what is missing
        summary.interrupted = True
    watch.check()
    summary.stalled_s, summary.stall_reason = watch.longest, watch.reason
    summary.recovered = watch.recovered
    summary.failed = sender.failed
    summary.timed_out = _timed_out(sender)
    summary.acknowledged = sender.acknowledged
    summary.errors.update(sender.errors)
    unconfirmed = summary.sent - summary.acknowledged - summary.failed
    if unconfirmed > 0:
        summary.failed += unconfirmed
        summary.errors[f"not acknowledged within the {flush_timeout_s:.0f}s flush"] += unconfirmed
    summary.elapsed_s = clock() - start
    if progress is not None:
        progress.update(
            summary.sent, summary.acknowledged, summary.failed, sum(faults.values()), force=True
        )
        progress.close()
    return summary


def _timed_out(sender: Sender) -> int:
    """Records the broker left unacknowledged for the whole delivery timeout (a sender that
    does not track it has none)."""
    return int(getattr(sender, "timed_out", 0))


def _count_kinds(records: list[Any], faults: Counter[str], summary: Summary) -> None:
    kinds = Counter(kind for _, _, kind in records)
    summary.clean += kinds.pop(None, 0)
    faults.update(kinds)
    summary.sent += len(records)
