"""Issue 11, case 2: a lost or foreign checkpoint while the tables hold data.

A new checkpoint reads the topic from the start again: without the start-up guard
(``jobs/checkpoints.py``) the run after a lost checkpoint duplicates bronze, and without the
roll-back of the newest batch a batch that died half way before the checkpoint was lost leaves
the tables inconsistent after ``--reset-checkpoints`` (here gold/location_sales misses the
orders silver and gold/category_sales took before the death). Protections this module catches
missing: the refusal of a lost, foreign (other tables, other topic) or unknown-layout
checkpoint; the roll-back and the start at bronze's newest offset + 1 of the reset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from ecomstream.adapters.base import TABLE_KEYS
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.ledger import Ledger
from tests.conftest import Broker
from tests.integration.test_pipeline import _once, _one_clear_line
from tests.integration.test_pipeline_checks import (
    assert_exact,
    metrics_rows,
    order,
    record,
    run_cli,
    tables,
)
from tests.kafka_helpers import send_all

MARKER = "_ecomstream_checkpoint.json"


def versions(data_dir: Path) -> dict[str, int]:
    return {key: DeltaTable(str(data_dir / key)).version() for key in TABLE_KEYS}


def refused(broker: Broker, topic: str, data_dir: Path, *extra: str) -> str:
    """The pipeline's one line on stderr, with a non-zero exit and no table changed."""
    before = versions(data_dir)
    done = run_cli(
        "pipeline", "--once", "--data-dir", str(data_dir),
        "--bootstrap-servers", broker.bootstrap, "--topic", topic, *extra,
    )  # fmt: skip
    line = _one_clear_line(done)
    assert versions(data_dir) == before, "a refused start changed a table"
    return line


def dying_after_batch_0_except(held: set[str]) -> Any:
    """Ledger writes of batch >= 1 commit only for the tables in ``held``; the others die before
    they commit, which fails the batch (and so the query) with exactly ``held`` holding it."""
    save_rows = Ledger._save_rows

    def gated(self: Ledger, rows: Any, schema: Any, key: str, table: Any, batch: int, *a: Any):  # type: ignore[no-untyped-def]
        if batch >= 1 and key not in held:
            raise RuntimeError(f"died before {key} committed batch {batch}")
        return save_rows(self, rows, schema, key, table, batch, *a)

    return gated


def test_a_lost_checkpoint_is_refused_and_the_reset_makes_a_half_written_batch_good(
    spark, kafka_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    topic = kafka_broker.new_topic("lost")
    data_dir = tmp_path / "data"
    checkpoint = data_dir / "_checkpoints" / "medallion"
    run1 = [
        record(order("a1", 0.1)),
        record(order("a2", 0.5, category="Fashion", price=30)),
        record(order("a3", 1.2, country="US", city="New York")),
        record("not json"),
        record(order("e1", 0.3, quantity=None)),
    ]
    send_all(kafka_broker.bootstrap, topic, run1)
    _once(kafka_broker, topic, data_dir)
    assert_exact(data_dir, run1)

    # Batch 1 dies half way: silver and category gold commit it, bronze, quarantine, location
    # gold and metrics do not (their writes run side by side: any subset can be in).
    run2 = [
        record(order("b1", 0.2, country="DE", city="Berlin")),
        record(order("b2", 3.5, category="Toys", price="7.25", quantity=3)),
        record(order("a1", 0.1)),  # a duplicate of batch 0's order
        record(order("b3", 2.0, price="abc")),
        record(order("b4", 2.5, country="US", city="Boston")),
    ]
    send_all(kafka_broker.bootstrap, topic, run2)
    ahead = {"silver/orders", "gold/category_sales"}
    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "_save_rows", dying_after_batch_0_except(ahead))
        with pytest.raises(EcomstreamError):
            _once(kafka_broker, topic, data_dir)
    silver = {r.order_id for r in tables(spark, data_dir)["silver/orders"].collect()}
    assert {"b1", "b2", "b4"} <= silver and tables(spark, data_dir)["bronze/orders"].count() == 5

    # ... and then the checkpoint is lost (a data dir copied without it).
    old = tmp_path / "old-checkpoint"
    shutil.move(checkpoint, old)
    line = refused(kafka_broker, topic, data_dir)
    assert f"checkpoint {checkpoint} is missing" in line and topic in line, line
    assert "duplicate" in line and "--reset-checkpoints" in line, line
    assert not checkpoint.exists()

    _once(kafka_broker, topic, data_dir, reset_checkpoints=True)
    counts = assert_exact(data_dir, run1 + run2)
    assert counts == {"bronze": 10, "silver": 6, "quarantine": 3, "duplicates": 1}
    rows = metrics_rows(data_dir)
    assert sum(r.input_rows for r in rows if r.query == "bronze") == 10
    assert sum(r.silver_rows for r in rows if r.query == "silver") == 6
    assert sum(r.quarantine_rows for r in rows if r.query == "silver") == 3
    assert sum(r.duplicates_dropped for r in rows if r.query == "silver") == 1

    # A restored backup of the old checkpoint belongs to the tables as they were: refused.
    new = tmp_path / "new-checkpoint"
    shutil.move(checkpoint, new)
    shutil.copytree(old, checkpoint)
    line = refused(kafka_broker, topic, data_dir)
    assert "belongs to other tables" in line and "--reset-checkpoints" in line, line
    shutil.rmtree(checkpoint)

    # A checkpoint of another topic, and one of an unknown layout: refused.
    shutil.copytree(new, checkpoint)
    marker = json.loads((checkpoint / MARKER).read_text())
    for name in (p.name for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()):
        offsets = checkpoint / "offsets" / name
        offsets.write_text(offsets.read_text().replace(f'"{topic}"', '"another-topic"'))
    line = refused(kafka_broker, topic, data_dir)
    assert "written for topic 'another-topic'" in line and repr(topic) in line, line
    shutil.rmtree(checkpoint)
    shutil.copytree(new, checkpoint)
    (checkpoint / MARKER).write_text(json.dumps({**marker, "layout": 99}))
    line = refused(kafka_broker, topic, data_dir)
    assert "layout 99" in line, line
    shutil.rmtree(checkpoint)

    # The reset's checkpoint goes on as any checkpoint does.
    shutil.move(new, checkpoint)
    run3 = [record(order("c1", 4.0)), record(order("b2", 3.5, category="Toys"))]
    send_all(kafka_broker.bootstrap, topic, run3)
    _once(kafka_broker, topic, data_dir)
    counts = assert_exact(data_dir, run1 + run2 + run3)
    assert counts == {"bronze": 12, "silver": 7, "quarantine": 3, "duplicates": 2}
