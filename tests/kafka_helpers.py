"""Small kafka-python helpers shared by the integration tests."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def send_all(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def read_all(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """Every record on ``topic`` from the earliest offset to the end offsets seen at call time."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        assert partitions, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes]] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "timed out reading the topic back"
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((msg.key, msg.value) for msg in batch)
        return out
    finally:
        consumer.close()


def wait_for_records(
    bootstrap: str, topic: str, at_least: int, timeout_s: float = 120.0, proc: Any = None
) -> int:
    """Until ``topic`` holds at least ``at_least`` records (the sum of its end offsets); returns
    that count. ``proc``, when given, must stay alive meanwhile (its exit ends the wait)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            if proc is not None:
                assert proc.poll() is None, f"exited {proc.returncode} at {total} records"
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                tps = [TopicPartition(topic, p) for p in partitions]
                total = sum(consumer.end_offsets(tps).values())
                if total >= at_least:
                    return total
            time.sleep(0.2)
        raise AssertionError(f"{topic} holds {total} records, not {at_least}, after {timeout_s}s")
    finally:
        consumer.close()


def send_with_producer(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Send with the project's own producer client (confluent-kafka, 2 MiB records allowed, as
    ``ecomstream produce`` does); every record must be acknowledged."""
    from ecomstream.producer.sender import SenderSettings, open_sender

    sender = open_sender(SenderSettings(bootstrap_servers=bootstrap, topic=topic))
    try:
        sender.send_batch([(key, value, None) for key, value in records])  # type: ignore[misc]
        left = sender.flush(120)
    finally:
        sender.close()
    refused = (sender.failed, left, dict(sender.errors))
    assert refused == (0, 0, {}), f"the producer refused (failed, unsent, errors): {refused}"
