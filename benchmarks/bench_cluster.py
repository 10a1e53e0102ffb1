"""Cluster overhead: the same backlog drained by ``pipeline --once`` on ``local[2]`` and on a
two-worker standalone cluster of this machine, each less its own start-up.

    python -m benchmarks.bench_cluster --events 2000000 --write-doc

Both runs use the same 2 cores: ``local[2]`` is one JVM with two task threads; the cluster is a
master and two workers (``ecomstream spark start``: one core and 1 GiB each), so the
application gets two executor JVMs of one core. What this measures is what the cluster costs
(executor JVMs beside the driver's, tasks and their results crossing sockets, the executors
fetching the jars), not a speed-up: there are no more cores to spread over.

One embedded broker (or ``--bootstrap-servers``). The producer first fills two topics, not
timed: the backlog (``--events``, ``--fault-rate``) and a one-record topic. Then, each as its own
process with its own JVM, timed from spawn to exit, fresh data dir each time:

1. ``pipeline --once --master local[2]`` on the one-record topic (``--startup-runs`` times,
   median; one untimed run first warms the page cache): its start-up; then on the backlog;
2. the cluster is started (its start-up is reported, not counted), then the same two runs with
   ``--master spark://127.0.0.1:<port>``; the cluster is stopped.

Throughput = events / (backlog run - one-record run) for each; the ratio cluster / local. Peak
RSS is the whole stack's: broker, the pipeline process tree and, for the cluster, the master,
the workers and their executors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._report import write_section
from benchmarks._stack import (
    GIB,
    MEMORY_METHOD,
    DeltaLog,
    RssSampler,
    _children,
    add_common_options,
    create_topic,
    json_lines,
    loadavg,
    phase_medians,
    phase_table,
    pipeline_cmd,
    produce,
    producer_cmd,
    timed,
)

LOCAL_MASTER = "local[2]"


class ExecutorWatch(threading.Thread):
    """Adds each worker's executor JVMs to the sampler as roots of their own: a java child of a
    java process is left out of a tree (_stack._tree takes it for a fork before its exec), and
    the executors are exactly that."""

    def __init__(self, sampler: RssSampler, workers: dict[int, str]) -> None:
        super().__init__(daemon=True, name="executor-watch")
        self.sampler, self.workers = sampler, workers
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            children = _children()
            for pid, name in self.workers.items():
                for child in children.get(pid, ()):
                    self.sampler.add(child, f"{name}-executor")

    def stop(self) -> None:
        self._halt.set()
        self.join()


class Side:
    """One master's runs: start-ups on the one-record topic, then the backlog."""

    def __init__(self, label: str, master: str, work: Path, args: argparse.Namespace) -> None:
        self.label, self.master, self.work, self.args = label, master, work, args
        self.starts: list[float] = []
        self.total = self.rss = 0.0
        self.memory = ""

    def run(self, bootstrap: str, topic: str, name: str, sampler: RssSampler) -> float:
        data = self.work / name / "data"
        cmd = pipeline_cmd(
            bootstrap, topic, data, once=True, max_offsets=self.args.max_offsets_per_trigger
        )
        seconds, rss, memory = timed(
            [*cmd, "--master", self.master], self.work / name / "run.log", sampler, "pipeline"
        )
        if "backlog" in name:
            self.total, self.rss, self.memory = seconds, rss, memory
        return seconds

    def measure(self, bootstrap: str, one: str, backlog: str, sampler: RssSampler) -> None:
        self.starts = [
            self.run(bootstrap, one, f"{self.label}-one-{i}", sampler)
            for i in range(self.args.startup_runs)
        ]
        print(f"{self.label} start-up (one record): {_secs(self.starts)}", flush=True)
        self.run(bootstrap, backlog, f"{self.label}-backlog", sampler)
        print(f"{self.label} backlog: {self.total:.1f}s", flush=True)

    @property
    def start(self) -> float:
        return statistics.median(self.starts)

    @property
    def net(self) -> float:
        return self.total - self.start

    def rate(self, events: int) -> float:
        return events / self.net if self.net > 0 else float("nan")

    def bronze_rows(self) -> int:
        return (
            DeltaLog(self.work / f"{self.label}-backlog" / "data" / "bronze/orders").refresh().rows
        )

    def phases(self) -> dict[str, tuple[float, float, int]]:
        return phase_medians(
            json_lines(self.work / f"{self.label}-backlog" / "run.log", "batch_phases")
        )

    def row(self, events: int, note: str) -> str:
        return (
            f"| `--master {self.master}` | {self.total:.1f} | {self.start:.1f} | {self.net:.1f} | "
            f"{self.rate(events):,.0f} | {self.rss / GIB:.2f} | {note} |"
        )


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="1g")
    parser.add_argument(
        "--startup-runs", type=int, default=1, help="one-record runs each, median taken"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)

    from ecomstream import broker, cluster

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=args.work_dir))
    bootstrap = args.bootstrap_servers
    sampler = RssSampler()
    local = Side("local", LOCAL_MASTER, work, args)
    spark_dir = work / "cluster"
    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            sampler.add(info.pid, "broker")
        sampler.start()
        stamp = int(time.time())
        backlog, one = f"bench-cluster-{stamp}", f"bench-cluster-one-{stamp}"
        create_topic(bootstrap, backlog)
        create_topic(bootstrap, one)
        t0 = time.perf_counter()
        summary = produce(
            producer_cmd(bootstrap, backlog, rate=0, seed=args.seed, fault_rate=args.fault_rate,
                         summary=work / "produce.json", count=args.events),
            work / "produce.json",
        )  # fmt: skip
        fill_s = time.perf_counter() - t0
        produce(
            producer_cmd(bootstrap, one, rate=0, seed=args.seed, fault_rate=0,
                         summary=work / "produce-one.json", count=1),
            work / "produce-one.json",
        )  # fmt: skip
        print(f"backlog: {args.events:,} events in {fill_s:.1f}s; one-record topic", flush=True)

        warm_s = local.run(bootstrap, one, "warm-up", sampler)
        print(f"warm-up start (untimed): {warm_s:.1f}s", flush=True)
        local.measure(bootstrap, one, backlog, sampler)

        t0 = time.perf_counter()
        ready = cluster.start(
            spark_dir, workers=args.workers, port=0, webui_port=0, worker_cores=1,
            worker_memory=args.worker_memory,
        )  # fmt: skip
        cluster_start_s = time.perf_counter() - t0
        for daemon in (ready.master, *ready.workers):
            sampler.add(daemon.pid, daemon.name)
        watch = ExecutorWatch(sampler, {w.pid: w.name for w in ready.workers})
        watch.start()
        print(f"cluster {ready.master_url}: ready in {cluster_start_s:.1f}s", flush=True)
        remote = Side("cluster", ready.master_url, work, args)
        remote.measure(bootstrap, one, backlog, sampler)
        watch.stop()
        load_end = loadavg()
        rows = {"local": local.bronze_rows(), "cluster": remote.bronze_rows()}
        phases = {"local": local.phases(), "cluster": remote.phases()}
    finally:
        cluster.stop(spark_dir)
        sampler.stop()
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if any(n != args.events for n in rows.values()):
        raise SystemExit(f"rows missing from bronze: {rows} of {args.events:,}")
    n = args.events
    ratio = remote.rate(n) / local.rate(n)
    raw_ratio = local.total / remote.total
    print(
        f"local[2]: {local.total:.1f}s - start-up {local.start:.1f}s = {local.rate(n):,.0f} ev/s; "
        f"cluster: {remote.total:.1f}s - start-up {remote.start:.1f}s = {remote.rate(n):,.0f} "
        f"ev/s; cluster / local {ratio:.2f}x ({raw_ratio:.2f}x with start-up), on the same "
        f"{os.cpu_count()} cores: the cluster's overhead, not a speed-up",
        flush=True,
    )
    print(f"memory, local run: {local.memory}; cluster run: {remote.memory}")
    for side in ("local", "cluster"):
        print(f"{side}:\n{phase_table(phases[side])}")
    figures = {
        "events": n,
        "fault_rate": args.fault_rate,
        "max_offsets_per_trigger": args.max_offsets_per_trigger,
        "workers": args.workers,
        "worker_memory": args.worker_memory,
        "cluster_start_s": cluster_start_s,
        "local_s": local.total,
        "local_startup_runs_s": local.starts,
        "local_rate": local.rate(n),
        "cluster_s": remote.total,
        "cluster_startup_runs_s": remote.starts,
        "cluster_rate": remote.rate(n),
        "ratio": ratio,
        "ratio_with_startup": raw_ratio,
        "local_peak_rss_gib": local.rss / GIB,
        "cluster_peak_rss_gib": remote.rss / GIB,
        "phases": phases,
        "load_start": load_start,
        "load_end": load_end,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.write_doc or args.doc_path:
        cmd = f"python -m benchmarks.bench_cluster --events {n}"
        if args.max_offsets_per_trigger != 200_000:
            cmd += f" --max-offsets-per-trigger {args.max_offsets_per_trigger}"
        if args.startup_runs != 1:
            cmd += f" --startup-runs {args.startup_runs}"
        write_section(
            "cluster overhead",
            f"""
Command: `{cmd} --write-doc`. **Same {os.cpu_count()} cores on both sides: this measures what a
standalone cluster costs, not a speed-up** (there are no more cores to spread the parse over;
docs/scaling.md says what a cluster does and does not scale). Backlog of {n:,} events
({args.fault_rate:.0%} faults, seed {args.seed}) on an embedded broker, filled before any
timing ({fill_s:.0f} s). `pipeline --once` with maxOffsetsPerTrigger
{args.max_offsets_per_trigger:,}, each run its own process, timed from spawn to exit, fresh data
dir; start-up = the same command on a one-record topic (median of {args.startup_runs}: local
{_secs(local.starts)}, cluster {_secs(remote.starts)}). The cluster: `ecomstream spark start`,
{args.workers} workers of 1 core and {args.worker_memory} (so {args.workers} executor JVMs of
one core beside the driver's JVM), ready in {cluster_start_s:.1f} s, not counted. Load average
at start {load_start}, at end {load_end}.

| master | backlog s | one-record s (start-up) | net s | events/s less start-up | peak RSS GiB | |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
{local.row(n, "one JVM, 2 task threads")}
{remote.row(n, f"{args.workers} executors of 1 core")}

Cluster / local, each less its start-up: **{ratio:.2f}x** ({raw_ratio:.2f}x of the local
run's wall time with start-up: local {local.total:.1f} s, cluster {remote.total:.1f} s). Peak
RSS of the whole stack ({MEMORY_METHOD}): local run {local.memory}; cluster run
{remote.memory}. Bronze held all {n:,} events after each run (producer: {summary.get("clean", 0):,}
clean, faults {summary.get("faults", {})}).

Where a batch's time goes, local (`batch_phases` medians; `read` is the Spark job, the rest is
the driver):

{phase_table(phases["local"])}

and on the cluster:

{phase_table(phases["cluster"])}
""",
            args.doc_path,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
