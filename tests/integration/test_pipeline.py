"""``ecomstream pipeline`` end to end against a real broker and real Delta tables.

The in-process runs use the session's SparkSession (the pipeline's ``getOrCreate`` finds it);
the CLI runs check what a user sees: exit codes, one clear line, tables untouched.
"""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from ecomstream.jobs import pipeline
from ecomstream.jobs.settings import PipelineSettings
from tests.conftest import Broker
from tests.integration.test_pipeline_checks import (
    Running,
    assert_exact,
    metrics_rows,
    order,
    record,
    run_cli,
    tables,
    wait_for_layers,
)
from tests.kafka_helpers import send_all


def _once(broker: Broker, topic: str, data_dir: Path, **kw: object) -> None:
    settings = PipelineSettings(
        topic=topic, data_dir=data_dir, bootstrap_servers=broker.bootstrap, once=True, **kw
    )  # type: ignore[arg-type]
    assert pipeline.run(settings) == 0


def test_once_is_exact_dedup_is_global_and_late_orders_update_gold(
    spark, kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("orders")
    data_dir = tmp_path / "data"
    run1 = [
        record(order("a1", 0.1)),
        record(order("a2", 0.5, category="Fashion", price=30)),
        record(order("a3", 1.2, country="US", city="New York")),
        record(order("a1", 0.1)),  # exact re-send: a duplicate
        record(order("b1", 1.5, price="abc")),  # rejected ...
        record(order("b1", 1.5)),  # ... then corrected: enters silver
        record("not json"),
        record("[1, 2]"),
        record(order("", 0.3)),
        record(order("e1", 0.3, quantity=None)),
        record(order("e2", 0.3, category="Cars")),
        record(order("e3", 0.3, price="-1", quantity=0)),
    ]
    send_all(kafka_broker.bootstrap, topic, run1)
    _once(kafka_broker, topic, data_dir)
    counts = assert_exact(data_dir, run1)
    assert counts == {"bronze": 12, "silver": 4, "quarantine": 7, "duplicates": 1}
    silver_ids = {r.order_id for r in tables(spark, data_dir)["silver/orders"].collect()}
    assert silver_ids == {"a1", "a2", "a3", "b1"}

    run2 = [
        record(order("a2", 0.5, category="Fashion", price=30)),  # a duplicate, one run later
        record(order("c1", 0.7)),  # late: lands in the first window, long closed
        record(order("d1", 5.0)),
        record(order("b1", 1.5, price="abc")),  # a rejected re-send after the valid one
    ]
    send_all(kafka_broker.bootstrap, topic, run2)
    _once(kafka_broker, topic, data_dir)
    counts = assert_exact(data_dir, run1 + run2)
    assert counts == {"bronze": 16, "silver": 6, "quarantine": 8, "duplicates": 2}

    gold = tables(spark, data_dir)["gold/category_sales"]
    first = [r for r in gold.collect() if r.category == "Books" and r.window_start.minute == 0]
    assert len(first) == 1
    assert (first[0].order_count, first[0].units_sold) == (2, 4)  # a1 and the late c1
    assert first[0].revenue == Decimal("50.00") and first[0].avg_order_value == Decimal("25.00")

    rows = metrics_rows(data_dir)
    silver = [r for r in rows if r.query == "silver"]
    assert sum(r.duplicates_dropped for r in silver) == 2
    assert sum(r.quarantine_rows for r in silver) == 8
    assert sum(r.silver_rows for r in silver) == 6
    reasons: dict[str, int] = {}
    for r in silver:
        for code, n in r.quarantine_reasons.items():
            reasons[code] = reasons.get(code, 0) + n
    assert reasons == {
        "malformed_json": 2, "missing_order_id": 1, "null_quantity": 1, "unknown_category": 1,
        "invalid_price": 2, "non_positive_price": 1, "non_positive_quantity": 1,
    }  # fmt: skip
    bronze = [r for r in rows if r.query == "bronze"]
    assert sum(r.input_rows for r in bronze) == 16
    assert max(r.kafka_processed_offset_total for r in bronze) == 16
    assert max(r.kafka_end_offset_total for r in bronze) == 16
    assert {r.query for r in rows} == {"bronze", "silver", "gold"}

    # a third run with nothing new changes nothing
    data_tables = [k for k in tables(spark, data_dir) if not k.startswith("metrics")]
    before = {k: tables(spark, data_dir)[k].count() for k in data_tables}
    _once(kafka_broker, topic, data_dir)
    assert {k: tables(spark, data_dir)[k].count() for k in data_tables} == before


def _one_clear_line(done) -> str:  # type: ignore[no-untyped-def]
    assert done.returncode != 0, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def _untouched(data_dir: Path) -> None:
    made = [p for p in data_dir.rglob("*") if p.name in {"_delta_log", "_checkpoints"}]
    assert not made, f"a failed start created {made}"


@pytest.fixture(scope="module")
def existing_topic(kafka_broker: Broker) -> str:
    topic = kafka_broker.new_topic("exists")
    send_all(kafka_broker.bootstrap, topic, [record(order("x1"))])
    return topic


def test_bad_input_is_one_clear_line_and_touches_no_table(
    kafka_broker: Broker, existing_topic: str, tmp_path: Path
):
    from ecomstream import broker

    data_dir = tmp_path / "d"
    base = ["pipeline", "--once", "--data-dir", str(data_dir)]
    ok = ["--bootstrap-servers", kafka_broker.bootstrap, "--topic", existing_topic]

    line = _one_clear_line(run_cli(*base, *ok, "--window", "5 parsecs"))
    assert "invalid --window" in line
    dead = f"127.0.0.1:{broker.free_port()}"
    line = _one_clear_line(run_cli(*base, "--bootstrap-servers", dead, "--topic", "t"))
    assert "unreachable" in line and dead in line
    line = _one_clear_line(
        run_cli(*base, "--bootstrap-servers", kafka_broker.bootstrap, "--topic", "no-such-topic")
    )
    assert "'no-such-topic' does not exist" in line
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_clear_line(run_cli("pipeline", "--once", "--data-dir", str(blocker / "sub"), *ok))
    assert "not writable" in line
    line = _one_clear_line(run_cli(*base, "--topic", existing_topic))
    assert "--bootstrap-servers is required" in line
    line = _one_clear_line(run_cli(*base, *ok, "--trigger-interval", "soon"))
    assert "invalid --trigger-interval" in line
    if data_dir.exists():
        _untouched(data_dir)


def test_a_data_dir_bound_to_another_topic_is_refused(
    kafka_broker: Broker, existing_topic: str, tmp_path: Path
):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "_ecomstream.json").write_text(json.dumps({"topic": "other", "window": "1 minute"}))
    done = run_cli(
        "pipeline", "--once", "--data-dir", str(data_dir),
        "--bootstrap-servers", kafka_broker.bootstrap, "--topic", existing_topic,
    )  # fmt: skip
    line = _one_clear_line(done)
    assert "holds topic 'other'" in line and existing_topic in line
    _untouched(data_dir)
    done = run_cli(
        "pipeline", "--once", "--data-dir", str(data_dir), "--window", "5 minutes",
        "--bootstrap-servers", kafka_broker.bootstrap, "--topic", "other",
    )  # fmt: skip
    if "does not exist" not in done.stderr:  # "other" may not exist on a shared broker
        assert "gold windows of '1 minute'" in _one_clear_line(done)


def test_continuous_mode_keeps_up_and_sigterm_stops_cleanly(kafka_broker: Broker, tmp_path: Path):
    topic = kafka_broker.new_topic("live")
    data_dir = tmp_path / "data"
    first = [record(order(f"o{i}", i / 10)) for i in range(50)]
    send_all(kafka_broker.bootstrap, topic, first)
    run = Running(
        "pipeline", "--data-dir", str(data_dir), "--trigger-interval", "500 ms",
        "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
    )  # fmt: skip
    try:
        wait_for_layers(data_dir, run, 50, timeout=600)
        second = [record(order(f"o{i}", i / 10)) for i in range(40, 80)]  # 10 duplicates
        send_all(kafka_broker.bootstrap, topic, second)
        wait_for_layers(data_dir, run, 80, timeout=400)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, run.output()
    finally:
        if run.proc.poll() is None:
            run.kill9()
    assert '"event": "stopped"' in run.output()
    counts = assert_exact(data_dir, first + second)
    assert counts["silver"] == 80 and counts["duplicates"] == 10
