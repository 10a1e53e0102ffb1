"""Shared by the pipeline and crash tests: build order records, run the CLI, check the tables.

``assert_exact`` is the whole-pipeline oracle: bronze holds every record on the topic exactly
once; silver and quarantine equal the pure transforms applied in batch to bronze (first valid
row per order_id, every rejected row once); gold equals the batch aggregate of silver, exactly.
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
def tables(spark: Any, data_dir: Path) -> dict[str, Any]:
    names = ("bronze/orders", "silver/orders", "silver/quarantine", "gold/category_sales",
             "gold/location_sales", "metrics/pipeline_batches")  # fmt: skip
    return {n: spark.read.format("delta").load(str(data_dir / n)) for n in names}


def _rows(df: Any, columns: list[str]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(_hashable(r[c]) for c in columns) for r in df.select(*columns).collect())


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


def assert_exact(
    spark: Any,
    data_dir: Path,
    on_topic: list[tuple[bytes | None, bytes]],
    window: str = "1 minute",
    categories: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Every table is exactly what the contract says for the records ``on_topic`` (checked
    against ``categories`` when the run was given its own catalogue)."""
    from ecomstream.catalogue import DEFAULT_CATEGORIES
    from ecomstream.transforms.gold import category_sales, location_sales
    from ecomstream.transforms.silver import first_per_order, validate

    t = tables(spark, data_dir)
    bronze = t["bronze/orders"]
    coords = _rows(bronze, ["kafka_partition", "kafka_offset"])
    dupes = [c for c, n in coords.items() if n > 1]
    assert not dupes, f"bronze holds {len(dupes)} Kafka records more than once, e.g. {dupes[:3]}"
    # raw_value as its bytes: collect() would decode it in the JVM, hiding invalid UTF-8
    raw = bronze.selectExpr("CAST(raw_value AS BINARY) AS text", "raw_bytes").collect()
    assert Counter((_hashable(r.text), _hashable(r.raw_bytes)) for r in raw) == Counter(
        _bronze_raw(v) for _, v in on_topic
    ), "bronze is not exactly the records on the topic"

    valid, quarantined = validate(bronze, categories or DEFAULT_CATEGORIES)
    silver_cols = ["order_id", "kafka_partition", "kafka_offset", "order_timestamp", "price",
                   "quantity", "total_amount", "category", "country", "city"]  # fmt: skip
    expected_silver = _rows(first_per_order(valid), silver_cols)
    got_silver = _rows(t["silver/orders"], silver_cols)
    assert got_silver == expected_silver, (
        f"silver differs: {sum((got_silver - expected_silver).values())} unexpected rows, "
        f"{sum((expected_silver - got_silver).values())} missing"
    )
    q_cols = ["kafka_partition", "kafka_offset", "raw_value", "raw_bytes", "reasons"]
    expected_q, got_q = _rows(quarantined, q_cols), _rows(t["silver/quarantine"], q_cols)
    assert got_q == expected_q, (
        f"quarantine differs: {sum((got_q - expected_q).values())} unexpected rows, "
        f"{sum((expected_q - got_q).values())} missing"
    )

    silver = t["silver/orders"]
    for name, aggregate in (
        ("gold/category_sales", category_sales),
        ("gold/location_sales", location_sales),
    ):
        expected = aggregate(silver, window)
        cols = expected.columns
        got_rows, want_rows = _rows(t[name], cols), _rows(expected, cols)
        assert got_rows == want_rows, (
            f"{name} differs from the batch aggregate of silver: "
            f"{sorted((got_rows - want_rows).elements())[:3]} vs "
            f"{sorted((want_rows - got_rows).elements())[:3]}"
        )
    n_valid = valid.count()
    return {
        "bronze": sum(coords.values()),
        "silver": sum(got_silver.values()),
        "quarantine": sum(got_q.values()),
        "duplicates": n_valid - sum(got_silver.values()),
    }


def metrics_rows(spark: Any, data_dir: Path) -> list[Any]:
    path = str(data_dir / "metrics/pipeline_batches")
    return list(spark.read.format("delta").load(path).collect())


def wait_for_layers(
    spark: Any, data_dir: Path, run: Running, n: int, timeout: float, quarantined: int | None = None
) -> None:
    """Until the metrics say silver inserted ``n`` orders and gold aggregated ``n`` (and, when
    given, silver quarantined ``quarantined`` rows)."""
    deadline = time.monotonic() + timeout
    silver = quarantine = gold = 0
    while time.monotonic() < deadline:
        if (data_dir / "metrics/pipeline_batches/_delta_log").exists():
            rows = metrics_rows(spark, data_dir)
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
