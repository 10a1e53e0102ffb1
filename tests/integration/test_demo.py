"""``ecomstream demo`` end to end: embedded broker, producer, pipeline, dashboard, Ctrl-C, rerun.

One demo runs for the whole module (starting Kafka and Spark is the expensive part). The page
is checked in Debian's headless Chromium (driven by Playwright with ``executable_path``; no
browser is ever downloaded); without Chromium that one test skips and the rest still runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM_ARGS, chromium_or_skip

psutil = pytest.importorskip("psutil")

FIRST_GOLD_TIMEOUT_S = float(os.environ.get("ECOMSTREAM_TEST_DEMO_TIMEOUT", "600"))
STOP_TIMEOUT_S = 180.0
CENT = Decimal("0.01")


@dataclass
class DemoRun:
    proc: subprocess.Popen[str]
    data_dir: Path
    url: str
    output: list[str] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time of its tree

    def remember_tree(self) -> None:
        with_children = [psutil.Process(self.proc.pid)]
        try:
            with_children += with_children[0].children(recursive=True)
        except psutil.Error:
            return
        for p in with_children:
            try:
                self.seen[p.pid] = p.create_time()
            except psutil.Error:
                pass

    def alive_from_tree(self) -> list[str]:
        alive = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                continue
        return alive


def start_demo(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMSTREAM_")}
    env.update({k: v for k, v in os.environ.items() if k in ("ECOMSTREAM_CACHE_DIR",)})
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecomstream",
            "demo",
            "--data-dir",
            str(data_dir),
            "--topic",
            "orders-demo",
            "--kafka-port",
            "0",
            "--dashboard-port",
            "0",
            "--rate",
            "25",
            "--fault-rate",
            "0.05",
            "--window",
            "10 seconds",
            "--status-interval",
            "20",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # our SIGINT below plays the terminal's Ctrl-C
    )


def read_lines_until(run: DemoRun, pattern: str, timeout_s: float) -> re.Match[str]:
    import selectors

    assert run.proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(run.proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in run.output:
            if m := re.search(pattern, line):
                return m
        if not sel.select(timeout=1):
            if run.proc.poll() is not None:
                break
            continue
        line = run.proc.stdout.readline()
        if not line:
            break
        run.output.append(line.rstrip("\n"))
    raise AssertionError(f"no line matching {pattern!r}; demo said:\n" + "\n".join(run.output))


def snapshot(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/snapshot", timeout=15) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def gold_at(data_dir: Path, key: str, version: int) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    return DeltaTable(str(data_dir / key), version=version).to_pyarrow_table().to_pylist()


def expected_from_gold(data_dir: Path, versions: dict[str, int]) -> dict[str, Any]:
    """The page's figures, recomputed from the gold tables at the versions the page names."""
    cats = gold_at(data_dir, "gold/category_sales", versions["category_sales"])
    locs = gold_at(data_dir, "gold/location_sales", versions["location_sales"])
    orders = sum(r["order_count"] for r in cats)
    revenue = sum((r["revenue"] for r in cats), Decimal(0))
    per_cat: dict[str, list[Any]] = {}
    for r in cats:
        acc = per_cat.setdefault(r["category"], [0, Decimal(0)])
        acc[0] += r["order_count"]
        acc[1] += r["revenue"]
    per_loc: dict[tuple[str, str], Decimal] = {}
    for r in locs:
        per_loc[(r["country"], r["city"])] = (
            per_loc.get((r["country"], r["city"]), 0) + r["revenue"]
        )
    top = sorted(per_loc.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {
        "orders": orders,
        "revenue": str(revenue.quantize(CENT)),
        "aov": str((revenue / orders).quantize(CENT, rounding=ROUND_HALF_UP)) if orders else "0.00",
        "categories": {k: (v[0], str(v[1].quantize(CENT))) for k, v in per_cat.items()},
        "top_revenue": [str(v.quantize(CENT)) for _, v in top],
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    proc = start_demo(data_dir, "--duration", "900")
    run = DemoRun(proc=proc, data_dir=data_dir, url="")
    try:
        run.url = read_lines_until(run, r"dashboard: (http://127\.0\.0\.1:\d+/)", 60).group(1)
        read_lines_until(run, r"producer: \d+ orders/s", 240)
        deadline = time.monotonic() + FIRST_GOLD_TIMEOUT_S
        while time.monotonic() < deadline:
            run.remember_tree()
            assert proc.poll() is None, "demo died:\n" + "\n".join(run.output)
            snap = snapshot(run.url)
            # the gold batch writes its metrics row just after its gold rows: wait for both
            if snap["totals"]["orders"] > 0 and snap["status"]["layers"]["gold"]["batches"] > 0:
                break
            time.sleep(2)
        else:
            status = snapshot(run.url)["status"]
            raise AssertionError(
                f"no gold row on the dashboard in {FIRST_GOLD_TIMEOUT_S:.0f} s (load average "
                f"{os.getloadavg()[0]:.1f}); status {json.dumps(status)}; demo said:\n"
                + "\n".join(run.output)
            )
        run.remember_tree()
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                for line in run.alive_from_tree():
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                raise


def test_snapshot_api_matches_gold(demo: DemoRun) -> None:
    snap = snapshot(demo.url)
    expected = expected_from_gold(demo.data_dir, snap["versions"])
    assert snap["totals"]["orders"] == expected["orders"] > 0
    assert snap["totals"]["revenue"] == expected["revenue"]
    assert snap["totals"]["avg_order_value"] == expected["aov"]
    assert {c["category"]: (c["orders"], c["revenue"]) for c in snap["categories"]} == expected[
        "categories"
    ]
    assert [loc["revenue"] for loc in snap["top_locations"]] == expected["top_revenue"]
    # the live status is fed by the metrics table the pipeline writes per batch
    assert snap["status"]["bronze_total"] >= snap["status"]["silver_total"] > 0
    assert snap["status"]["layers"]["gold"]["batches"] > 0


def test_page_in_headless_chromium_shows_gold(demo: DemoRun, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(demo.url)
            # charts with data: the revenue chart has bars and the orders chart a point > 0
            page.wait_for_function(
                """() => {
                    const c = Chart.getChart('chart-revenue');
                    const o = Chart.getChart('chart-orders');
                    return c && o && c.data.datasets.length > 0 && c.data.labels.length > 0
                        && o.data.datasets[0].data.some((v) => v > 0);
                }""",
                timeout=60_000,
            )
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # one evaluate: the page cannot re-render between reading these values
            shown = page.evaluate(
                """() => {
                    const k = document.getElementById('kpis').dataset;
                    const cells = (id, key) => [...document.querySelectorAll(
                        `#${id} tbody td[data-key="${key}"]`)].map((td) => td.textContent);
                    return {
                        versions: JSON.parse(k.versions),
                        orders: document.getElementById('kpi-orders').textContent,
                        revenue: document.getElementById('kpi-revenue').textContent,
                        aov: document.getElementById('kpi-aov').textContent,
                        categories: cells('categories', 'category'),
                        categoryOrders: cells('categories', 'orders'),
                        categoryRevenue: cells('categories', 'revenue'),
                        topRevenue: cells('locations', 'revenue'),
                        revenueBars: Chart.getChart('chart-revenue').data.datasets
                            .reduce((n, d) => n + d.data.filter((v) => v > 0).length, 0),
                    };
                }"""
            )
        finally:
            browser.close()
    assert not errors, errors
    expected = expected_from_gold(demo.data_dir, shown["versions"])
    assert int(shown["orders"].replace(",", "")) == expected["orders"] > 0
    assert shown["revenue"] == expected["revenue"]
    assert shown["aov"] == expected["aov"]
    on_page = {
        name: (int(n.replace(",", "")), rev)
        for name, n, rev in zip(
            shown["categories"], shown["categoryOrders"], shown["categoryRevenue"], strict=True
        )
    }
    assert on_page == expected["categories"]
    assert shown["topRevenue"] == expected["top_revenue"]
    assert shown["revenueBars"] > 0
    print(f"screenshot: {shot}")


def test_status_command_on_the_running_demo(demo: DemoRun) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "status", "--data-dir", str(demo.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["binding"]["topic"] == "orders-demo"
    assert doc["layers"]["bronze"]["batches"] > 0
    assert doc["kafka_lag"] is not None and doc["kafka_lag"] >= 0


def bronze_rows(data_dir: Path) -> list[tuple[int, int]]:
    from deltalake import DeltaTable

    table = DeltaTable(str(data_dir / "bronze/orders"))
    rows = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"]).to_pylist()
    return [(r["kafka_partition"], r["kafka_offset"]) for r in rows]


def bronze_batches(data_dir: Path) -> list[int]:
    from deltalake import DeltaTable

    rows = DeltaTable(str(data_dir / "metrics/pipeline_batches")).to_pyarrow_table().to_pylist()
    return sorted(r["batch_id"] for r in rows if r["query"] == "bronze")


def test_ctrl_c_stops_everything_and_a_second_run_continues(demo: DemoRun) -> None:
    """Last in the module: it ends the shared demo."""
    from ecomstream import broker

    demo.remember_tree()
    assert len(demo.seen) >= 4  # demo, broker JVM, pipeline (+ its JVM), producer
    demo.proc.send_signal(signal.SIGINT)
    out, _ = demo.proc.communicate(timeout=STOP_TIMEOUT_S)
    demo.output += out.splitlines()
    text = "\n".join(demo.output)
    assert demo.proc.returncode == 0, text
    assert "demo stopped (Ctrl-C)" in text
    assert demo.alive_from_tree() == []
    assert broker.running(demo.data_dir) is None
    before = bronze_rows(demo.data_dir)
    assert len(set(before)) == len(before) > 0
    batches_before = bronze_batches(demo.data_dir)
    last_batch = max(batches_before)

    # the second run: wait until it has started everything (its pipeline may commit a batch of
    # the first run's leftovers before the broker's start returns) and its bronze query has
    # committed a batch of its own, then Ctrl-C
    second = DemoRun(start_demo(demo.data_dir, "--duration", "900"), demo.data_dir, url="")
    deadline = time.monotonic() + FIRST_GOLD_TIMEOUT_S
    try:
        read_lines_until(second, r"stops after 900 s", FIRST_GOLD_TIMEOUT_S)
        while second.proc.poll() is None and max(bronze_batches(demo.data_dir)) <= last_batch:
            assert time.monotonic() < deadline, "the second run processed no batch in time"
            time.sleep(2)
    finally:
        if second.proc.poll() is None:
            second.proc.send_signal(signal.SIGINT)
        rest, _ = second.proc.communicate(timeout=STOP_TIMEOUT_S)
    out = "\n".join([*second.output, rest])
    assert second.proc.returncode == 0, out
    assert "topic: orders-demo (exists)" in out
    assert "demo stopped (Ctrl-C)" in out
    assert broker.running(demo.data_dir) is None
    after = bronze_rows(demo.data_dir)
    # nothing read twice, nothing lost, and more than before
    assert len(set(after)) == len(after) > len(before)
    assert set(before) <= set(after)
    batch_ids = bronze_batches(demo.data_dir)
    # the bronze query went on from its checkpoint rather than starting again at batch 0: every
    # batch id is recorded once and the second run's come after the first run's (batch 0 itself
    # may be missing: a pipeline that starts before the first order runs it empty, and an empty
    # batch writes no metrics row)
    assert len(set(batch_ids)) == len(batch_ids)
    new_batches = [b for b in batch_ids if b not in batches_before]
    assert new_batches and min(new_batches) > last_batch, (batches_before, batch_ids)
