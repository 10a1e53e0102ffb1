"""Continuous mode under a steady load: event time -> visible in silver / in gold, peak memory.

    python -m benchmarks.bench_latency --rate 5000 --duration 300 --write-doc

Starts an embedded broker (or uses ``--bootstrap-servers``), the pipeline in continuous mode
(``python -m ecomstream pipeline``) and the producer at ``--rate`` events/s for ``--duration`` s
with event time = the send clock. Afterwards, per event:

- visible in silver = the commit time of the silver commit that added the event's file (from the
  Delta log's ``commitInfo.timestamp``);
- visible in gold = the end of the first gold batch that started after that silver commit (from
  the metrics table), i.e. when the event's windows were recomputed and merged.

Latency = visible - order_timestamp; p50 and p95 over every event. Peak memory = the largest sum
of RSS over the whole stack (pipeline driver and its Spark JVM, broker JVM, producer), sampled
every 0.5 s.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._report import write_section


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _tree_rss(roots: list[int]) -> int:
    seen: set[int] = set()
    todo = list(roots)
    total = 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo.extend(_children(pid))
    return total


class RssSampler(threading.Thread):
    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, _tree_rss(self.roots))
            time.sleep(0.5)


def _commit_times(table: Path) -> dict[str, float]:
    """Data file name -> commit time (epoch s) of the commit that added it."""
    out: dict[str, float] = {}
    for log in sorted((table / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        ts = next((a["commitInfo"]["timestamp"] for a in actions if "commitInfo" in a), None)
        if ts is None:
            ts = log.stat().st_mtime * 1000
        for a in actions:
            if "add" in a:
                out[Path(a["add"]["path"]).name] = ts / 1000
    return out


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    if not values:
        return float("nan"), float("nan")
    return values[int(0.5 * (len(values) - 1))], values[int(0.95 * (len(values) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--trigger-interval", default="0")
    parser.add_argument("--bootstrap-servers", default="")
    parser.add_argument("--drain-timeout", type=float, default=180, help="s to catch up at the end")
    parser.add_argument("--write-doc", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    # metrics timestamps come back as naive datetimes in the local zone: make that UTC
    os.environ["TZ"] = "UTC"
    time.tzset()

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from ecomstream import broker

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    bootstrap = args.bootstrap_servers
    roots: list[int] = []
    pipe = None
    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            roots.append(info.pid)
        topic = f"bench-latency-{int(time.time())}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        admin.close()
        data_dir = work / "data"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        pipe_log = open(work / "pipeline.log", "w")
        pipe = subprocess.Popen(
            [sys.executable, "-m", "ecomstream", "pipeline", "--bootstrap-servers", bootstrap,
             "--topic", topic, "--data-dir", str(data_dir),
             "--trigger-interval", args.trigger_interval],
            stdout=pipe_log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        roots.append(pipe.pid)
        sampler = RssSampler(roots)
        sampler.start()
        ready = data_dir / "_checkpoints" / "gold" / "metadata"
        deadline = time.monotonic() + 600
        while not ready.exists():
            if pipe.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"pipeline did not start; see {work / 'pipeline.log'}")
            time.sleep(0.5)
        time.sleep(5)
        producer = subprocess.Popen(
            [sys.executable, "-m", "ecomstream", "produce", "--bootstrap-servers", bootstrap,
             "--topic", topic, "--rate", str(args.rate), "--duration", str(args.duration),
             "--seed", "11", "--fault-rate", "0", "--progress", "off",
             "--summary-json", str(work / "produce.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        roots.append(producer.pid)
        producer.wait()
        sent = json.loads((work / "produce.json").read_text())["acknowledged"]
        # let the pipeline drain what is left, then stop it cleanly
        drain_deadline = time.monotonic() + args.drain_timeout
        silver_log = data_dir / "silver" / "orders"
        while time.monotonic() < drain_deadline:
            if sum(1 for _ in silver_log.glob("*.parquet")) and _drained(work, sent):
                break
            time.sleep(2)
        pipe.send_signal(signal.SIGTERM)
        pipe.wait(timeout=180)
        sampler.stop_flag.set()
        sampler.join()
        peak = sampler.peak

        from ecomstream.spark import local_session

        spark = local_session("bench-latency-read", log_file=work / "spark-read.log")
        silver_commits = _commit_times(data_dir / "silver" / "orders")
        gold_batches = sorted(
            (r.started_at.replace(tzinfo=dt.UTC).timestamp(),
             r.finished_at.replace(tzinfo=dt.UTC).timestamp())
            for r in spark.read.format("delta").load(str(data_dir / "metrics/pipeline_batches"))
            .where("query = 'gold'").collect()
        )  # fmt: skip
        starts = [s for s, _ in gold_batches]
        rows = (
            spark.read.format("delta").load(str(silver_log))
            .selectExpr("unix_micros(order_timestamp) / 1e6 AS t", "_metadata.file_name AS f")
            .collect()
        )  # fmt: skip
        spark.stop()
        to_silver, to_gold = [], []
        for r in rows:
            committed = silver_commits.get(r.f)
            if committed is None:
                continue
            to_silver.append(committed - r.t)
            i = bisect.bisect_left(starts, committed)
            if i < len(gold_batches):
                to_gold.append(gold_batches[i][1] - r.t)
        s50, s95 = _percentiles(to_silver)
        g50, g95 = _percentiles(to_gold)
    finally:
        if pipe is not None and pipe.poll() is None:
            os.killpg(pipe.pid, signal.SIGKILL)
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    gib = peak / 2**30
    print(f"{sent:,} events at {args.rate}/s for {args.duration:.0f}s: "
          f"to silver p50 {s50:.2f}s p95 {s95:.2f}s; to gold p50 {g50:.2f}s p95 {g95:.2f}s "
          f"({len(to_gold):,} events reached gold); peak RSS {gib:.2f} GiB")  # fmt: skip
    if args.write_doc:
        cmd = (
            f"python -m benchmarks.bench_latency --rate {args.rate} --duration "
            f"{args.duration:.0f} --trigger-interval '{args.trigger_interval}' --write-doc"
        )
        write_section(
            "pipeline latency",
            f"""
Command: `{cmd}`. Embedded broker, pipeline in continuous mode (trigger interval
`{args.trigger_interval}`), producer at {args.rate:,} events/s with event time = send time.
Targets: p95 <= 3 s to silver, <= 5 s to gold, <= 4 GiB RSS for the whole stack.

| measure | p50 | p95 |
| --- | ---: | ---: |
| event time -> visible in silver | {s50:.2f} s | {s95:.2f} s |
| event time -> visible in gold | {g50:.2f} s | {g95:.2f} s |

Events: {sent:,} sent, {len(rows):,} in silver, {len(to_gold):,} reached gold (within the
{args.drain_timeout:.0f} s allowed to catch up after the producer stopped; fewer than sent means
the pipeline did not keep up on this machine).
Peak RSS of the whole stack (pipeline driver + Spark JVM, broker, producer): **{gib:.2f} GiB**.
Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f} on
{os.cpu_count()} cores (figures from a shared, busy machine are a floor, not the design's).
Silver visibility is the commit time of the Delta commit that added the event's file; gold
visibility the end of the first gold batch that started after that commit.
""",
        )
    return 0


def _drained(work: Path, sent: int) -> bool:
    """The pipeline's log shows gold batches covering every sent event."""
    try:
        lines = (work / "pipeline.log").read_text().splitlines()
    except OSError:
        return False
    gold = 0
    for line in lines:
        if line.startswith("{") and '"query": "gold"' in line:
            gold += int(json.loads(line).get("input_rows") or 0)
    return gold >= sent


if __name__ == "__main__":
    raise SystemExit(main())
