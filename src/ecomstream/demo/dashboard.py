"""What the dashboard shows: one JSON snapshot built from the gold and metrics tables.

Money stays ``Decimal`` until it is rendered as text with two places, so the page shows exactly
what gold holds; charts get the same text and parse it. Every snapshot names the table versions
it was built from, so anyone can recompute it from the same versions and compare, and the
pipeline batch those versions hold (:func:`ecomstream.demo.tables.read_view`).

Response time does not depend on the tables: at most one request at a time rebuilds the
snapshot (reading three tables, milliseconds to a second), and every other request meanwhile
gets the previous snapshot, whose ``generated_at`` says how old it is. Only the very first
request waits for a build, and no longer than ``first_build_timeout_s``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ecomstream.demo.status import LAYERS, as_map, order_reasons, summarize, utc
from ecomstream.demo.tables import TableReader, read_view
from ecomstream.errors import EcomstreamError, redact

CENT = Decimal("0.01")
MAX_WINDOWS = 30
TOP_LOCATIONS = 10
MAX_BUCKETS = 30


def money(value: Decimal | int | None) -> str:
    return str(Decimal(value or 0).quantize(CENT, rounding=ROUND_HALF_UP))


def average(revenue: Decimal, orders: int) -> str:
    """Revenue / orders rounded half-up to cents, as gold's ``avg_order_value`` is."""
    return money(revenue / orders) if orders else money(0)


def iso(value: dt.datetime | None) -> str | None:
    value = utc(value)
    return value.isoformat().replace("+00:00", "Z") if value else None


def gold_view(
    category_rows: Sequence[Mapping[str, Any]],
    location_rows: Sequence[Mapping[str, Any]],
    *,
    max_windows: int = MAX_WINDOWS,
    top_n: int = TOP_LOCATIONS,
) -> dict[str, Any]:
    """Totals, per-category totals, the newest windows by category and the top locations."""
    orders = sum(int(r["order_count"] or 0) for r in category_rows)
    units = sum(int(r.get("units_sold") or 0) for r in category_rows)
    revenue = sum((Decimal(r["revenue"] or 0) for r in category_rows), Decimal(0))

    per_category: dict[str, dict[str, Any]] = {}
    per_window: dict[dt.datetime, dict[str, Any]] = {}
    for r in category_rows:
        cat = per_category.setdefault(
            r["category"], {"orders": 0, "units": 0, "revenue": Decimal(0)}
        )
        cat["orders"] += int(r["order_count"] or 0)
        cat["units"] += int(r.get("units_sold") or 0)
        cat["revenue"] += Decimal(r["revenue"] or 0)
        start = utc(r["window_start"])
        assert start is not None
        win = per_window.setdefault(start, {"orders": 0, "revenue": Decimal(0), "by_category": {}})
        win["orders"] += int(r["order_count"] or 0)
        win["revenue"] += Decimal(r["revenue"] or 0)
        win["by_category"][r["category"]] = win["by_category"].get(
            r["category"], Decimal(0)
        ) + Decimal(r["revenue"] or 0)

    categories = [
        {
            "category": name,
            "orders": v["orders"],
            "units": v["units"],
            "revenue": money(v["revenue"]),
            "avg_order_value": average(v["revenue"], v["orders"]),
        }
        for name, v in sorted(per_category.items(), key=lambda kv: (-kv[1]["revenue"], kv[0]))
    ]
    newest = sorted(per_window)[-max_windows:]
    names = [c["category"] for c in categories]
    windows = {
        "labels": [iso(w) for w in newest],
        "orders": [per_window[w]["orders"] for w in newest],
        "revenue": [money(per_window[w]["revenue"]) for w in newest],
        "avg_order_value": [
            average(per_window[w]["revenue"], per_window[w]["orders"]) for w in newest
        ],
        "revenue_by_category": {
            name: [money(per_window[w]["by_category"].get(name)) for w in newest] for name in names
        },
    }

    per_location: dict[tuple[str, str], dict[str, Any]] = {}
    for r in location_rows:
        loc = per_location.setdefault(
            (r["country"] or "", r["city"] or ""), {"orders": 0, "revenue": Decimal(0)}
        )
        loc["orders"] += int(r["order_count"] or 0)
        loc["revenue"] += Decimal(r["revenue"] or 0)
    top = sorted(per_location.items(), key=lambda kv: (-kv[1]["revenue"], kv[0]))[:top_n]
    window_ends = [utc(r.get("window_end")) for r in category_rows]
    return {
        "totals": {
            "orders": orders,
            "units": units,
            "revenue": money(revenue),
            "avg_order_value": average(revenue, orders),
            "windows": len(per_window),
            "newest_window_end": iso(max((w for w in window_ends if w), default=None)),
        },
        "categories": categories,
        "windows": windows,
        "top_locations": [
            {"country": c, "city": city, "orders": v["orders"], "revenue": money(v["revenue"])}
            for (c, city), v in top
        ],
    }


def bucket_seconds(span_s: float) -> int:
    """Buckets for the over-time charts: about ``MAX_BUCKETS`` of them over the run so far."""
    for size in (5, 10, 30, 60, 300, 600, 1800, 3600):
        if span_s / size <= MAX_BUCKETS:
            return size
    return 3600


def metrics_view(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Quarantine reasons and per-layer throughput over time, bucketed by batch end."""
    stamped = [(t, r) for r in rows if (t := utc(r.get("finished_at"))) is not None]
    if not stamped:
        return {"bucket_s": None, "labels": [], "quarantine": {}, "throughput": {}}
    first = min(t for t, _ in stamped)
    last = max(t for t, _ in stamped)
    size = bucket_seconds((last - first).total_seconds())
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def bucket(t: dt.datetime) -> dt.datetime:
        return epoch + dt.timedelta(seconds=int((t - epoch).total_seconds()) // size * size)

    keys = sorted({bucket(t) for t, _ in stamped})[-MAX_BUCKETS:]
    index = {k: i for i, k in enumerate(keys)}
    reasons: dict[str, list[int]] = {}
    throughput: dict[str, list[float]] = {}
    for t, r in stamped:
        i = index.get(bucket(t))
        if i is None:
            continue
        query = str(r.get("query"))
        series = throughput.setdefault(query, [0.0] * len(keys))
        series[i] += int(r.get("input_rows") or 0) / size
        if query == "silver":
            for reason, count in as_map(r.get("quarantine_reasons")).items():
                reasons.setdefault(reason, [0] * len(keys))[i] += count
    ordered = order_reasons({k: sum(v) for k, v in reasons.items()})
    return {
        "bucket_s": size,
        "labels": [iso(k) for k in keys],
        "quarantine": {k: reasons[k] for k in ordered},
        "throughput": {
            k: [round(x, 2) for x in throughput[k]]
            for k in sorted(throughput, key=lambda q: (LAYERS.index(q) if q in LAYERS else 9, q))
        },
    }


class Dashboard:
    """Builds snapshots for the web page; at most one rebuild per ``min_interval_s``, and never
    two at once: while one request rebuilds, the others are served the previous snapshot."""

    def __init__(
        self,
        reader: TableReader,
        *,
        min_interval_s: float = 1.0,
        first_build_timeout_s: float = 30.0,
    ) -> None:
        self.reader = reader
        self.min_interval_s = min_interval_s
        self.first_build_timeout_s = first_build_timeout_s
        # (monotonic time, snapshot or the one line its build failed with)
        self._cached: tuple[float, dict[str, Any] | str] | None = None
        self._building = False
        self._changed = threading.Condition()

    def snapshot(self) -> dict[str, Any]:
        with self._changed:
            cached = self._cached
            if cached and time.monotonic() - cached[0] < self.min_interval_s:
                return _result(cached[1])
            if self._building:
                if cached is not None and isinstance(cached[1], dict):
                    return cached[1]  # stale by at most one build: no request queues behind it
                self._changed.wait_for(lambda: not self._building, self.first_build_timeout_s)
                if self._cached is None or self._building:
                    raise EcomstreamError(
                        f"the first snapshot is still being built after "
                        f"{self.first_build_timeout_s:g} s"
                    )
                return _result(self._cached[1])
            self._building = True
        value: dict[str, Any] | str
        try:
            value = self.build()
        except Exception as exc:  # kept for min_interval_s like a snapshot: no retry storm
            value = error_line(exc)
        with self._changed:
            self._cached = (time.monotonic(), value)
            self._building = False
            self._changed.notify_all()
        return _result(value)

    def build(self) -> dict[str, Any]:
        started = time.perf_counter()
        view = read_view(self.reader)
        cat, loc, met = view.category, view.location, view.metrics
        metric_rows = met.table.to_pylist() if met.table is not None else []
        gold = gold_view(
            cat.table.to_pylist() if cat.table is not None else [],
            loc.table.to_pylist() if loc.table is not None else [],
        )
        status = summarize(metric_rows, metrics_version=met.version)
        return {
            "generated_at": iso(status.generated_at),
            "data_dir": str(self.reader.data_dir),
            "versions": {
                "category_sales": cat.version,
                "location_sales": loc.version,
                "metrics": met.version,
            },
            "batches": {
                "category_sales": cat.mark.batch if cat.mark else None,
                "location_sales": loc.mark.batch if loc.mark else None,
                "metrics": met.mark.batch if met.mark else None,
            },
            "consistent": view.consistent,
            "consistency_note": view.note,
            **gold,
            "status": status.to_json(),
            "over_time": metrics_view(metric_rows),
            "build_ms": round((time.perf_counter() - started) * 1000, 1),
        }


def error_line(exc: BaseException) -> str:
    """One line for the page: the error's first line, secrets redacted."""
    first = (str(exc).splitlines() or [""])[0]
    text = first if isinstance(exc, EcomstreamError) else f"{type(exc).__name__}: {first}"
    return redact(text)


def _result(value: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, str):
        raise EcomstreamError(value)
    return value
