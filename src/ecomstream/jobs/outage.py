"""A continuous run rides through a broker outage up to ``--broker-outage-limit``, then stops.

What Spark's Kafka source does on its own when the broker goes away (Spark 4.x,
``KafkaOffsetReaderAdmin`` and the executors' cached consumers): the driver fetches the latest
offsets through an AdminClient, each attempt waiting up to the client's
``default.api.timeout.ms`` (60 s), ``fetchOffset.numRetries`` attempts (3)
``fetchOffset.retryIntervalMs`` (1 s) apart; an executor's fetch polls for up to
``kafkaConsumer.pollTimeoutMs`` (``spark.network.timeout``, 120 s). Both reconnect by themselves
when the broker is back, so the query rides through a short outage untouched; a longer one ends
it with ``TimeoutException: Timed out waiting for a node assignment. Call: listNodes`` (measured
here: 193 s after the broker stopped), a time nobody chose.

So the pipeline makes the limit the user's:

- :func:`source_options` stretches those waits past the limit, so Spark never gives up first;
- :class:`OutageWatch` asks the broker itself every ``PROBE_EVERY_S`` (the adapter's
  ``kafka_reachable`` hook) and, once it has not answered for the limit, the run stops with one
  line naming the broker and the limit (exit 1).

Stopping interrupts the batch in flight; that is the kill -9 case the ledger already covers:
the next start replays the batch and every write it had made is skipped, so nothing is
duplicated and nothing already written is touched.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable

from ecomstream.errors import EcomstreamError

log = logging.getLogger("ecomstream.pipeline")

DEFAULT_LIMIT_S = 60.0
PROBE_EVERY_S = 2.0
# Spark 4.x's defaults, which the source options below only ever raise
_ADMIN_TIMEOUT_S = 60.0  # the AdminClient's default.api.timeout.ms
_FETCH_RETRIES = 3  # fetchOffset.numRetries
_FETCH_INTERVAL_S = 1.0  # fetchOffset.retryIntervalMs
_POLL_TIMEOUT_S = 120.0  # kafkaConsumer.pollTimeoutMs (spark.network.timeout)


def source_options(limit_s: float) -> dict[str, str]:
    """Kafka source options under which Spark waits out an outage of ``limit_s`` and more.

    With the default limit (60 s) they are Spark's own defaults: the driver already waits
    ~3 x 61 s. A longer limit gets enough offset-fetch attempts and a long enough executor
    poll to outlast it by a minute.
    """
    span_s = limit_s + _ADMIN_TIMEOUT_S
    retries = max(_FETCH_RETRIES, math.ceil(span_s / (_ADMIN_TIMEOUT_S + _FETCH_INTERVAL_S)) + 1)
    poll_s = max(_POLL_TIMEOUT_S, span_s)
    return {
        "fetchOffset.numRetries": str(retries),
        "fetchOffset.retryIntervalMs": str(int(_FETCH_INTERVAL_S * 1000)),
        "kafkaConsumer.pollTimeoutMs": str(int(poll_s * 1000)),
    }


class OutageWatch:
    """Probes the broker in a thread of its own (a probe of a dead broker takes seconds, which
    must not hold up the loop that answers Ctrl-C); :meth:`check`, called from that loop, raises
    once the broker has been unreachable for ``limit_s``.

    ``probe`` returns True (answered), False (did not) or None (cannot tell: never counts).
    An outage is timed from the start of the first probe that failed; one answer ends it.
    """

    def __init__(
        self,
        probe: Callable[[], bool | None],
        broker: str,
        limit_s: float,
        *,
        every_s: float = PROBE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.broker = broker
        self.limit_s = limit_s
        self.every_s = every_s
        self.clock = clock
        self.outages = 0  # outages seen to end (the broker answered again)
        self._down_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ecomstream-outage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # a probe in flight ends within its own timeout; the thread is a daemon either way
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.observe()
            self._stop.wait(self.every_s)

    def observe(self) -> None:
        """One probe, and what it says about the outage."""
        started = self.clock()
        try:
            answered = self.probe()
        except Exception:  # a probe that breaks says nothing about the broker
            answered = None
        with self._lock:
            if answered is False and self._down_since is None:
                self._down_since = started
                log.info(json.dumps({"event": "broker_unreachable", "broker": self.broker}))
            elif answered and self._down_since is not None:
                self.outages += 1
                lasted = round(self.clock() - self._down_since, 1)
                self._down_since = None
                log.info(
                    json.dumps({"event": "broker_back", "broker": self.broker, "outage_s": lasted})
                )

    def down_for(self) -> float:
        """Seconds the broker has been unreachable (0 while it answers)."""
        with self._lock:
            return 0.0 if self._down_since is None else self.clock() - self._down_since

    def check(self) -> None:
        down = self.down_for()
        if down >= self.limit_s:
            raise EcomstreamError(
                f"Kafka broker at {self.broker} has not answered for {down:.0f}s, past "
                f"--broker-outage-limit {self.limit_s:g}s: the pipeline stopped (every table "
                "is consistent; start it again once the broker is back and it continues "
                "where it stopped)",
                exit_code=1,
            )


def quiet_kafka_client_logs() -> None:
    """kafka-python logs each refused connection at WARNING/ERROR; with no handler configured
    Python would print those to stderr during an outage. The watch's own events say it once."""
    logger = logging.getLogger("kafka")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
