"""Continuous: send -> visible in silver and in gold at steady rates, beside a bare Kafka ->
Delta passthrough at the same rates, on one broker in one run.

    python -m benchmarks.bench_latency --rates 500,5000 --duration 300 --warmup 60 --write-doc

One embedded broker (or ``--bootstrap-servers``). At each rate of ``--rates``, two runs one
after the other, each on a new topic carrying the same records (same ``--seed`` and
``--fault-rate``), producer and broker on this machine:

1. the passthrough (:mod:`benchmarks._passthrough`: Kafka source -> Delta streaming sink,
   trigger ``--passthrough-trigger``, default 0 = back to back) in its own process;
2. the pipeline (``python -m ecomstream pipeline``, continuous) with the CLI's default trigger
   interval and maintenance interval unless ``--trigger-interval`` / ``--maintenance-interval``.

Each run: the consumer starts, its query is up (checkpoint metadata written), then the producer
sends at the rate for ``--warmup`` + ``--duration`` s; the events sent in the first ``--warmup``
s are left out of every figure. After the producer stops the consumer has up to
``--drain-timeout`` s to land everything, then it is stopped (SIGTERM).

Visibility, from the tables' Delta logs afterwards (no Spark in this process):

- silver: commitInfo.timestamp of the silver/orders commit that added the event's file (the
  files compacted away since are still on disk and are read as written);
- gold: commitInfo.timestamp of the gold/category_sales commit whose ``ecomstream`` marker has
  the batch id of that silver commit's marker (the pipeline writes both in the same batch);
- passthrough: commitInfo.timestamp of its table's commit that added the event's file.

Latency = visible - order_timestamp (parsed from the JSON value for the passthrough; late orders,
sent a minute or more after their order_timestamp, left out), and also visible - the Kafka
record's CreateTime, the moment the producer's client took the record (order_timestamp trails
the send clock by the producer's 0-2 s jitter). Events never visible count as infinitely late.
Peak RSS: the whole stack (broker, consumer with its JVM, producer), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._report import write_section
from benchmarks._stack import (
    GIB,
    LATENCY_HEADER,
    MEMORY_METHOD,
    DeltaLog,
    Latency,
    RssSampler,
    add_common_options,
    create_topic,
    end,
    first_send_us,
    json_lines,
    latency,
    loadavg,
    passthrough_cmd,
    passthrough_events,
    passthrough_latency,
    phase_medians,
    phase_table,
    pipeline_cmd,
    pipeline_drained,
    pipeline_events,
    producer_cmd,
    spawn,
    verdict,
    wait_for,
)

# (rate, visible in) -> p95 target in seconds (issue 10)
TARGETS: dict[tuple[int, str], float] = {
    (5000, "silver"): 5.0,
    (5000, "gold"): 10.0,
    (500, "gold"): 6.0,
}
TARGET_RSS_GIB = 4.0


@dataclass
class Run:
    kind: str  # passthrough | pipeline
    rate: int
    sent: int = 0
    sent_rate: float = 0.0  # what the producer achieved (acknowledged / its elapsed time)
    arrived: int = 0  # rows in the passthrough's table / in bronze
    drained: bool = False
    drain_s: float = 0.0  # from the producer's end until everything was visible
    peak_rss: int = 0
    memory: str = ""
    load_start: str = ""
    load_end: str = ""
    latencies: dict[str, Latency] = field(default_factory=dict)
    gaps_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    phases: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    maintenance_runs: int = 0


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return ""


def _run(
    kind: str, rate: int, args: argparse.Namespace, bootstrap: str, work: Path, sampler: RssSampler
) -> Run:
    run = Run(kind, rate, load_start=loadavg())
    name = f"{kind}-{rate}"
    d = work / name
    d.mkdir(parents=True)
    topic = f"bench-latency-{name}-{int(time.time())}"
    create_topic(bootstrap, topic)
    if kind == "passthrough":
        cmd = passthrough_cmd(bootstrap, topic, d, trigger_interval=args.passthrough_trigger)
        ready = d / "_checkpoint" / "metadata"
        logs = {"table": DeltaLog(d / "table")}
    else:
        cmd = pipeline_cmd(
            bootstrap,
            topic,
            d / "data",
            trigger_interval=args.trigger_interval,
            maintenance_interval=args.maintenance_interval,
        )
        ready = d / "data" / "_checkpoints" / "medallion" / "metadata"
        logs = {"bronze/orders": DeltaLog(d / "data" / "bronze/orders")}
    log = d / "run.log"
    since = time.time()
    print(f"[{rate}/s {kind}] starting: {shlex.join(cmd)}", flush=True)
    proc = spawn(cmd, log)
    producer = None
    sampler.add(proc.pid, kind)
    try:
        wait_for(ready, proc, log)
        time.sleep(args.settle)
        summary = d / "produce.json"
        producer = spawn(
            producer_cmd(
                bootstrap,
                topic,
                rate=rate,
                seed=args.seed,
                fault_rate=args.fault_rate,
                summary=summary,
                duration=args.warmup + args.duration,
            ),
            d / "produce.log",
        )
        sampler.add(producer.pid, "producer")
        print(
            f"[{rate}/s {kind}] query up; producing for {args.warmup + args.duration:g}s",
            flush=True,
        )
        while producer.poll() is None:
            if proc.poll() is not None:
                end(producer)
                raise SystemExit(f"{kind} exited with {proc.returncode} mid-run:\n{_tail(log)}")
            time.sleep(1)
        sampler.remove(producer.pid)
        if producer.returncode != 0:
            raise SystemExit(f"producer failed:\n{_tail(d / 'produce.log')}")
        produced = json.loads(summary.read_text())
        run.sent, run.sent_rate = int(produced["acknowledged"]), float(produced["rate"])
        stopped = time.monotonic()
        while time.monotonic() - stopped < args.drain_timeout:
            for table in logs.values():
                table.refresh()
            if _drained(kind, logs, log, run.sent):
                run.drained = True
                break
            if proc.poll() is not None:
                raise SystemExit(f"{kind} exited with {proc.returncode}:\n{_tail(log)}")
            time.sleep(1)
        run.drain_s = time.monotonic() - stopped
        run.peak_rss = sampler.peak(since, time.time())
        run.memory = sampler.memory_text(since, time.time())
        run.load_end = loadavg()
    finally:
        if producer is not None:
            end(producer)
        end(proc)
        sampler.remove(proc.pid)

    if kind == "passthrough":
        table = logs["table"].refresh()
        run.arrived = table.rows
        run.gaps_ms["passthrough"] = table.visibility_gap_ms()
        events = passthrough_events(d / "table")
        start = first_send_us(events) + int(args.warmup * 1e6)
        run.latencies["passthrough"] = passthrough_latency(
            events, start, start + int(args.duration * 1e6), max(0, run.sent - run.arrived)
        )
    else:
        data = d / "data"
        run.arrived = DeltaLog(data / "bronze/orders").refresh().rows
        for key in ("silver/orders", "gold/category_sales"):
            run.gaps_ms[key] = DeltaLog(data / key).refresh().visibility_gap_ms()
        events = pipeline_events(data)
        start = first_send_us(events) + int(args.warmup * 1e6)
        stop = start + int(args.duration * 1e6)
        unarrived = max(0, run.sent - run.arrived)
        run.latencies["silver"] = latency(events, "silver_us", start, stop, unarrived)
        run.latencies["gold"] = latency(events, "gold_us", start, stop, unarrived)
        run.phases = phase_medians(json_lines(log, "batch_phases"))
        run.maintenance_runs = len(json_lines(log, "maintenance"))
    for what, lat in run.latencies.items():
        print(
            f"[{rate}/s {kind}] {what}: p50/p95 from order_timestamp {lat.order_p50:.2f}/"
            f"{lat.order_p95:.2f} s, from send {lat.send_p50:.2f}/{lat.send_p95:.2f} s "
            f"({lat.events:,} events, {lat.missing:,} never visible)",
            flush=True,
        )
    print(
        f"[{rate}/s {kind}] sent {run.sent:,}, arrived {run.arrived:,}, drained "
        f"{run.drained} after {run.drain_s:.0f}s; {run.memory}",
        flush=True,
    )
    return run


def _drained(kind: str, logs: dict[str, DeltaLog], log: Path, sent: int) -> bool:
    if kind == "passthrough":
        return logs["table"].rows >= sent
    return pipeline_drained(logs, log, sent)


def _report(runs: list[Run], args: argparse.Namespace, load_start: str, load_end: str) -> str:
    cmd = (
        f"python -m benchmarks.bench_latency --rates {args.rates} --duration {args.duration:g}"
        f" --warmup {args.warmup:g}"
    )
    if args.trigger_interval is not None:
        cmd += f" --trigger-interval '{args.trigger_interval}'"
    if args.maintenance_interval is not None:
        cmd += f" --maintenance-interval '{args.maintenance_interval}'"
    if args.passthrough_trigger != "0":
        cmd += f" --passthrough-trigger '{args.passthrough_trigger}'"
    if args.fault_rate != 0.05:
        cmd += f" --fault-rate {args.fault_rate}"
    trigger = args.trigger_interval or "the CLI default, 1 second"
    upkeep = args.maintenance_interval or "the CLI default, 5 minutes"
    parts = [
        f"Command: `{cmd} --write-doc`. One embedded broker; producer, broker and consumer on "
        f"this machine. Each rate runs the passthrough first, then the pipeline, each in its own "
        f"process on a new topic with the same records (seed {args.seed}, "
        f"{args.fault_rate:.0%} faults): the producer sends at the rate for {args.warmup:g} s "
        f"of warm-up (left out of every figure) plus {args.duration:g} s measured. Pipeline: "
        f"continuous, trigger interval {trigger}, maintenance interval {upkeep}; passthrough: "
        f"Delta streaming sink, trigger `{args.passthrough_trigger}`. Machine load average at "
        f"start {load_start}, at end {load_end}, on {os.cpu_count()} cores; this machine's "
        "speed drifts ~2x between runs, so read each figure beside its passthrough floor.",
        "",
        "Latency = commit time (commitInfo.timestamp) of the commit that made the event visible "
        "- the event's order_timestamp (late orders left out), and - its Kafka CreateTime (the "
        "send). The producer's order_timestamp trails the send clock by 0-2 s of jitter, so the "
        "first pair of columns carries ~1 s more than the second. Gold: the gold/category_sales "
        "commit with the silver commit's batch marker (the writes of a batch run side by side, so "
        "gold may commit before silver). Events never visible before the "
        f"{args.drain_timeout:g} s allowed after the producer stopped count as infinitely late.",
    ]
    rates = sorted({r.rate for r in runs})
    for rate in rates:
        parts += ["", f"### {rate:,} events/s", "", LATENCY_HEADER]
        targets = []
        for run in (r for r in runs if r.rate == rate):
            for what, lat in run.latencies.items():
                label = "passthrough table (the floor)" if what == "passthrough" else what
                parts.append(lat.row(label))
                target = TARGETS.get((rate, what))
                if target is not None:
                    targets.append(
                        f"{what} p95 <= {target:g} s: {verdict(lat.order_p95, target)} from "
                        f"order_timestamp ({lat.order_p95:.2f} s), {verdict(lat.send_p95, target)}"
                        f" from send ({lat.send_p95:.2f} s); passthrough p95 at this rate "
                        f"{_floor(runs, rate)}"
                    )
        parts.append("")
        parts += [f"Target {t}." for t in targets] or ["No latency target at this rate."]
        for run in (r for r in runs if r.rate == rate):
            gaps = ", ".join(f"{k} {m:.0f}/{x:.0f} ms" for k, (m, x) in run.gaps_ms.items())
            parts.append(
                f"{run.kind.capitalize()}: sent {run.sent:,} ({run.sent_rate:,.0f}/s achieved), "
                f"arrived {run.arrived:,}, "
                f"{'all visible' if run.drained else '**not all visible**'} "
                f"{run.drain_s:.0f} s after the producer stopped; memory of the stack: "
                f"{run.memory}; load at start {run.load_start}, at end "
                f"{run.load_end}; log file written after commitInfo.timestamp (median/max) "
                f"{gaps}."
                + (f" Maintenance runs: {run.maintenance_runs}." if run.kind == "pipeline" else "")
            )
        for run in (r for r in runs if r.rate == rate and r.phases):
            parts += [
                "",
                f"Pipeline batch phases at {rate:,}/s (`batch_phases` lines, all batches):",
                "",
                phase_table(run.phases),
            ]
    peak = max((r.peak_rss for r in runs if r.kind == "pipeline"), default=0) / GIB
    parts += [
        "",
        f"Whole-stack peak RSS with the pipeline (broker + pipeline with its JVM + producer; "
        f"{MEMORY_METHOD}): "
        f"**{peak:.2f} GiB** (target <= {TARGET_RSS_GIB:g} GiB: {verdict(peak, TARGET_RSS_GIB)}).",
    ]
    return "\n".join(parts)


def _floor(runs: list[Run], rate: int) -> str:
    for run in runs:
        if run.rate == rate and "passthrough" in run.latencies:
            lat = run.latencies["passthrough"]
            return f"{lat.order_p95:.2f} s / {lat.send_p95:.2f} s"
    return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,5000", help="events/s, comma-separated")
    parser.add_argument("--duration", type=float, default=300, help="measured s per run")
    parser.add_argument("--warmup", type=float, default=60, help="s per run left out first")
    parser.add_argument("--trigger-interval", default=None, help="pipeline (default: the CLI's)")
    parser.add_argument("--maintenance-interval", default=None, help="pipeline (default: CLI's)")
    parser.add_argument("--passthrough-trigger", default="0")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--settle", type=float, default=3, help="s after the query is up")
    add_common_options(parser)
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    from ecomstream import broker

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=args.work_dir))
    bootstrap = args.bootstrap_servers
    sampler = RssSampler()
    runs: list[Run] = []
    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            sampler.add(info.pid, "broker")
        sampler.start()
        for rate in rates:
            for kind in ("passthrough", "pipeline"):
                runs.append(_run(kind, rate, args, bootstrap, work, sampler))
    finally:
        sampler.stop()
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()
    body = _report(runs, args, load_start, load_end)
    print(body)
    if args.json_out:
        figures: dict[str, Any] = {
            "args": vars(args) | {"work_dir": str(args.work_dir)},
            "runs": [asdict(r) for r in runs],
        }
        args.json_out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if args.write_doc or args.doc_path:
        write_section("pipeline latency", body, args.doc_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
