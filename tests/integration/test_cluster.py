"""The pipeline on a real Spark standalone cluster: ``ecomstream spark start`` (a master and two
workers of one core and 1 GiB each, from pyspark's own launcher), ``pipeline --master
spark://...``, the tables checked by the same oracle as a local run (``assert_exact``: the
contract model, so equal to a local run's tables), and a worker killed -9 mid-run.

One cluster serves the module (starting one costs JVMs on 2 cores); its tests run in order:
the kill leaves one worker for what follows. One pipeline application serves both the check
that a cluster run is exact and uses both workers, and the worker killed under it. Every wait
is on observable state (the master's and workers' JSON status pages, the pipeline's log lines
and metrics table), never a sleep.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecomstream import cluster
from ecomstream.demo.children import group_members
from tests.conftest import Broker
from tests.integration.test_crash import orders_with_faults
from tests.integration.test_pipeline_checks import (
    Running,
    assert_exact,
    metrics_rows,
    order,
    record,
    run_cli,
)
from tests.kafka_helpers import send_all

APP_NAME = "ecomstream-pipeline"
# the application asks for both workers' cores and its first job waits until both executors
# registered (without spark.cores.max a standalone application's ratio has nothing to count)
BOTH_EXECUTORS = [
    "--spark-conf", "spark.cores.max=2",
    "--spark-conf", "spark.scheduler.minRegisteredResourcesRatio=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ClusterInfo]:
    """``ecomstream spark start``: a master and two workers (1 core, 1 GiB each), free ports."""
    data_dir = tmp_path_factory.mktemp("spark-cluster")
    done = run_cli(
        "spark", "start", "--data-dir", str(data_dir), "--workers", "2", "--worker-cores", "1",
        "--worker-memory", "1g", "--port", "0", "--webui-port", "0", timeout=300,
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        info = cluster.running(data_dir)
        assert info is not None, done.stderr[-2000:]
        assert done.stdout.strip() == info.master_url
        yield info
    finally:
        cluster.stop(data_dir)


def _wait(what: str, check: Callable[[], Any], timeout: float = 300, run: Running | None = None):
    """Until ``check()`` returns something truthy (returned); ``run`` must stay alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if run is not None:
            assert run.proc.poll() is None, f"pipeline exited:\n{run.output()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _apps(info: cluster.ClusterInfo, key: str) -> dict[str, str]:
    """Application id -> name from the master's JSON status page (``activeapps`` or
    ``completedapps``)."""
    state = cluster.master_state(info.master.webui_port) or {}
    return {a["id"]: a["name"] for a in state.get(key) or []}


def _executors_of(worker: cluster.Daemon, app_id: str, key: str) -> list[dict[str, Any]]:
    """The worker's executors (``executors``: running, ``finishedexecutors``) of ``app_id``."""
    state = cluster.worker_state(worker.webui_url) or {}
    return [e for e in state.get(key) or [] if e.get("appid") == app_id]


def _ran_tasks(info: cluster.ClusterInfo, worker: cluster.Daemon, app_id: str) -> bool:
    """The executor the worker ran for ``app_id`` logged a task (its stderr in the work dir)."""
    app_dir = info.spark_dir / "work" / worker.name / app_id
    return any("Running task" in p.read_text(errors="replace") for p in app_dir.glob("*/stderr"))


def _pipeline(broker: Broker, topic: str, data_dir: Path, master: str, *extra: str) -> list[str]:
    return [
        "pipeline", "--master", master, "--data-dir", str(data_dir), "--bootstrap-servers",
        broker.bootstrap, "--topic", topic, "--max-offsets-per-trigger", "150",
        *BOTH_EXECUTORS, *extra,
    ]  # fmt: skip


def test_the_pipeline_runs_on_both_workers_and_a_worker_killed_mid_run_leaves_it_exact(
    kafka_broker: Broker, standalone: cluster.ClusterInfo, tmp_path: Path
):
    # one application for both checks: each costs a driver and two executor JVMs on 2 cores
    topic = kafka_broker.new_topic("cluster")
    data_dir = tmp_path / "data"
    first = orders_with_faults(21, 450, "k")  # faults, exact re-sends; 3+ batches of 150
    send_all(kafka_broker.bootstrap, topic, first)
    before = set(_apps(standalone, "completedapps")) | set(_apps(standalone, "activeapps"))
    master = standalone.master_url
    run = Running(*_pipeline(kafka_broker, topic, data_dir, master, "--trigger-interval", "500 ms"))
    try:
        running_apps = _wait(
            "the pipeline registers with the master",
            lambda: {i for i in _apps(standalone, "activeapps") if i not in before},
            run=run,
        )
        (app_id,) = running_apps
        victim, survivor = standalone.workers
        # a cluster application: an executor on each worker, and each ran tasks of the batches
        for worker in standalone.workers:
            _wait(
                f"an executor of the pipeline on {worker.name} that ran tasks",
                lambda w=worker: (
                    _executors_of(w, app_id, "executors") and _ran_tasks(standalone, w, app_id)
                ),
                run=run,
            )
        run.wait_for('"event": "batch_phases"', timeout=300)
        # the worker and its executor die at once, as when their machine goes away
        os.killpg(victim.pid, signal.SIGKILL)
        _wait("the killed worker's processes are gone", lambda: not group_members(victim.pid))

        # late orders for windows long written, then late re-sends of the first lot
        late = [record(order(f"late-{i}", 0.1 * i, category="Toys")) for i in range(5)]
        second = orders_with_faults(32, 300, "x") + late + first[:15]
        send_all(kafka_broker.bootstrap, topic, second)
        sent = first + second
        (last,) = _wait(
            "every record sent is in bronze",
            lambda: _last_batch_if_all_in(data_dir, len(sent)),
            timeout=400,
            run=run,
        )
        # that batch's other writes run beside its metrics: its end is logged after all of them
        run.wait_for(f'"event": "batch_phases", "batch_id": {last},', timeout=300)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, run.output()[-3000:]
    finally:
        if run.proc.poll() is None:
            run.kill9()
    assert '"event": "stopped"' in run.output()
    # the second lot was sent after the kill: only the survivor's executor was left to read it
    counts = assert_exact(data_dir, sent)
    assert counts["bronze"] == len(sent) and counts["duplicates"] >= 15
    assert _ran_tasks(standalone, survivor, app_id)
    # the master lists it as a finished application of its own
    finished = _wait(
        "the master lists the finished application",
        lambda: {i: n for i, n in _apps(standalone, "completedapps").items() if i not in before},
    )
    assert list(finished.values()) == [APP_NAME], finished


def _last_batch_if_all_in(data_dir: Path, n: int) -> tuple[int] | None:
    """(the last batch id,) once the metrics count ``n`` records into bronze, else None."""
    if not (data_dir / "metrics/pipeline_batches/_delta_log").exists():
        return None
    rows = [r for r in metrics_rows(data_dir) if r.query == "bronze"]
    if sum(r.input_rows or 0 for r in rows) < n:
        return None
    return (max(r.batch_id for r in rows),)


def test_status_then_stop_leaves_no_daemon(standalone: cluster.ClusterInfo):
    data_dir = str(standalone.data_dir)
    status = run_cli("spark", "status", "--data-dir", data_dir, timeout=60)
    assert status.returncode == 0 and standalone.master_url in status.stdout, status.stdout
    stop = run_cli("spark", "stop", "--data-dir", data_dir, timeout=180)
    assert stop.returncode == 0 and f"stopped {standalone.master_url}" in stop.stdout, stop
    for daemon in (standalone.master, *standalone.workers):
        assert not group_members(daemon.pid), daemon
    status = run_cli("spark", "status", "--data-dir", data_dir, timeout=60)
    assert status.returncode == 3 and status.stdout.startswith("not running"), status.stdout
