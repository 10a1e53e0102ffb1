"""Shared by the pipeline and crash tests: build order records, run the CLI, check the tables.

``assert_exact`` is the whole-pipeline oracle: bronze holds every record on the topic exactly
once; silver, quarantine and gold equal what the plain-Python contract model
(tests/unit/contract_model.py, independent of ``src/``) says for those records, every column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.unit import contract_model as model

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


def order(oid: str, minute: float = 0, **fields: Any) -> dict[str, Any]:
    """A valid order ``minute`` minutes after T0; ``fields`` override (``None`` removes)."""
    ts = (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    event: dict[str, Any] = {
        "order_id": oid,
        "order_timestamp": ts,
        "customer_id": "c-1",
        "product_id": "p-1",
        "product_name": "A Book",
        "category": "Books",
        "price": "12.50",
        "quantity": 2,
        "currency": "USD",
        "payment_method": "paypal",
        "city": "Lyon",
        "state": "ARA",
        "country": "FR",
    }
    for key, value in fields.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def record(event: dict[str, Any] | str) -> tuple[bytes | None, bytes]:
    if isinstance(event, str):
        return None, event.encode()
    key = event.get("order_id")
    return (str(key).encode() if key else None), json.dumps(event).encode()


# -- running the CLI ----------------------------------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMSTREAM_TEST_")}
    env.pop("ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE", None)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecomstream", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(**env), cwd=REPO,
    )  # fmt: skip


class Running:
    """A pipeline subprocess in its own process group (so SIGKILL takes its JVM down too)."""

    def __init__(self, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecomstream", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(**env), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._lock = threading.Lock()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines:
                    if needle in line:
                        return line
            if self.proc.poll() is not None:
                time.sleep(0.5)  # let the pumps drain
                with self._lock:
                    tail = "\n".join(self.lines[-15:])
                code = self.proc.returncode
                raise AssertionError(f"pipeline exited {code} before {needle!r}:\n{tail}")
            time.sleep(0.2)
        raise AssertionError(f"no {needle!r} within {timeout}s:\n" + "\n".join(self.lines[-15:]))

    def kill9(self) -> None:
        """SIGKILL the whole process group: Python driver and Spark JVM die at once."""
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


# -- the oracle ---------------------------------------------------------------------------------
TABLES = ("bronze/orders", "silver/orders", "silver/quarantine", "gold/category_sales",
          "gold/location_sales", "metrics/pipeline_batches")  # fmt: skip


def tables(spark: Any, data_dir: Path) -> dict[str, Any]:
    """Every table as a Spark DataFrame (for what a test asks of Spark itself)."""
    return {n: spark.read.format("delta").load(str(data_dir / n)) for n in TABLES}


class Row(dict[str, Any]):
    """A table row read without Spark: ``row.column`` or ``row["column"]``, as Spark's Row."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def read_rows(path: Path, columns: list[str] | None = None) -> list[Row]:
    """A Delta table's rows, read by delta-rs (no Spark job, no JVM): the oracle and the tests'
    polls cost the session's JVM nothing while a pipeline runs beside them. Values come as
    Spark's ``collect()`` gives them: timestamps naive in UTC, maps as dicts, and string
    columns as text (pyarrow refuses a string column that is not valid UTF-8, contract §2)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    table = DeltaTable(str(path)).to_pyarrow_table(columns=columns)
    maps = {f.name for f in table.schema if pa.types.is_map(f.type)}
    return [
        Row({k: _spark_value(v, k in maps) for k, v in row.items()}) for row in table.to_pylist()
    ]


def _spark_value(value: Any, is_map: bool) -> Any:
    if is_map and value is not None:
        return dict(value)
    return model.naive_utc(value)


def _rows(path: Path, columns: list[str]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(_hashable(r[c]) for c in columns) for r in read_rows(path, columns))


def _hashable(value: Any) -> Any:
    if isinstance(value, bytearray):  # a binary column (raw_bytes)
        return bytes(value)
    return tuple(value) if isinstance(value, list) else value


def _bronze_raw(value: bytes | None) -> tuple[bytes | None, bytes | None]:
    """Contract §2: (raw_value as UTF-8 bytes, raw_bytes) for a payload. raw_value is the text
    with each invalid sequence replaced by U+FFFD (as Python's errors="replace" does), raw_bytes
    the payload itself when it is not valid UTF-8, else NULL."""
    if value is None:
        return None, None
    text = value.decode("utf-8", errors="replace").encode("utf-8")
    return text, (None if text == value else value)


SILVER_COLUMNS = [
    "order_id", "order_timestamp", "customer_id", "product_id", "product_name", "category",
    "price", "quantity", "currency", "payment_method", "city", "state", "country",
    "total_amount", "order_date", "order_hour", "price_band", "kafka_partition", "kafka_offset",
]  # fmt: skip
CATEGORY_COLUMNS = [
    "window_start", "window_end", "category", "order_count", "units_sold", "revenue",
    "avg_order_value",
]  # fmt: skip
LOCATION_COLUMNS = [
    "window_start", "window_end", "country", "city", "order_count", "units_sold", "revenue",
]  # fmt: skip


def assert_exact(
    data_dir: Path,
    on_topic: list[tuple[bytes | None, bytes]],
    window: str = "1 minute",
    categories: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Every table is exactly what the contract says for the records ``on_topic`` (checked
    against ``categories`` when the run was given its own catalogue).

    The oracle is tests/unit/contract_model.py, plain Python written from the contract and
    independent of ``src/``: bronze must hold every record on the topic once; the model, fed
    bronze's records in (partition, offset) order, says which ones silver holds (every silver
    column compared), which ones quarantine holds with which reasons, and what every gold row is.
    """
    from ecomstream.catalogue import DEFAULT_CATEGORIES

    raw = read_rows(
        data_dir / "bronze/orders", ["kafka_partition", "kafka_offset", "raw_value", "raw_bytes"]
    )
    coords = Counter((r.kafka_partition, r.kafka_offset) for r in raw)
    dupes = [c for c, n in coords.items() if n > 1]
    assert not dupes, f"bronze holds {len(dupes)} Kafka records more than once, e.g. {dupes[:3]}"
    texts = [None if r.raw_value is None else r.raw_value.encode() for r in raw]
    assert Counter(
        (text, _hashable(r.raw_bytes)) for text, r in zip(texts, raw, strict=True)
    ) == Counter(_bronze_raw(v) for _, v in on_topic), (
        "bronze is not exactly the records on the topic"
    )

    # the payloads as sent: raw_bytes when the payload was not UTF-8, else raw_value's bytes
    records = [
        (r.kafka_partition, r.kafka_offset, _hashable(r.raw_bytes or text))
        for text, r in zip(texts, raw, strict=True)
    ]
    outcome = model.run(records, categories or DEFAULT_CATEGORIES)
    expected_silver = Counter(
        tuple(row[c] for c in SILVER_COLUMNS) for row in outcome.silver.values()
    )
    got_silver = _rows(data_dir / "silver/orders", SILVER_COLUMNS)
    extra, missing = got_silver - expected_silver, expected_silver - got_silver
    assert got_silver == expected_silver, (
        f"silver differs from the contract model: {extra.total()} unexpected rows "
        f"(e.g. {sorted(extra.elements(), key=str)[:2]}), {missing.total()} missing "
        f"(e.g. {sorted(missing.elements(), key=str)[:2]})"
    )
    expected_q = Counter(
        (p, o, *outcome.raw[(p, o)], tuple(codes)) for (p, o), codes in outcome.quarantine.items()
    )
    q_cols = ["kafka_partition", "kafka_offset", "raw_value", "raw_bytes", "reasons"]
    got_q = _rows(data_dir / "silver/quarantine", q_cols)
    extra, missing = got_q - expected_q, expected_q - got_q
    assert got_q == expected_q, (
        f"quarantine differs from the contract model: {extra.total()} unexpected rows "
        f"(e.g. {sorted(extra.elements(), key=str)[:2]}), {missing.total()} missing "
        f"(e.g. {sorted(missing.elements(), key=str)[:2]})"
    )

    from ecomstream.transforms.gold import window_seconds  # the --window syntax, not a rule

    seconds = window_seconds(window)
    silver_rows = list(outcome.silver.values())
    for name, columns, aggregate in (
        ("gold/category_sales", CATEGORY_COLUMNS, model.category_sales),
        ("gold/location_sales", LOCATION_COLUMNS, model.location_sales),
    ):
        want = Counter((*k, *v) for k, v in aggregate(silver_rows, seconds).items())
        got = _rows(data_dir / name, columns)
        assert got == want, (
            f"{name} differs from the contract model's aggregate of silver: "
            f"{sorted((got - want).elements(), key=str)[:3]} vs "
            f"{sorted((want - got).elements(), key=str)[:3]}"
        )
    return {
        "bronze": sum(coords.values()),
        "silver": sum(got_silver.values()),
        "quarantine": sum(got_q.values()),
        "duplicates": len(outcome.duplicates),
    }


def metrics_rows(data_dir: Path) -> list[Row]:
    return read_rows(data_dir / "metrics/pipeline_batches")


def wait_for_layers(
    data_dir: Path, run: Running, n: int, timeout: float, quarantined: int | None = None
) -> None:
    """Until the metrics say silver inserted ``n`` orders and gold aggregated ``n`` (and, when
    given, silver quarantined ``quarantined`` rows)."""
    deadline = time.monotonic() + timeout
    silver = quarantine = gold = 0
    while time.monotonic() < deadline:
        if (data_dir / "metrics/pipeline_batches/_delta_log").exists():
            rows = metrics_rows(data_dir)
            silver = sum(r.silver_rows or 0 for r in rows if r.query == "silver")
            quarantine = sum(r.quarantine_rows or 0 for r in rows if r.query == "silver")
            gold = sum(r.input_rows or 0 for r in rows if r.query == "gold")
            if silver == n and gold == n and quarantined in (None, quarantine):
                return
            # the sums only grow: past the target, waiting longer cannot help
            if silver > n or gold > n or (quarantined is not None and quarantine > quarantined):
                break
        assert run.proc.poll() is None, run.output()[-3000:]
        time.sleep(2)
    raise AssertionError(
        f"continuous mode did not reach {n} ({quarantined} quarantined): silver {silver}, "
        f"quarantine {quarantine}, gold {gold}\n{run.output()[-3000:]}"
    )
