"""The dashboard's figures, its server, and delta-rs reading tables that Delta 4.4 wrote."""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ecomstream.demo.dashboard import Dashboard, bucket_seconds, gold_view, metrics_view
from ecomstream.demo.server import DashboardServer, static_file
from ecomstream.demo.tables import CATEGORY_SALES, LOCATION_SALES, TableReader
from ecomstream.errors import EcomstreamError

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def cat(minute: int, category: str, orders: int, units: int, revenue: str) -> dict[str, Any]:
    start = T0 + minute * MINUTE
    rev = Decimal(revenue)
    return {
        "window_start": start,
        "window_end": start + MINUTE,
        "category": category,
        "order_count": orders,
        "units_sold": units,
        "revenue": rev,
        "avg_order_value": (rev / orders).quantize(Decimal("0.01")),
    }


def loc(minute: int, country: str, city: str, orders: int, revenue: str) -> dict[str, Any]:
    start = T0 + minute * MINUTE
    return {
        "window_start": start,
        "window_end": start + MINUTE,
        "country": country,
        "city": city,
        "order_count": orders,
        "revenue": Decimal(revenue),
    }


CATEGORY_ROWS = [
    cat(0, "Books", 2, 3, "0.03"),
    cat(0, "Toys", 1, 1, "19.99"),
    cat(1, "Books", 3, 4, "10.00"),
    cat(2, "Electronics", 1, 1, "999.95"),
]
LOCATION_ROWS = [
    loc(0, "US", "Austin", 2, "0.03"),
    loc(1, "US", "Austin", 1, "5.00"),
    loc(0, "DE", "Berlin", 1, "19.99"),
    loc(1, "FR", "Paris", 2, "5.00"),
    loc(2, "US", "Boston", 1, "999.95"),
]


def test_totals_are_exact_and_average_rounds_half_up() -> None:
    view = gold_view(CATEGORY_ROWS, LOCATION_ROWS)
    assert view["totals"] == {
        "orders": 7,
        "units": 9,
        "revenue": "1029.97",
        "avg_order_value": "147.14",  # 1029.97 / 7 = 147.138...
        "windows": 3,
        "newest_window_end": "2026-11-25T12:03:00Z",
    }
    books = next(c for c in view["categories"] if c["category"] == "Books")
    # 10.03 / 5 = 2.006 -> 2.01; the window with 0.03 / 2 = 0.015 rounds half-up to 0.02
    assert books == {
        "category": "Books",
        "orders": 5,
        "units": 7,
        "revenue": "10.03",
        "avg_order_value": "2.01",
    }
    assert view["windows"]["avg_order_value"][0] == "6.67"  # (0.03 + 19.99) / 3
    assert gold_view([cat(0, "Books", 2, 2, "0.05")], [])["totals"]["avg_order_value"] == "0.03"


def test_categories_sorted_by_revenue_and_windows_filled_with_zero() -> None:
    view = gold_view(CATEGORY_ROWS, LOCATION_ROWS)
    assert [c["category"] for c in view["categories"]] == ["Electronics", "Toys", "Books"]
    windows = view["windows"]
    assert windows["labels"] == [
        "2026-11-25T12:00:00Z",
        "2026-11-25T12:01:00Z",
        "2026-11-25T12:02:00Z",
    ]
    assert windows["orders"] == [3, 3, 1]
    assert windows["revenue"] == ["20.02", "10.00", "999.95"]
    assert windows["revenue_by_category"]["Books"] == ["0.03", "10.00", "0.00"]
    assert windows["revenue_by_category"]["Electronics"] == ["0.00", "0.00", "999.95"]
    newest_two = gold_view(CATEGORY_ROWS, LOCATION_ROWS, max_windows=2)["windows"]
    assert newest_two["labels"] == ["2026-11-25T12:01:00Z", "2026-11-25T12:02:00Z"]


def test_top_locations_sum_over_windows() -> None:
    view = gold_view(CATEGORY_ROWS, LOCATION_ROWS, top_n=3)
    assert view["top_locations"] == [
        {"country": "US", "city": "Boston", "orders": 1, "revenue": "999.95"},
        {"country": "DE", "city": "Berlin", "orders": 1, "revenue": "19.99"},
        # Austin 5.03 beats Paris 5.00 only because its two windows add up
        {"country": "US", "city": "Austin", "orders": 3, "revenue": "5.03"},
    ]


def test_empty_gold_is_zero_not_an_error() -> None:
    view = gold_view([], [])
    assert view["totals"]["orders"] == 0
    assert view["totals"]["revenue"] == "0.00"
    assert view["totals"]["avg_order_value"] == "0.00"
    assert view["top_locations"] == [] and view["windows"]["labels"] == []


def test_metrics_over_time_buckets() -> None:
    assert bucket_seconds(60) == 5
    assert bucket_seconds(600) == 30
    assert bucket_seconds(7200) == 300
    rows = [
        {"query": "bronze", "finished_at": T0 + dt.timedelta(seconds=2), "input_rows": 50},
        {"query": "bronze", "finished_at": T0 + dt.timedelta(seconds=12), "input_rows": 25},
        {
            "query": "silver",
            "finished_at": T0 + dt.timedelta(seconds=3),
            "input_rows": 50,
            "quarantine_reasons": {"unknown_category": 2, "malformed_json": 1},
        },
        {
            "query": "silver",
            "finished_at": T0 + dt.timedelta(seconds=13),
            "input_rows": 25,
            "quarantine_reasons": [("malformed_json", 4)],
        },
    ]
    view = metrics_view(rows)
    assert view["bucket_s"] == 5
    assert view["labels"] == ["2026-11-25T12:00:00Z", "2026-11-25T12:00:10Z"]
    assert list(view["quarantine"]) == ["malformed_json", "unknown_category"]
    assert view["quarantine"]["malformed_json"] == [1, 4]
    assert view["throughput"]["bronze"] == [10.0, 5.0]
    assert metrics_view([])["labels"] == []


GOLD_DDL = (
    "window_start timestamp, window_end timestamp, category string, order_count long, "
    "units_sold long, revenue decimal(18,2), avg_order_value decimal(18,2)"
)
LOCATION_DDL = (
    "window_start timestamp, window_end timestamp, country string, city string, "
    "order_count long, revenue decimal(18,2)"
)


@pytest.fixture(scope="module")
def data_dir(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gold as the local pipeline writes it: Spark, Delta 4.4's default table features."""
    root = tmp_path_factory.mktemp("dashboard-data")
    extra = [cat(3, "Toys", 9, 9, "99.00")]  # deleted below: must not show
    for key, ddl, rows in (
        (CATEGORY_SALES, GOLD_DDL, CATEGORY_ROWS + extra),
        (LOCATION_SALES, LOCATION_DDL, LOCATION_ROWS),
    ):
        spark.createDataFrame(rows, ddl).write.format("delta").save(str(root / key))
    spark.sql(
        f"DELETE FROM delta.`{root / CATEGORY_SALES}` WHERE order_count = 9 AND category = 'Toys'"
    )
    return root


def test_delta_rs_reads_what_delta_44_wrote(spark: Any, data_dir: Path) -> None:
    snap = TableReader(data_dir).read(CATEGORY_SALES)
    assert snap.version == 1  # write, delete
    assert snap.table is not None
    from_spark = spark.read.format("delta").load(str(data_dir / CATEGORY_SALES))
    expected = sorted(
        (r["window_start"].replace(tzinfo=dt.UTC), r["category"], r["order_count"], r["revenue"])
        for r in from_spark.collect()
    )
    got = sorted(
        (r["window_start"], r["category"], r["order_count"], r["revenue"])
        for r in snap.table.to_pylist()
    )
    assert got == expected
    assert len(got) == 4


def test_deletion_vectors_are_read_or_refused_naming_the_feature(
    spark: Any, tmp_path: Path
) -> None:
    """Databricks turns deletion vectors on for new tables; delta-rs 1.6 cannot read them yet."""
    path = str(tmp_path / CATEGORY_SALES)
    cols = ", ".join(part.strip() for part in GOLD_DDL.split(","))
    spark.sql(
        f"CREATE TABLE delta.`{path}` ({cols}) USING delta "
        "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    spark.createDataFrame(CATEGORY_ROWS, GOLD_DDL).write.format("delta").mode("append").save(path)
    spark.sql(f"DELETE FROM delta.`{path}` WHERE category = 'Toys'")
    features = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["tableFeatures"]
    assert "deletionVectors" in features
    try:
        snap = TableReader(tmp_path).read(CATEGORY_SALES)
    except EcomstreamError as exc:
        assert "deletionVectors" in str(exc) and "DROP FEATURE" in str(exc)
    else:  # a delta-rs that reads them must honour the deletion
        assert snap.table is not None
        assert sorted(r["category"] for r in snap.table.to_pylist()) == [
            "Books",
            "Books",
            "Electronics",
        ]


def test_dashboard_snapshot_matches_gold_and_names_versions(data_dir: Path) -> None:
    snap = Dashboard(TableReader(data_dir)).build()
    assert snap["versions"] == {"category_sales": 1, "location_sales": 0, "metrics": None}
    assert snap["totals"]["revenue"] == "1029.97"
    assert snap["totals"]["orders"] == 7
    assert snap["top_locations"][0]["city"] == "Boston"
    assert snap["status"]["bronze_total"] == 0
    assert json.loads(json.dumps(snap)) == snap


def test_missing_tables_give_an_empty_snapshot(tmp_path: Path) -> None:
    snap = Dashboard(TableReader(tmp_path)).build()
    assert snap["versions"] == {"category_sales": None, "location_sales": None, "metrics": None}
    assert snap["totals"]["orders"] == 0


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_server_serves_page_assets_and_snapshot_on_loopback(data_dir: Path) -> None:
    server = DashboardServer(Dashboard(TableReader(data_dir)), 0)
    server.start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")
        status, ctype, body = get(server.url)
        assert status == 200 and ctype.startswith("text/html")
        assert b"/static/chart.umd.min.js" in body and b"chart-revenue" in body
        status, ctype, body = get(server.url + "static/chart.umd.min.js")
        assert status == 200 and b"Chart.js v4.6.1" in body[:200]
        assert ctype.startswith("text/javascript")
        status, ctype, body = get(server.url + "api/snapshot")
        assert status == 200 and ctype == "application/json"
        doc = json.loads(body)
        assert doc["totals"]["revenue"] == "1029.97"
        assert doc["categories"][0]["category"] == "Electronics"
        assert get(server.url + "static/..%2Fserver.py")[0] == 404
        assert get(server.url + "static/nothing.js")[0] == 404
        assert get(server.url + "etc/passwd")[0] == 404
    finally:
        server.stop()


def test_static_file_refuses_paths() -> None:
    assert static_file("app.js") is not None
    for name in ("", "../server.py", "static/app.js", ".hidden", "..\\x"):
        assert static_file(name) is None


def test_port_taken_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(EcomstreamError, match=rf"dashboard port {port} .* already in use"):
            DashboardServer(Dashboard(TableReader(tmp_path)), port)
