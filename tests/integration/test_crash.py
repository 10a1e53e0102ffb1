"""Exactly-once across real process deaths: the pipeline ends (``os._exit``, no clean-up) right
after each point of a batch in turn, and a restart continues.

One chain of runs on one topic: each run dies at the next point of the write sequence
(``source``: the batch read and checked, nothing written; then right after each table's write
committed), and each restart first replays the batch the previous run died in. Then a
continuous run dies inside table maintenance, another is killed with SIGKILL at an arbitrary
moment, and a final ``--once`` drains the topic: every table must be exact and every batch's
metrics rows written once. The protections this proves, per point: the commit markers of
jobs/ledger.py (a replay skips the tables that hold the batch and writes the others) and the
replay path of silver (the orders a batch inserted are found at its Kafka coordinates).
tests/unit/test_batch.py runs the same sequence in-process with a negative control per table;
test_crash_negative.py shows this check failing when idempotence is off.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from ecomstream.jobs.batch import CRASH_HOOK_ENV, WRITE_SEQUENCE
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

HOOK = CRASH_HOOK_ENV
CRASHED = 137


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


def crash_at(broker: Broker, topic: str, data_dir: Path, point: str, **env: str) -> str:
    """Run ``--once`` until the hook ends the process right after ``point``; its hook line."""
    done = run_cli(*_args(broker, topic, data_dir, "--once"), timeout=600, **{HOOK: point}, **env)
    line = next((ln for ln in done.stdout.splitlines() if "ECOMSTREAM_TEST_HOOK" in ln), "")
    name, _, batch = point.partition(":")
    expected = f"crash after {name} batch {batch}" if batch else f"crash after {name} "
    assert done.returncode == CRASHED and expected in line, (
        f"expected to die after {point}: exit {done.returncode}\n{done.stderr[-2000:]}"
    )
    return line


def test_death_after_every_write_then_restart_is_exact(kafka_broker: Broker, tmp_path: Path):
    topic = kafka_broker.new_topic("crash")
    data_dir = tmp_path / "data"
    first = orders_with_faults(1, 1200, "a")  # 8 batches of 150
    send_all(kafka_broker.bootstrap, topic, first)

    # run k dies right after point k of batch k, having replayed batch k - 1 (the batch the
    # run before died in) first; a write a replay skips is no commit and fires no hook
    for batch, point in enumerate(("source", *WRITE_SEQUENCE)):
        crash_at(kafka_broker, topic, data_dir, f"{point}:{batch}")

    # inside table maintenance, in a continuous run that compacts every second
    second = orders_with_faults(2, 300, "b") + first[:20]  # late duplicates from the first lot
    send_all(kafka_broker.bootstrap, topic, second)
    run = Running(
        *_args(kafka_broker, topic, data_dir, "--maintenance-interval", "1 second"),
        **{HOOK: "maintenance"},
    )
    assert run.proc.wait(timeout=600) == CRASHED, run.output()[-3000:]
    assert "ECOMSTREAM_TEST_HOOK crash after maintenance" in run.output()

    # an arbitrary moment: SIGKILL while a continuous run works on new data
    third = orders_with_faults(3, 300, "c")
    send_all(kafka_broker.bootstrap, topic, third)
    run = Running(*_args(kafka_broker, topic, data_dir, "--trigger-interval", "0"))
    try:
        run.wait_for('"event": "batch_phases"', timeout=600)
    finally:
        run.kill9()

    done = run_cli(*_args(kafka_broker, topic, data_dir, "--once"), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    sent = first + second + third
    counts = assert_exact(data_dir, sent)
    assert counts["bronze"] == len(sent)

    # every batch that had records wrote its metrics rows once: one per layer
    rows = metrics_rows(data_dir)
    per_batch = Counter((r.query, r.batch_id) for r in rows)
    assert set(per_batch.values()) == {1}, per_batch.most_common(3)
    batches = {b for _, b in per_batch}
    assert all(per_batch[(q, b)] == 1 for q in ("bronze", "silver", "gold") for b in batches)
    assert sum(r.input_rows for r in rows if r.query == "bronze") == len(sent)
    # how many duplicates were dropped is observable, and exact
    silver = [r for r in rows if r.query == "silver"]
    assert sum(r.duplicates_dropped for r in silver) == counts["duplicates"]
    assert sum(r.silver_rows for r in silver) == counts["silver"]
    assert sum(r.quarantine_rows for r in silver) == counts["quarantine"]
