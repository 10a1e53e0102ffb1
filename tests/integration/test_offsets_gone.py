"""Issue 11, case 3: the topic no longer holds what the checkpoint points to.

Two ways: records removed before the pipeline read them (retention; here the admin API's
delete-records, which is what retention does to a partition's start), and a topic deleted and
recreated, whose offsets restart at 0. Protections this module catches missing: the start-up
check of the checkpoint's next offsets against the partitions' first offsets (without it the
user sees Spark's own failure instead of one line naming the topic and the offsets), and the
topic-id check (without it a recreated topic that has grown past the old offsets is read from
the old position: its first records are skipped without a word, as no offset check can see).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from tests.conftest import Broker
from tests.integration.test_lost_checkpoints import refused, versions
from tests.integration.test_pipeline import _once
from tests.integration.test_pipeline_checks import assert_exact, order, record
from tests.kafka_helpers import read_all, send_all


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: int(o) for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def orders(prefix: str, n: int) -> list[tuple[bytes | None, bytes]]:
    return [record(order(f"{prefix}{i}", 0.1 * i, quantity=1 + i % 3)) for i in range(n)]


def test_records_removed_before_they_were_read_stop_with_the_offsets_until_skipped(
    kafka_broker: Broker, tmp_path: Path
):
    from confluent_kafka import TopicPartition as Partition
    from confluent_kafka.admin import AdminClient

    topic = kafka_broker.new_topic("gone")
    data_dir = tmp_path / "data"
    run1 = orders("a", 6)
    send_all(kafka_broker.bootstrap, topic, run1)
    _once(kafka_broker, topic, data_dir)
    read_up_to = end_offsets(kafka_broker.bootstrap, topic)
    send_all(kafka_broker.bootstrap, topic, orders("b", 12))
    now = end_offsets(kafka_broker.bootstrap, topic)
    # retention takes the two oldest unread records of each partition
    cut = {p: min(read_up_to[p] + 2, now[p]) for p in now}
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in admin.delete_records([Partition(topic, p, o) for p, o in cut.items()]).values():
        future.result(timeout=60)
    lost = sum(cut[p] - read_up_to[p] for p in cut)
    assert lost >= 2

    line = refused(kafka_broker, topic, data_dir)
    assert f"topic {topic!r} no longer holds {lost} records" in line, line
    for p in cut:
        if cut[p] > read_up_to[p]:
            want = f"partition {p}: next offset {read_up_to[p]}, first available {cut[p]}"
            assert want in line, line
    assert "--fail-on-data-loss false" in line, line

    # the documented recovery: one run that skips what is gone; the tables get all the rest
    _once(kafka_broker, topic, data_dir, fail_on_data_loss=False)
    kept = read_all(kafka_broker.bootstrap, topic)  # what the topic still holds
    counts = assert_exact(data_dir, run1 + kept)
    assert counts["bronze"] == 6 + 12 - lost and counts["silver"] == counts["bronze"]

    # later runs are back to the default (stop on loss) and continue exactly
    run3 = orders("c", 3)
    send_all(kafka_broker.bootstrap, topic, run3)
    _once(kafka_broker, topic, data_dir)
    assert assert_exact(data_dir, run1 + kept + run3)["bronze"] == 6 + 12 - lost + 3


def recreate(bootstrap: str, topic: str, partitions: int = 2, timeout_s: float = 120) -> None:
    """Delete ``topic`` and create it again (deletion is asynchronous: retried until it is
    gone)."""
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if topic not in admin.list_topics():
                    admin.create_topics([NewTopic(topic, partitions, 1)])
                    return
            except KafkaError:
                pass
            assert time.monotonic() < deadline, f"{topic} was not recreated in {timeout_s}s"
            time.sleep(0.5)
    finally:
        admin.close()


def test_a_recreated_topic_is_refused_even_past_the_old_offsets_and_a_new_data_dir_reads_it(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("again")
    data_dir = tmp_path / "data"
    run1 = orders("a", 4)
    send_all(kafka_broker.bootstrap, topic, run1)
    _once(kafka_broker, topic, data_dir)
    old = end_offsets(kafka_broker.bootstrap, topic)

    recreate(kafka_broker.bootstrap, topic)
    run2 = orders("n", 20)  # more than before: every partition passes its old end offset
    send_all(kafka_broker.bootstrap, topic, run2)
    new = end_offsets(kafka_broker.bootstrap, topic)
    assert all(new[p] > old[p] for p in old), (old, new)

    line = refused(kafka_broker, topic, data_dir)
    assert f"topic {topic!r} was deleted and recreated" in line, line
    assert re.search(r"topic id is \S+, the tables' is \S+", line), line
    assert "new --data-dir" in line, line
    # a reset cannot continue these tables either (the topic id outlives the checkpoint)
    line = refused(kafka_broker, topic, data_dir, "--reset-checkpoints")
    assert "was deleted and recreated" in line, line

    # the documented recovery: the new topic into a new data dir; the old tables stay as they are
    before = versions(data_dir)
    _once(kafka_broker, topic, tmp_path / "new")
    assert assert_exact(tmp_path / "new", run2)["bronze"] == 20
    assert versions(data_dir) == before
    assert assert_exact(data_dir, run1)["bronze"] == 4
