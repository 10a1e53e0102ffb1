"""Issue 11, case 7: the dashboard under stress, on real Delta tables the pipeline wrote.

The server runs as ``ecomstream demo --serve-only`` (a real demo process: its stderr is the
demo's console) against a data dir that the in-process pipeline keeps writing and that table
maintenance compacts, while clients hammer it.

Protections each test would catch missing:
* ``test_clients_that_leave_mid_response_print_nothing``: ``DashboardServer.handle_error``
  (without it socketserver prints a ``ConnectionResetError``/``BrokenPipeError`` traceback per
  client that closes early: seen failing so).
* ``test_read_only_and_loopback_only``: the 405 for every write method, HEAD without a body,
  ``static_file``'s refusal of any path outside ``static/``, the 127.0.0.1 default.
* ``test_every_moment_inside_a_batch_shows_one_batch``: ``tables.read_view`` (without it, a
  reader between a batch's gold commits shows category sales with the batch and location
  sales without it, or metrics counting orders gold does not hold yet: seen failing so).
* ``test_fifty_clients_while_the_pipeline_writes_and_compacts``: all of them at once, plus the
  server's thread per connection and the snapshot served stale while one request rebuilds it.
  It prints the figures quoted in docs/operations.md (requests, p50/p95/max, errors).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ecomstream.demo.dashboard import Dashboard, gold_view
from ecomstream.demo.status import summarize
from ecomstream.demo.tables import CATEGORY_SALES, LOCATION_SALES, METRICS, TableReader
from ecomstream.jobs import pipeline
from ecomstream.jobs.settings import PipelineSettings
from tests.conftest import Broker
from tests.integration.test_pipeline_checks import REPO, assert_exact, cli_env, order, record
from tests.kafka_helpers import send_all

CLIENTS = 50
# each client's pause between requests: 50 clients then ask ~250 times a second (a page polls
# once a second), and leave the pipeline in this process some CPU
PACE_S = 0.2
GOLD_AND_METRICS = (CATEGORY_SALES, LOCATION_SALES, METRICS)


def _orders(prefix: str, n: int, minute0: float) -> list[tuple[bytes | None, bytes]]:
    cats, cities = ("Books", "Toys", "Sports"), (("FR", "Lyon"), ("US", "Austin"), ("DE", "Ulm"))
    return [
        record(
            order(
                f"{prefix}-{i}",
                minute0 + i / 7,
                category=cats[i % 3],
                country=cities[i % 3][0],
                city=cities[i % 3][1],
                quantity=1 + i % 4,
            )
        )
        for i in range(n)
    ]


def _once(broker: Broker, topic: str, data_dir: Path) -> None:
    settings = PipelineSettings(
        topic=topic, data_dir=data_dir, bootstrap_servers=broker.bootstrap, once=True
    )
    assert pipeline.run(settings) == 0


@dataclass
class Written:
    topic: str
    data_dir: Path
    sent: list[tuple[bytes | None, bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def written(spark: Any, kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Two pipeline batches: the second adds orders to a new window and to the first's."""
    w = Written(kafka_broker.new_topic("dash"), tmp_path_factory.mktemp("dash") / "data")
    for part, (n, minute0) in enumerate(((60, 0.0), (40, 5.0))):
        batch = _orders(f"b{part}", n, minute0)
        send_all(kafka_broker.bootstrap, w.topic, batch)
        w.sent += batch
        _once(kafka_broker, w.topic, w.data_dir)
    return w


# -- the server, as the demo runs it ------------------------------------------------------------
class Served:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecomstream", "demo", "--serve-only", "--data-dir",
             str(data_dir), "--dashboard-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # "dashboard: http://127.0.0.1:<port>/"
        found = re.search(r"http://([0-9.]+):(\d+)/", first)
        assert found, f"no dashboard URL in {first!r}: {self.stop()}"
        self.host, self.port = found[1], int(found[2])
        self.output: tuple[str, str] | None = None

    def stop(self) -> tuple[str, str]:
        """Ctrl-C, as a user stops the demo; (stdout, stderr) of the whole run."""
        if self.output is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.output = self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.output = self.proc.communicate(timeout=30)
        return self.output

    def request(
        self, method: str, path: str, timeout: float = 60
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()


@pytest.fixture
def served(written: Written) -> Iterator[Served]:
    server = Served(written.data_dir)
    try:
        yield server
    finally:
        server.stop()


def leave_mid_response(port: int, path: str, *, reset: bool) -> None:
    """Ask for ``path`` and go away without reading: with ``reset`` the socket closes with an
    RST (a killed tab), else with a FIN once part of the answer arrived (a reload)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        sock.recv(256)
    sock.close()


def test_clients_that_leave_mid_response_print_nothing(served: Served) -> None:
    for i in range(30):
        for path in ("/static/chart.umd.min.js", "/api/snapshot", "/"):
            leave_mid_response(served.port, path, reset=i % 2 == 0)
    # still serving, and the big file whole
    status, headers, body = served.request("GET", "/static/chart.umd.min.js")
    assert status == 200 and len(body) == int(headers["Content-Length"]) > 200_000
    out, err = served.stop()
    assert err == "", f"the demo's console got:\n{err[:2000]}"
    assert "Traceback" not in out and "Error" not in out, out


LISTEN = "0A"


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.partition(":")
            if state == LISTEN and int(hexport, 16) == port:
                found.append(address)
    return found


def test_read_only_and_loopback_only(served: Served) -> None:
    assert served.host == "127.0.0.1"
    assert listeners(served.port) == ["0100007F"], "the dashboard listens beyond 127.0.0.1"

    status, headers, body = served.request("HEAD", "/api/snapshot")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        for path in ("/", "/api/snapshot", "/static/app.js"):
            status, headers, _ = served.request(method, path)
            assert (status, headers["Allow"]) == (405, "GET, HEAD"), (method, path, status)
    status, _, _ = served.request("FROB", "/")
    assert status == 501

    for path in (
        "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/server.py",
        "/static/.%2e/tables.py", "/static/app.js/../../server.py", "/static//etc/passwd",
        "/static/..\\server.py", "/static/%2Fetc%2Fpasswd", "/../../../../etc/passwd",
        "/etc/passwd", "http://127.0.0.1/../etc/passwd", "/static/.hidden", "/static/",
        "/static/app.js%00.png", "/static/__init__.py", "/static/../__init__.py",
    ):  # fmt: skip
        status, _, body = served.request("GET", path)
        assert status == 404 and b"import" not in body and b"root:" not in body, path
    status, _, body = served.request("GET", "/static/app.js")
    assert status == 200 and b"fetch" in body

    _, err = served.stop()
    assert err == "", err


# -- one batch per view -------------------------------------------------------------------------
def _drop_newest_commit(table: Path) -> None:
    """The table as a reader saw it just before its newest commit landed."""
    log = table / "_delta_log"
    commits = sorted(log.glob("[0-9]*.json"))
    newest = int(commits[-1].stem)
    for path in log.iterdir():
        if path.name.split(".")[0].isdigit() and int(path.name.split(".")[0]) >= newest:
            path.unlink()
    (log / "_last_checkpoint").unlink(missing_ok=True)


FIGURES = ("totals", "categories", "top_locations", "windows")
STATUS_FIGURES = ("bronze_total", "silver_total", "quarantine_total", "duplicates_dropped")


def figures(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: snap[k] for k in FIGURES},
        **{k: snap["status"][k] for k in STATUS_FIGURES},
    }


def test_every_moment_inside_a_batch_shows_one_batch(written: Written, tmp_path: Path) -> None:
    """The second batch committed gold and metrics one table at a time, in parallel: every
    subset of them can be what a reader finds. Each such moment shows batch 0 or batch 1
    whole, never a mix."""
    after = Dashboard(TableReader(written.data_dir)).build()
    assert after["consistent"] and after["batches"] == dict.fromkeys(
        ("category_sales", "location_sales", "metrics"), 1
    )
    assert after["totals"]["orders"] == after["status"]["silver_total"] == 100
    before_dir = tmp_path / "before"
    shutil.copytree(written.data_dir, before_dir)
    for key in GOLD_AND_METRICS:
        _drop_newest_commit(before_dir / key)
    before = Dashboard(TableReader(before_dir)).build()
    assert before["totals"]["orders"] == before["status"]["silver_total"] == 60
    assert figures(before) != figures(after)

    for mask in range(1, 7):  # 0 and 7 are the whole batches above
        committed = [key for i, key in enumerate(GOLD_AND_METRICS) if mask >> i & 1]
        moment = tmp_path / f"moment-{mask}"
        shutil.copytree(written.data_dir, moment)
        for key in GOLD_AND_METRICS:
            if key not in committed:
                _drop_newest_commit(moment / key)
        snap = Dashboard(TableReader(moment)).build()
        assert snap["consistent"], (committed, snap["consistency_note"])
        assert figures(snap) == figures(before), f"a mixed view with {committed} committed"
        assert snap["batches"]["category_sales"] == snap["batches"]["location_sales"] == 0


# -- under load ---------------------------------------------------------------------------------
@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    snapshots: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    left_early: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(served: Served, number: int, stop: threading.Event, load: Load) -> None:
    i = 0
    while not stop.wait(PACE_S) or i < 4:
        i += 1
        if i % 10 == 0:
            leave_mid_response(served.port, "/static/chart.umd.min.js", reset=number % 2 == 0)
            with load.lock:
                load.left_early += 1
            continue
        path = "/api/snapshot" if i % 4 else ("/", "/static/app.js")[number % 2]
        started = time.perf_counter()
        try:
            status, _, body = served.request("GET", path, timeout=120)
        except OSError as exc:
            with load.lock:
                load.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        took = time.perf_counter() - started
        with load.lock:
            load.latencies.append(took)
            if status != 200:
                load.errors.append(f"{path}: HTTP {status}: {body[:200]!r}")
            elif path == "/api/snapshot":
                snap = json.loads(body)
                load.snapshots[tuple(snap["versions"].values())] = snap


def served_state(data_dir: Path, load: Load, timeout: float = 120) -> tuple[Any, ...]:
    """The tables' versions now, once a client has been served a snapshot of them."""
    now = tuple(TableReader(data_dir).read(key).version for key in GOLD_AND_METRICS)
    deadline = time.monotonic() + timeout
    while now not in load.snapshots and time.monotonic() < deadline:
        threading.Event().wait(0.1)
    assert now in load.snapshots, f"no client was served versions {now}"
    return now


def recomputed(data_dir: Path, versions: dict[str, int | None]) -> dict[str, Any]:
    """The figures of exactly these table versions, read afresh, and their order counts."""
    reader = TableReader(data_dir)
    snaps = {}
    for name, key in zip(versions, GOLD_AND_METRICS, strict=True):
        v = versions[name]
        snaps[key] = reader.read(key, v) if v is not None else None
    rows = {k: (s.table.to_pylist() if s and s.table is not None else []) for k, s in snaps.items()}
    view = gold_view(rows[CATEGORY_SALES], rows[LOCATION_SALES])
    status = summarize(rows[METRICS]).to_json()
    return {
        "figures": {**view, **{k: status[k] for k in STATUS_FIGURES}},
        "orders": {k: sum(r.get("order_count") or 0 for r in v) for k, v in rows.items()},
    }


def test_fifty_clients_while_the_pipeline_writes_and_compacts(
    kafka_broker: Broker, written: Written, tmp_path: Path
) -> None:
    from ecomstream import adapters
    from ecomstream.jobs.maintenance import compact

    live = tmp_path / "live"
    shutil.copytree(written.data_dir, live)
    sent = list(written.sent)
    served = Served(live)
    stop, load = threading.Event(), Load()
    threads = [
        threading.Thread(target=client, args=(served, n, stop, load), daemon=True)
        for n in range(CLIENTS)
    ]
    started = time.perf_counter()
    try:
        for t in threads:
            t.start()
        env = adapters.get(
            "local", bootstrap_servers=kafka_broker.bootstrap, topic=written.topic, data_dir=live
        )
        initial = served_state(live, load)
        batch = _orders("b2", 60, 2.5)  # into the first batches' windows and a new one
        send_all(kafka_broker.bootstrap, written.topic, batch)
        sent += batch
        _once(kafka_broker, written.topic, live)
        removed = compact(env)  # OPTIMIZE of bronze, silver, quarantine and metrics, while read
        final = served_state(live, load)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
        _, err = served.stop()
    wall = time.perf_counter() - started

    assert not [t for t in threads if t.is_alive()], "a client hung"
    assert load.errors == [], load.errors[:5]
    assert err == "", f"the demo's console got:\n{err[:2000]}"
    # the clients ran from before the batch to after the compaction of metrics
    assert removed["metrics/pipeline_batches"] > 0, removed
    assert initial != final and {initial, final} <= set(load.snapshots), sorted(load.snapshots)
    for versions, snap in load.snapshots.items():
        assert snap["consistent"], snap["consistency_note"]
        again = recomputed(live, snap["versions"])
        assert figures(snap) == again["figures"], f"versions {versions} served other figures"
        orders = again["orders"]
        assert orders[CATEGORY_SALES] == orders[LOCATION_SALES] == snap["status"]["silver_total"]
    counts = assert_exact(live, sent)
    assert counts["silver"] == 160 and counts["bronze"] == len(sent)

    lat = sorted(load.latencies)
    p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95)]
    print(
        f"\ndashboard under load: {CLIENTS} clients, {len(lat)} requests served in {wall:.1f} s "
        f"({load.left_early} more left mid-response) while a pipeline batch and a compaction "
        f"ran; {len(load.snapshots)} committed states served; p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; errors {len(load.errors)}"
    )
