"""Exactly-once across crashes: SIGKILL the pipeline (driver and JVM) at several points, restart.

Kill points: inside a silver batch (after its quarantine append and silver MERGE committed, before
the checkpoint recorded the batch: the test hook ``ECOMSTREAM_TEST_PAUSE_IN_BATCH`` holds the
batch there), inside a gold batch the same way, and at an arbitrary moment of a continuous run
while all three queries work. After a final ``--once`` every table must be exact.
The negative control (test_crash_negative.py) shows the same check fails without idempotence.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tests.conftest import Broker
from tests.integration.test_pipeline_checks import (
    Running,
    assert_exact,
    metrics_rows,
    order,
    record,
    run_cli,
)
from tests.kafka_helpers import send_all

HOOK = "ECOMSTREAM_TEST_PAUSE_IN_BATCH"


def orders_with_faults(seed: int, n: int, prefix: str) -> list[tuple[bytes | None, bytes]]:
    """Valid orders over ten minutes, with exact re-sends and every kind of rejected record."""
    rng = random.Random(seed)
    faults = [
        {"price": "abc"}, {"price": None}, {"price": "0"}, {"quantity": "2.5"},
        {"quantity": None}, {"quantity": -1}, {"category": "Cars"}, {"order_timestamp": "soon"},
    ]  # fmt: skip
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        roll = rng.random()
        oid = f"{prefix}-{i}"
        if roll < 0.1 and out:
            out.append(rng.choice(out))  # an exact duplicate of an earlier record
        elif roll < 0.2:
            out.append(record(order(oid, rng.uniform(0, 10), **rng.choice(faults))))
        elif roll < 0.23:
            out.append(record("{broken"))
        else:
            cat = rng.choice(["Books", "Toys", "Sports"])
            out.append(
                record(order(oid, rng.uniform(0, 10), category=cat, quantity=rng.randint(1, 5)))
            )
    return out


def _args(broker: Broker, topic: str, data_dir: Path, *extra: str) -> list[str]:
    return [
        "pipeline", "--data-dir", str(data_dir), "--bootstrap-servers", broker.bootstrap,
        "--topic", topic, "--max-offsets-per-trigger", "150", *extra,
    ]  # fmt: skip


def crash_inside_batches(broker: Broker, topic: str, data_dir: Path, **env: str) -> None:
    """Two kills, each inside a batch whose writes have committed but whose checkpoint has not."""
    for query in ("silver", "gold"):
        run = Running(*_args(broker, topic, data_dir, "--once"), **{HOOK: f"{query}:600"}, **env)
        try:
            run.wait_for(f"ECOMSTREAM_TEST_HOOK paused {query} batch", timeout=600)
        finally:
            run.kill9()


def test_kill_9_at_several_points_then_restart_is_exact(
    spark, kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("crash")
    data_dir = tmp_path / "data"
    first = orders_with_faults(1, 400, "a")
    send_all(kafka_broker.bootstrap, topic, first)

    crash_inside_batches(kafka_broker, topic, data_dir)

    # an arbitrary moment: continuous mode with new data, killed while the queries are busy
    second = orders_with_faults(2, 400, "b") + first[:20]  # late duplicates from the first lot
    send_all(kafka_broker.bootstrap, topic, second)
    run = Running(*_args(kafka_broker, topic, data_dir, "--trigger-interval", "0"))
    try:
        run.wait_for('"query": "bronze"', timeout=600)
    finally:
        run.kill9()

    done = run_cli(*_args(kafka_broker, topic, data_dir, "--once"), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = assert_exact(spark, data_dir, first + second)
    assert counts["bronze"] == len(first) + len(second)
    assert counts["duplicates"] >= 20

    # a replayed batch wrote its metrics row once, not twice
    rows = metrics_rows(spark, data_dir)
    per_batch = Counter((r.query, r.batch_id) for r in rows if r.query in {"silver", "gold"})
    assert max(per_batch.values()) == 1, per_batch.most_common(3)
