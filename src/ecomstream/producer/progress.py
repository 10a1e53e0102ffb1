"""Progress while producing: a live line on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Call :meth:`update` as often as you like; it writes at most every ``interval_s``."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        interval_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        is_tty = getattr(self.stream, "isatty", lambda: False)()
        self.live = is_tty if live is None else live
        self.interval_s = interval_s if interval_s is not None else (0.5 if self.live else 10.0)
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._last_t = self._start
        self._last_sent = 0
        self._width = 0

    def due(self) -> bool:
        return self._clock() - self._last_t >= self.interval_s

    def update(
        self, sent: int, acknowledged: int, failed: int, faults: int, *, force: bool = False
    ) -> None:
        now = self._clock()
        if not force and now - self._last_t < self.interval_s:
            return
        span = max(now - self._last_t, 1e-9)
        rate = (sent - self._last_sent) / span
        self._last_t, self._last_sent = now, sent
        line = (
            f"{rate:,.0f} events/s | sent {sent:,} | acknowledged {acknowledged:,} | "
            f"failed {failed:,} | faults {faults:,} | {now - self._start:,.0f}s"
        )
        if self.live:
            pad = max(self._width - len(line), 0)
            self._width = len(line)
            self.stream.write("\r" + line + " " * pad)
        else:
            self.stream.write("produce: " + line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
