"""``ecomstream status`` and the status figures, from metrics rows and a Spark-written table."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ecomstream.cli import main
from ecomstream.demo.status import REASON_ORDER, render_text, summarize

T0 = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC)


def batch(query: str, batch_id: int, start_s: float, end_s: float, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "query": query,
        "batch_id": batch_id,
        "started_at": T0 + dt.timedelta(seconds=start_s),
        "finished_at": T0 + dt.timedelta(seconds=end_s),
        "duration_ms": int((end_s - start_s) * 1000),
        "input_rows": 0,
        "output_rows": 0,
        "silver_rows": None,
        "quarantine_rows": None,
        "duplicates_dropped": None,
        "quarantine_reasons": None,
        "max_event_time": None,
        "kafka_end_offset_total": None,
        "kafka_processed_offset_total": None,
    }
    row.update(values)
    return row


ROWS = [
    batch(
        "bronze",
        0,
        0,
        2,
        input_rows=100,
        output_rows=100,
        kafka_end_offset_total=150,
        kafka_processed_offset_total=100,
    ),
    batch(
        "bronze",
        1,
        5,
        7,
        input_rows=60,
        output_rows=60,
        kafka_end_offset_total=200,
        kafka_processed_offset_total=160,
    ),
    batch(
        "silver",
        0,
        2,
        4,
        input_rows=100,
        output_rows=95,
        silver_rows=90,
        quarantine_rows=5,
        duplicates_dropped=5,
        quarantine_reasons={"unknown_category": 2, "malformed_json": 3},
    ),
    batch(
        "silver",
        1,
        7,
        9,
        input_rows=60,
        output_rows=58,
        silver_rows=55,
        quarantine_rows=3,
        duplicates_dropped=2,
        quarantine_reasons=[("null_price", 1), ("malformed_json", 1), ("zz_new_code", 1)],
    ),
    batch(
        "gold", 0, 4, 6, input_rows=90, output_rows=12, max_event_time=T0 - dt.timedelta(seconds=30)
    ),
    batch(
        "gold", 1, 9, 10, input_rows=55, output_rows=9, max_event_time=T0 + dt.timedelta(seconds=3)
    ),
]


def test_totals_lag_reasons_and_freshness() -> None:
    now = T0 + dt.timedelta(seconds=20)
    status = summarize(ROWS, now)

    assert status.bronze_total == 160
    assert status.silver_total == 145
    assert status.quarantine_total == 8
    assert status.duplicates_dropped == 7
    # contract order first (malformed_json before null_price before unknown_category), new last
    assert list(status.quarantine_by_reason.items()) == [
        ("malformed_json", 4),
        ("null_price", 1),
        ("unknown_category", 2),
        ("zz_new_code", 1),
    ]
    # lag from the newest bronze batch: 200 - 160
    assert status.kafka_end_offset == 200
    assert status.kafka_lag == 40
    # freshness: now minus the newest gold event time (T0 + 3 s)
    assert status.freshness_s == pytest.approx(17.0)
    assert status.layers["bronze"].last_batch_ms == 2000
    assert status.layers["gold"].last_batch_ms == 1000
    assert status.layers["silver"].batches == 2


def test_rows_per_second_is_input_over_the_span_of_recent_batches() -> None:
    status = summarize(ROWS, T0 + dt.timedelta(seconds=20))
    # every batch ended within 60 s of the newest (T0+10 s): bronze 160 rows from T0 to T0+10 s
    assert status.layers["bronze"].rows_per_s == pytest.approx(160 / 10)
    assert status.layers["silver"].rows_per_s == pytest.approx(160 / 8)
    # a tight window keeps only the batches that ended in the last 3 s before T0+10 s
    tight = summarize(ROWS, T0 + dt.timedelta(seconds=20), rate_window_s=3)
    assert tight.layers["bronze"].rows_per_s == pytest.approx(60 / 5)
    assert tight.layers["gold"].rows_per_s == pytest.approx(55 / 1)


def test_no_batches_yet_has_no_rates_and_no_lag() -> None:
    status = summarize([], T0)
    assert set(status.layers) == {"bronze", "silver", "gold"}
    assert all(layer.rows_per_s is None and layer.batches == 0 for layer in status.layers.values())
    assert status.kafka_lag is None
    assert status.freshness_s is None
    assert status.bronze_total == 0
    assert "kafka lag: -" in render_text(status)


def test_naive_timestamps_are_utc() -> None:
    naive = [
        {
            **r,
            "started_at": r["started_at"].replace(tzinfo=None),
            "finished_at": r["finished_at"].replace(tzinfo=None),
            "max_event_time": r["max_event_time"] and r["max_event_time"].replace(tzinfo=None),
        }
        for r in ROWS
    ]
    assert summarize(naive, T0 + dt.timedelta(seconds=20)) == summarize(
        ROWS, T0 + dt.timedelta(seconds=20)
    )


def test_render_text_and_json_agree() -> None:
    status = summarize(ROWS, T0 + dt.timedelta(seconds=20))
    text = render_text(status)
    assert "totals: bronze 160, silver 145, quarantine 8, duplicates dropped 7" in text
    assert "kafka lag: 40 records" in text
    assert "malformed_json 4, null_price 1, unknown_category 2, zz_new_code 1" in text
    doc = status.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["kafka_lag"] == 40
    assert doc["layers"]["gold"]["last_batch_at"] == "2026-11-25T12:00:10Z"
    assert REASON_ORDER[0] == "malformed_json"


METRICS_DDL = (
    "query string, batch_id long, started_at timestamp, finished_at timestamp, "
    "duration_ms long, input_rows long, output_rows long, silver_rows long, "
    "quarantine_rows long, duplicates_dropped long, quarantine_reasons map<string,long>, "
    "max_event_time timestamp, kafka_end_offset_total long, kafka_processed_offset_total long"
)


def write_metrics(spark: Any, data_dir: Path, rows: list[dict[str, Any]]) -> None:
    """The metrics table as the pipeline writes it: Spark, Delta 4.4, the agreed columns."""
    plain = [{**r, "quarantine_reasons": dict(r["quarantine_reasons"] or {})} for r in rows]
    (
        spark.createDataFrame(plain, METRICS_DDL)
        .write.format("delta")
        .mode("append")
        .save(str(data_dir / "metrics" / "pipeline_batches"))
    )


@pytest.fixture(scope="module")
def data_dir(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("status-data")
    write_metrics(spark, root, ROWS[:3])
    write_metrics(spark, root, ROWS[3:])  # two commits, as batches arrive
    (root / "_ecomstream.json").write_text(json.dumps({"topic": "orders-x", "window": "1 minute"}))
    return root


def test_status_command_reads_the_spark_written_table(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "topic orders-x" in out
    assert "metrics version 1" in out
    assert "totals: bronze 160, silver 145, quarantine 8, duplicates dropped 7" in out
    assert "kafka lag: 40 records" in out


def test_status_as_a_process_prints_all_and_exits_with_the_commands_code(data_dir: Path) -> None:
    """``python -m ecomstream status`` leaves through os._exit (cli.FAST_EXIT_COMMANDS): the
    output still arrives whole (flushed first) and the exit code is the command's."""
    for args, code in (([str(data_dir), "--json"], 0), ([str(data_dir / "absent")], 3)):
        done = subprocess.run(
            [sys.executable, "-m", "ecomstream", "status", "--data-dir", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, done.stderr
        if code == 0:
            assert json.loads(done.stdout)["binding"]["topic"] == "orders-x"
        else:
            assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr


def test_status_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = summarize(ROWS, dt.datetime.fromisoformat(doc["generated_at"]))
    assert doc["quarantine_by_reason"] == expected.quarantine_by_reason
    assert doc["layers"]["bronze"]["input_total"] == 160
    assert doc["binding"]["topic"] == "orders-x"
    assert doc["freshness_s"] == pytest.approx(expected.freshness_s)


def test_status_without_metrics_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no pipeline metrics" in err and "Traceback" not in err
    assert main(["status", "--data-dir", str(tmp_path / "absent")]) == 3
    assert "does not exist" in capsys.readouterr().err
