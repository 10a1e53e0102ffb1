"""Events too large for the endpoint: refused before they are sent, counted as failed.

Event Hubs closes the connection of a request over 1,046,528 bytes and refuses an event over
1 MB (:mod:`ecomstream.eventhubs`). The clients would refuse such an event too, each in its own
words and with its size in the message (one summary line per size), and an event just under
their request limit could still make a request the service drops. :class:`OversizeGuard`
refuses it first, with one message for all of them, so the summary shows one clear line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ecomstream.producer.sender import Sender


def oversize_error(limit: int, endpoint: str) -> str:
    return (
        f"event larger than the {endpoint} limit ({limit:,} bytes of key + value): "
        "refused by the producer, not sent"
    )


class OversizeGuard:
    """A :class:`~ecomstream.producer.sender.Sender` that hands ``inner`` only the events whose
    key + value fit ``limit`` bytes; the others count as sent and failed, never retried."""

    def __init__(self, inner: Sender, limit: int, endpoint: str = "Event Hubs") -> None:
        self.inner = inner
        self.limit = limit
        self.refused = 0
        self._error = oversize_error(limit, endpoint)

    @property
    def sent(self) -> int:
        return self.inner.sent + self.refused

    @property
    def failed(self) -> int:
        return self.inner.failed + self.refused

    @property
    def timed_out(self) -> int:
        return int(getattr(self.inner, "timed_out", 0))

    @property
    def errors(self) -> Counter[str]:
        errors = Counter(self.inner.errors)
        if self.refused:
            errors[self._error] += self.refused
        return errors

    @property
    def acknowledged(self) -> int:
        return self.inner.acknowledged

    def send(self, key: bytes | None, value: bytes) -> None:
        self.send_batch(((key, value, None),))

    def send_batch(self, records: Sequence[tuple[bytes | None, bytes, Any]]) -> None:
        limit = self.limit
        if all(len(value) + len(key or b"") <= limit for key, value, _ in records):
            self.inner.send_batch(records)
            return
        # keep the order: the events around a refused one go as they came
        run: list[tuple[bytes | None, bytes, Any]] = []
        for record in records:
            key, value, _ = record
            if len(value) + len(key or b"") <= limit:
                run.append(record)
                continue
            if run:
                self.inner.send_batch(run)
                run = []
            self.refused += 1
        if run:
            self.inner.send_batch(run)

    def poll(self) -> None:
        self.inner.poll()

    def flush(self, timeout_s: float) -> int:
        return self.inner.flush(timeout_s)

    def close(self) -> None:
        self.inner.close()
