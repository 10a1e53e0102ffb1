"""Delivery over the Kafka protocol: kafka-python, or confluent-kafka (librdkafka) when installed.

Both are set up the same way: ``acks=all`` with idempotence (no duplicates or reordering from
retries), the Java client's murmur2 key partitioner (so a key lands on the same partition
whichever client sent it), batching and compression chosen by measurement (see
docs/producer.md). Every record handed over ends either acknowledged or counted as failed with
its error; :meth:`Sender.flush` waits for the outstanding ones.

A broker that goes away is retried, record by record, for ``delivery_timeout_s`` after the
record was handed over (librdkafka's ``message.timeout.ms``, kafka-python's
``delivery_timeout_ms``); the idempotent producer's sequence numbers make those retries land
once each when the broker comes back. A record still unacknowledged then counts as failed and
in ``timed_out``: it may or may not be on the topic (its acknowledgement may be what was lost).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ecomstream import eventhubs
from ecomstream.errors import EcomstreamError, redact

CLIENTS = ("kafka-python", "confluent")
CONNECT_TIMEOUT_S = 10.0
# The largest request a client sends to the local endpoint: a 1 MiB value with its key and
# framing (the clients' defaults, ~1 MB, refuse it before it leaves). The embedded broker takes
# the same (broker.MAX_MESSAGE_BYTES). Event Hubs has smaller limits: eventhubs.py.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_DELIVERY_TIMEOUT_S = 120.0
# What librdkafka logs for a run that goes wrong (issue 26): connections and re-bootstraps
# (broker), metadata and partition leaders (topic), message batches and retries (msg), and the
# idempotent producer's producer id and sequence state (eos). Kept in memory, the newest
# CLIENT_LOG_LINES lines, and written out only when records failed or stalled; about 100 lines
# a second at 2,000 orders/s.
CLIENT_DEBUG = "broker,topic,msg,eos"
CLIENT_LOG_LINES = 200_000
# How often librdkafka reports its internal state (statistics.interval.ms): what a stall is
# explained with while it lasts
STATS_INTERVAL_MS = 1000
NO_REASON = "connected, records queued, none acknowledged"
# The longest wait between two attempts to reconnect to a broker (both clients)
RECONNECT_BACKOFF_MAX_MS = 1000
# How long recover() serves the old client's reports of the records it purged
PURGE_REPORTS_S = 2.0
# The stall watch's probe of the broker: every partition of the topic answers from its leader
PROBE_TIMEOUT_S = 3.0
# How long a new sender waits, before its first record, for every partition of its topic to
# answer from a leader (see wait_until_writable)
TOPIC_READY_TIMEOUT_S = 30.0


def default_client() -> str:
    """confluent-kafka when it is installed (it is a project dependency), else kafka-python."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "kafka-python"
    return "confluent"


@dataclass(frozen=True)
class SenderSettings:
    bootstrap_servers: str
    topic: str
    client: str = "confluent"
    linger_ms: int = 20
    batch_bytes: int = 512 * 1024
    compression: str = "none"
    # how long each record is retried (a broker outage) before it counts as failed
    delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S
    # extra client settings (Event Hubs SASL_SSL), in kafka-python's spelling
    security: dict[str, Any] = field(default_factory=dict, repr=False)


class Sender(Protocol):
    sent: int
    failed: int
    timed_out: int  # of ``failed``: not acknowledged within the delivery timeout
    errors: Counter[str]
    client_log: ClientLog

    @property
    def acknowledged(self) -> int: ...

    def stall_reason(self) -> str: ...

    def broker_serving(self) -> bool: ...

    def recover(self) -> int: ...

    def send(self, key: bytes | None, value: bytes) -> None: ...

    def send_batch(self, records: Sequence[tuple[bytes | None, bytes, Any]]) -> None: ...

    def poll(self) -> None: ...

    def flush(self, timeout_s: float) -> int: ...

    def close(self) -> None: ...


def _quiet(logger_name: str) -> logging.Logger:
    """Client libraries log connection errors: keep them off the user's terminal."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


class ClientLog(logging.Handler):
    """The client library's newest log lines, in memory; written to a file only when a run went
    wrong, so that a stall nobody can reproduce leaves its evidence behind."""

    def __init__(self, lines: int = CLIENT_LOG_LINES, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=lines)
        self._warning: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage()
        self._lines.append(f"{stamp}.{int(record.msecs):03d} {message}")
        if record.levelno >= logging.WARNING:
            self._warning = message

    def last_warning(self) -> str | None:
        """The newest line at WARNING or above."""
        return redact(self._warning) if self._warning else None

    def attach(self, logger_name: str) -> logging.Logger:
        logger = _quiet(logger_name)
        logger.addHandler(self)
        if logger.getEffectiveLevel() > self.level or logger.level == logging.NOTSET:
            logger.setLevel(self.level)
        return logger

    def write(self, path: Path) -> int:
        """The kept lines into ``path`` (secrets redacted); how many were written."""
        lines = list(self._lines)
        path.write_text("".join(redact(line) + "\n" for line in lines))
        return len(lines)


def _unreachable(settings: SenderSettings, detail: str) -> EcomstreamError:
    if "auth" in detail.lower():
        return EcomstreamError(
            redact(f"Kafka at {settings.bootstrap_servers} refused the credentials ({detail})")
        )
    return EcomstreamError(
        redact(
            f"cannot reach Kafka at {settings.bootstrap_servers} within {CONNECT_TIMEOUT_S:.0f}s "
            f"({detail}): is the broker running? (ecomstream kafka start)"
        )
    )


class KafkaPythonSender:
    """kafka-python: pure Python, always available."""

    def __init__(self, settings: SenderSettings) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        # its DEBUG lines cost throughput (kafka-python logs each request): INFO and above
        self.client_log = ClientLog(level=logging.INFO)
        self.client_log.attach("kafka")
        self.settings = settings
        self.sent = 0
        self.failed = 0
        self.timed_out = 0
        self._acked = 0
        self.errors: Counter[str] = Counter()
        delivery_ms = int(settings.delivery_timeout_s * 1000)
        config: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap_servers,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": settings.linger_ms,
            "batch_size": settings.batch_bytes,
            "compression_type": None if settings.compression == "none" else settings.compression,
            "max_block_ms": int(CONNECT_TIMEOUT_S * 1000),
            "bootstrap_timeout_ms": int(CONNECT_TIMEOUT_S * 1000),
            # the client wants delivery >= linger + request timeout
            "request_timeout_ms": max(min(30_000, delivery_ms - settings.linger_ms), 1000),
            "delivery_timeout_ms": max(delivery_ms, settings.linger_ms + 1000),
            "max_request_size": MAX_REQUEST_BYTES,
            # kafka-python backs off up to 30 s between reconnects by default: a broker back
            # from a restart then waited 9 s for its first record (bench_broker_kills)
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        }
        config.update(settings.security)
        if settings.security:  # Event Hubs: its limits, not the local endpoint's
            config.update(eventhubs.kafka_python_producer_config())
        _check_codec(settings.compression)
        try:
            self._producer = KafkaProducer(**config)
        except (KafkaError, OSError) as exc:
            raise _unreachable(settings, type(exc).__name__) from None
        try:
            # a metadata round trip: proves the broker answers (and creates the topic if the
            # broker auto-creates topics)
            self._producer.partitions_for(settings.topic)
        except (KafkaError, OSError) as exc:
            self._producer.close(timeout=1)
            raise _unreachable(settings, type(exc).__name__) from None

    @property
    def acknowledged(self) -> int:
        return self._acked

    def broker_serving(self) -> bool:
        return wait_until_writable(self.settings, timeout_s=PROBE_TIMEOUT_S)

    def recover(self) -> int:
        """kafka-python's sender recovers on its own (never seen stuck here): nothing to move."""
        return 0

    def stall_reason(self) -> str:
        """kafka-python keeps no statistics: its newest warning says the most."""
        last = self.client_log.last_warning()
        return f"last client warning: {last}" if last else NO_REASON

    def _ok(self, _metadata: object) -> None:
        self._acked += 1

    def _err(self, exc: BaseException) -> None:
        from kafka.errors import KafkaTimeoutError

        self.failed += 1
        if isinstance(exc, KafkaTimeoutError):
            self.timed_out += 1
        self.errors[redact(f"{type(exc).__name__}: {exc}")] += 1

    def send(self, key: bytes | None, value: bytes) -> None:
        self.sent += 1
        try:
            future = self._producer.send(self.settings.topic, value=value, key=key)
        except Exception as exc:  # the record was not accepted: count it as failed
            self._err(exc)
            return
        future.add_callback(self._ok)
        future.add_errback(self._err)

    def send_batch(self, records: Sequence[tuple[bytes | None, bytes, Any]]) -> None:
        send = self.send
        for key, value, _ in records:
            send(key, value)

    def poll(self) -> None:
        """kafka-python delivers on its own I/O thread: nothing to serve."""

    def flush(self, timeout_s: float) -> int:
        from kafka.errors import KafkaTimeoutError

        deadline = time.monotonic() + timeout_s
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass
        # Our own count decides, within the same timeout: kafka-python's flush returns once
        # each batch's future is done, before it has run the records' callbacks on its I/O
        # thread, and in bench_broker_kills it returned ~2 s into a 60 s flush with one record
        # of 3,943,603 neither acknowledged nor failed (and, it turned out, not on the topic)
        while self.sent - self._acked - self.failed > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sent - self._acked - self.failed

    def close(self) -> None:
        self._producer.close(timeout=5)


def _check_codec(compression: str) -> None:
    from kafka import codec

    available = {
        "none": True,
        "gzip": codec.has_gzip(),
        "snappy": codec.has_snappy(),
        "lz4": codec.has_lz4(),
        "zstd": codec.has_zstd(),
    }
    if not available.get(compression, False):
        raise EcomstreamError(
            f"kafka-python cannot compress with {compression} here (its codec library is not "
            "installed): use --compression gzip or none, or --client confluent"
        )


def _confluent_config(settings: SenderSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_bytes,
        "compression.type": settings.compression,
        "partitioner": "murmur2_random",  # the Java client's: same key, same partition
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.max.bytes": MAX_REQUEST_BYTES,
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
        "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
        # A broker back from a restart is found within a second: librdkafka's reconnect
        # back-off grows to 10 s by default (Java's client: 1 s), which added up to 10-15 s
        # between 'kafka start' returning and the first record acknowledged.
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        # With every broker down, librdkafka 2.10+ re-bootstraps: it destroys the broker
        # threads it knows and re-adds the bootstrap address, every 50 ms-1 s for the whole
        # outage (seen in the client log of issue 26's repro). Our endpoints (the embedded
        # broker, Event Hubs) have one address that comes back as it was: keep the known
        # broker and reconnect to it.
        "metadata.recovery.strategy": "none",
        # Every record's report comes back, and acknowledged counts the successes. Counting
        # only failures (acknowledged = sent - failed - len(producer)) broke once the client
        # logged through Python: len() counts the log and statistics events waiting to be
        # served too (62 of them after 2.5 s idle, issue 26). Measured, 200,000 records:
        # 0.40-0.42 CPU-s with every report against 0.43-0.59 with failures only.
        "delivery.report.only.error": False,
    }
    if settings.security:  # Event Hubs: SASL_SSL and its limits, not the local endpoint's
        config.update(eventhubs.librdkafka_config(settings.security))
    return config


def describe_stall(stats: dict[str, Any], last_error: str | None) -> str:
    """What librdkafka's statistics (statistics.interval.ms) say keeps queued records from the
    broker: no producer id, no broker connection, partitions without a leader, requests
    awaiting a response, and where the records wait."""
    parts: list[str] = []
    eos = stats.get("eos") or {}
    state = eos.get("idemp_state")
    if state and state != "Assigned":
        age = eos.get("idemp_stateage", 0) / 1e6
        parts.append(f"the idempotent producer has no producer id (state {state} for {age:.0f}s)")
    brokers = [b for b in (stats.get("brokers") or {}).values() if b.get("nodeid", -1) >= 0]
    if stats and not any(b.get("state") == "UP" for b in brokers):
        parts.append("no connection to a broker is up")
    queued: dict[int, int] = {}
    leaderless: list[int] = []
    unassigned = 0
    for topic in (stats.get("topics") or {}).values():
        for key, part in (topic.get("partitions") or {}).items():
            count = part.get("msgq_cnt", 0) + part.get("xmit_msgq_cnt", 0)
            if int(key) < 0:  # librdkafka's queue of records not yet given a partition
                unassigned += count
                continue
            queued[int(key)] = count
            if part.get("leader", -1) < 0:
                leaderless.append(int(key))
    if leaderless:
        parts.append(f"partitions without a leader: {sorted(leaderless)}")
    awaiting = sum(b.get("waitresp_cnt", 0) for b in brokers)
    if awaiting:
        parts.append(f"{awaiting} requests awaiting the broker's response")
    if any(queued.values()):
        parts.append(
            "queued per partition: " + ", ".join(f"{k}: {v}" for k, v in sorted(queued.items()))
        )
    if unassigned:
        parts.append(f"{unassigned:,} waiting for a partition (no metadata for the topic)")
    if last_error:
        parts.append(f"last client error: {last_error}")
    return "; ".join(parts) or NO_REASON


class ConfluentSender:
    """confluent-kafka: librdkafka does batching, compression and I/O in C threads."""

    POLL_EVERY = 1000

    def __init__(self, settings: SenderSettings) -> None:
        try:
            from confluent_kafka import KafkaException, Producer
        except ImportError:
            raise EcomstreamError(
                "--client confluent needs the confluent-kafka package (pip install confluent-kafka)"
            ) from None
        self.settings = settings
        self.sent = 0
        self.failed = 0
        self.timed_out = 0
        self.errors: Counter[str] = Counter()
        config = _confluent_config(settings)
        config["error_cb"] = self._client_error
        config["on_delivery"] = self._delivered
        config["debug"] = CLIENT_DEBUG
        config["statistics.interval.ms"] = STATS_INTERVAL_MS
        config["stats_cb"] = self._statistics
        self._client_errors: deque[str] = deque(maxlen=20)
        self._stats: dict[str, Any] | None = None
        self.client_log = ClientLog()
        self._new_producer = lambda: Producer(
            config, logger=self.client_log.attach("ecomstream.librdkafka")
        )
        try:
            self._producer = self._new_producer()
        except KafkaException as exc:
            raise EcomstreamError(redact(f"invalid Kafka client settings: {exc}")) from None
        self._produce = self._producer.produce
        self._since_poll = 0
        # clients replaced by recover(), kept until their in-flight records are settled
        self._retired: list[Any] = []
        self.moved = 0
        self._acked = 0
        try:
            meta = self._producer.list_topics(settings.topic, timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            self._producer.poll(0)  # serves error_cb: the connection error says the most
            first = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            detail = self._client_errors[-1] if self._client_errors else first
            raise _unreachable(settings, detail) from None
        # an unknown topic is fine (the broker creates it on first produce); being refused is not
        topic_meta = meta.topics.get(settings.topic)
        if (
            topic_meta is not None
            and topic_meta.error is not None
            and ("AUTHORIZATION" in topic_meta.error.name())
        ):
            raise EcomstreamError(
                redact(f"topic {settings.topic!r} is not usable: {topic_meta.error.str()}")
            )

    def _client_error(self, err: Any) -> None:
        self._client_errors.append(redact(err.str()))

    def _statistics(self, stats_json: str) -> None:
        try:
            self._stats = json.loads(stats_json)
        except ValueError:
            pass

    def stall_reason(self) -> str:
        return describe_stall(
            self._stats or {}, self._client_errors[-1] if self._client_errors else None
        )

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self._acked += 1
        else:
            from confluent_kafka import KafkaError

            if err.code() == KafkaError._PURGE_QUEUE:
                # purged from a stuck client's queue by recover(), so never sent: the new
                # client sends it
                self._produce(self.settings.topic, msg.value(), msg.key())
                self.moved += 1
                return
            self.failed += 1
            if err.code() == KafkaError._MSG_TIMED_OUT:
                self.timed_out += 1
            self.errors[redact(err.str())] += 1

    def broker_serving(self) -> bool:
        """Every partition of the topic answers from its leader (a quick probe of our own)."""
        return wait_until_writable(self.settings, timeout_s=PROBE_TIMEOUT_S)

    def recover(self) -> int:
        """Move the records a stuck client still queues to a new client; how many moved.

        Only queued records move: librdkafka never sent them (``purge`` of the queue, not of
        requests in flight), so no broker holds them and sending them again cannot put one on
        the topic twice. Records in flight stay with the old client, which goes on until each
        is acknowledged or fails. The new client has its own producer id."""
        old = self._producer
        before = self.moved
        self._producer = self._new_producer()
        self._produce = self._producer.produce
        self._retired.append(old)
        old.purge(in_queue=True, in_flight=False, blocking=True)
        # the purged records' reports come back through the old client's queue: _delivered
        # hands each to the new client (flush serves them; its in-flight ones may take longer)
        old.flush(PURGE_REPORTS_S)
        self._producer.poll(0)
        return self.moved - before

    @property
    def acknowledged(self) -> int:
        return self._acked

    def send(self, key: bytes | None, value: bytes) -> None:
        self.send_batch(((key, value, None),))

    def send_batch(self, records: Sequence[tuple[bytes | None, bytes, Any]]) -> None:
        """Hand ``records`` to librdkafka; ``sent`` counts each one the moment it holds it."""
        from confluent_kafka import KafkaException

        produce, poll, topic = self._produce, self._producer.poll, self.settings.topic
        for key, value, _ in records:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let librdkafka drain it
                    poll(0.05)
                except KafkaException as exc:  # refused before it was queued: failed
                    self.failed += 1
                    err = exc.args[0] if exc.args else exc
                    self.errors[redact(err.str() if hasattr(err, "str") else str(err))] += 1
                    break
            self.sent += 1
        self._since_poll += len(records)
        if self._since_poll >= self.POLL_EVERY:
            self._since_poll = 0
            poll(0)

    def poll(self) -> None:
        for retired in self._retired:
            retired.poll(0)
        self._producer.poll(0)

    def _outstanding(self) -> int:
        return self.sent - self._acked - self.failed

    def flush(self, timeout_s: float) -> int:
        """Until every record handed over is acknowledged or failed, or ``timeout_s``; how many
        are neither. The count is our own: librdkafka's (``len``, what its ``flush`` returns)
        also counts the log and statistics events waiting to be served."""
        deadline = time.monotonic() + timeout_s
        while True:
            for producer in [*self._retired, self._producer]:
                producer.flush(max(min(deadline - time.monotonic(), 1.0), 0.0))
            if self._outstanding() <= 0 or time.monotonic() >= deadline:
                return max(self._outstanding(), 0)

    def close(self) -> None:
        for producer in [*self._retired, self._producer]:
            producer.flush(5)


def wait_until_writable(settings: SenderSettings, timeout_s: float = TOPIC_READY_TIMEOUT_S) -> bool:
    """Until every partition of the topic answers a ListOffsets request, which only a
    partition's leader answers: the leader a produce request needs.

    A new idempotent producer whose first records reach a partition that is still getting its
    leader (a topic the broker is creating on first use) can lose them while reporting them
    delivered: the broker takes the records after them as the producer's first. Seen once in
    CI here, with librdkafka: a new topic's partition 0 began at sequence 3, its first three
    records gone, and the summary counted every record acknowledged (confluent-kafka-go#921
    reports the same after a leader election). Waiting for the leaders first closes the window.

    Returns False when the topic did not get there within ``timeout_s`` (no such topic and no
    auto-creation, a broker refusing the request): the records then go as before, and fail
    and are counted if the topic is not usable."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    _quiet("kafka")
    deadline = time.monotonic() + timeout_s
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "enable_auto_commit": False,
        "bootstrap_timeout_ms": int(timeout_s * 1000),
        **settings.security,
    }
    try:
        consumer = KafkaConsumer(**config)
    except (KafkaError, OSError):
        return False
    try:
        while True:
            partitions = consumer.partitions_for_topic(settings.topic)
            left_ms = int((deadline - time.monotonic()) * 1000)
            if partitions and left_ms > 0:
                tps = [TopicPartition(settings.topic, p) for p in sorted(partitions)]
                consumer.end_offsets(tps, timeout_ms=left_ms)
                return True
            if left_ms <= 0:
                return False
            time.sleep(0.1)
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()


def open_sender(settings: SenderSettings) -> Sender:
    sender: Sender
    if settings.client == "confluent":
        sender = ConfluentSender(settings)
    elif settings.client == "kafka-python":
        sender = KafkaPythonSender(settings)
    else:
        raise EcomstreamError(
            f"--client must be one of {', '.join(CLIENTS)}, not {settings.client!r}"
        )
    if settings.security:  # Event Hubs creates no hub on first use: a missing one is one line
        try:
            eventhubs.require_producer_hub(
                settings.bootstrap_servers, settings.security, settings.topic
            )
        except EcomstreamError:
            sender.close()
            raise
    wait_until_writable(settings)
    return sender
