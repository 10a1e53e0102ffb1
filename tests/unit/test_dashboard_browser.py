"""The dashboard page in Debian's headless Chromium over fixed gold tables (no Kafka, no Spark).

The end-to-end version runs against a live demo (tests/integration/test_demo.py); this one pins
the page itself: charts drawn, tables and figures equal to gold, no script errors. The tables are
written with delta-rs so the test needs no JVM and takes seconds.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ecomstream.demo.dashboard import Dashboard
from ecomstream.demo.server import DashboardServer
from ecomstream.demo.tables import CATEGORY_SALES, LOCATION_SALES, METRICS, TableReader
from tests.browser import CHROMIUM_ARGS, chromium_or_skip, wait_for_install

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
CATEGORIES = ["Books", "Electronics", "Toys"]
CITIES = [("US", "Austin"), ("DE", "Berlin"), ("FR", "Paris"), ("US", "Boston")]


def write_tables(root: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    ts = pa.timestamp("us", tz="UTC")
    money = pa.decimal128(18, 2)
    cats: dict[str, list[Any]] = {k: [] for k in ("ws", "we", "c", "n", "u", "r", "a")}
    locs: dict[str, list[Any]] = {k: [] for k in ("ws", "we", "co", "ci", "n", "r")}
    for minute in range(6):
        start = T0 + minute * MINUTE
        for i, category in enumerate(CATEGORIES):
            n = 1 + (minute + i) % 4
            revenue = Decimal(f"{(minute + 1) * (i + 2) * 7.35:.2f}")
            for key, value in zip(
                cats,
                (
                    start,
                    start + MINUTE,
                    category,
                    n,
                    n * 2,
                    revenue,
                    (revenue / n).quantize(Decimal("0.01")),
                ),
                strict=True,
            ):
                cats[key].append(value)
        for j, (country, city) in enumerate(CITIES):
            for key, value in zip(
                locs,
                (
                    start,
                    start + MINUTE,
                    country,
                    city,
                    1 + j,
                    Decimal(f"{(j + 1) * 3.1 + minute:.2f}"),
                ),
                strict=True,
            ):
                locs[key].append(value)
    write_deltalake(
        str(root / CATEGORY_SALES),
        pa.table(
            {
                "window_start": pa.array(cats["ws"], ts),
                "window_end": pa.array(cats["we"], ts),
                "category": cats["c"],
                "order_count": pa.array(cats["n"], pa.int64()),
                "units_sold": pa.array(cats["u"], pa.int64()),
                "revenue": pa.array(cats["r"], money),
                "avg_order_value": pa.array(cats["a"], money),
            }
        ),
    )
    write_deltalake(
        str(root / LOCATION_SALES),
        pa.table(
            {
                "window_start": pa.array(locs["ws"], ts),
                "window_end": pa.array(locs["we"], ts),
                "country": locs["co"],
                "city": locs["ci"],
                "order_count": pa.array(locs["n"], pa.int64()),
                "revenue": pa.array(locs["r"], money),
            }
        ),
    )
    batches = []
    for b in range(4):
        for q_i, query in enumerate(("bronze", "silver", "gold")):
            end = T0 + dt.timedelta(seconds=10 * b + 2 * q_i + 2)
            batches.append(
                {
                    "query": query,
                    "batch_id": b,
                    "started_at": end - dt.timedelta(seconds=2),
                    "finished_at": end,
                    "duration_ms": 2000,
                    "input_rows": 100,
                    "output_rows": 100,
                    "silver_rows": 95 if query == "silver" else None,
                    "quarantine_rows": 5 if query == "silver" else None,
                    "duplicates_dropped": 0 if query == "silver" else None,
                    "quarantine_reasons": (
                        [("malformed_json", 3), ("unknown_category", 2)]
                        if query == "silver"
                        else None
                    ),
                    "max_event_time": end if query == "gold" else None,
                    "kafka_end_offset_total": 100 * (b + 1) if query == "bronze" else None,
                    "kafka_processed_offset_total": 100 * (b + 1) if query == "bronze" else None,
                }
            )
    schema = pa.schema(
        [
            ("query", pa.string()),
            ("batch_id", pa.int64()),
            ("started_at", ts),
            ("finished_at", ts),
            ("duration_ms", pa.int64()),
            ("input_rows", pa.int64()),
            ("output_rows", pa.int64()),
            ("silver_rows", pa.int64()),
            ("quarantine_rows", pa.int64()),
            ("duplicates_dropped", pa.int64()),
            ("quarantine_reasons", pa.map_(pa.string(), pa.int64())),
            ("max_event_time", ts),
            ("kafka_end_offset_total", pa.int64()),
            ("kafka_processed_offset_total", pa.int64()),
        ]
    )
    write_deltalake(str(root / METRICS), pa.Table.from_pylist(batches, schema=schema))


def test_page_renders_gold_in_chromium(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    write_tables(tmp_path)
    dashboard = Dashboard(TableReader(tmp_path))
    expected = dashboard.build()
    server = DashboardServer(dashboard, 0)
    server.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on(
                    "console",
                    lambda msg: errors.append(msg.text) if msg.type == "error" else None,
                )
                page.goto(server.url)
                page.wait_for_function(
                    "() => Number(document.body.dataset.rendered || 0) >= 1", timeout=30_000
                )
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                shown = page.evaluate(
                    """() => {
                        const cells = (id, key) => [...document.querySelectorAll(
                            `#${id} tbody td[data-key="${key}"]`)].map((td) => td.textContent);
                        const points = (id) => Chart.getChart(id).data.datasets
                            .map((d) => d.data.length);
                        return {
                            orders: document.getElementById('kpi-orders').textContent,
                            revenue: document.getElementById('kpi-revenue').textContent,
                            aov: document.getElementById('kpi-aov').textContent,
                            lag: document.getElementById('kpi-lag').textContent,
                            categories: cells('categories', 'category'),
                            categoryRevenue: cells('categories', 'revenue'),
                            cities: cells('locations', 'city'),
                            layers: cells('layers', 'query'),
                            revenuePoints: points('chart-revenue'),
                            quarantineSeries: Chart.getChart('chart-quarantine').data.datasets
                                .map((d) => d.label),
                            throughputSeries: Chart.getChart('chart-throughput').data.datasets
                                .map((d) => d.label),
                            state: document.getElementById('state').textContent,
                        };
                    }"""
                )
            finally:
                browser.close()
    finally:
        server.stop()
    assert errors == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    totals = expected["totals"]
    assert int(shown["orders"].replace(",", "")) == totals["orders"] > 0
    assert shown["revenue"] == totals["revenue"]
    assert shown["aov"] == totals["avg_order_value"]
    assert shown["lag"] == "0"
    assert shown["categories"] == [c["category"] for c in expected["categories"]]
    assert shown["categoryRevenue"] == [c["revenue"] for c in expected["categories"]]
    assert shown["cities"] == [loc["city"] for loc in expected["top_locations"]]
    assert shown["layers"] == ["bronze", "silver", "gold"]
    assert shown["revenuePoints"] == [6, 6, 6]  # three categories, six windows
    assert shown["quarantineSeries"] == ["malformed_json", "unknown_category"]
    assert shown["throughputSeries"] == ["bronze", "silver", "gold"]
    assert shown["state"].startswith("last batch")
    # and gold itself, summed independently of the dashboard's code
    from deltalake import DeltaTable

    gold = DeltaTable(str(tmp_path / CATEGORY_SALES)).to_pyarrow_table().to_pylist()
    assert shown["revenue"] == str(sum(r["revenue"] for r in gold))


def test_a_browser_test_waits_for_the_background_install_and_says_how_it_ended(
    tmp_path: Path,
) -> None:
    status = tmp_path / "status"
    assert wait_for_install(None) is None  # no install runs: nothing to wait for
    assert wait_for_install(str(status), timeout=0) == "the Chromium install still runs after 0 s"
    status.write_text("100\n")
    assert wait_for_install(str(status), timeout=0) == "the Chromium install failed (exit 100)"
    status.write_text("0\n")
    assert wait_for_install(str(status), timeout=0) is None
