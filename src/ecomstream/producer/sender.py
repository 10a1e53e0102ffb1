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

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
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

    @property
    def acknowledged(self) -> int: ...

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

        _quiet("kafka")
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

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass
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
        # only failures come back as callbacks: acknowledged = sent - failed - still queued
        "delivery.report.only.error": True,
    }
    if settings.security:  # Event Hubs: SASL_SSL and its limits, not the local endpoint's
        config.update(eventhubs.librdkafka_config(settings.security))
    return config


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
        self._client_errors: list[str] = []
        try:
            self._producer = Producer(config, logger=_quiet("ecomstream.librdkafka"))
        except KafkaException as exc:
            raise EcomstreamError(redact(f"invalid Kafka client settings: {exc}")) from None
        self._produce = self._producer.produce
        self._since_poll = 0
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

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            from confluent_kafka import KafkaError

            self.failed += 1
            if err.code() == KafkaError._MSG_TIMED_OUT:
                self.timed_out += 1
            self.errors[redact(err.str())] += 1

    @property
    def acknowledged(self) -> int:
        return self.sent - self.failed - len(self._producer)

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
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(deadline - time.monotonic(), 0.1))
        self._producer.poll(0)
        return max(self.sent - self.acknowledged - self.failed, 0)

    def close(self) -> None:
        self._producer.flush(5)


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
