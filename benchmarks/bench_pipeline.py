"""Catch-up: a backlog with 5 % faults drained by ``ecomstream pipeline --once`` beside a bare
Kafka -> Delta passthrough, each less its own start-up, on the same broker in the same run.

    python -m benchmarks.bench_pipeline --events 2000000 --write-doc

One embedded broker (or ``--bootstrap-servers``). The producer first fills two topics, not
timed: the backlog (``--events``, ``--fault-rate``) and a one-record topic. Then, each as its own
process with its own JVM (as a user runs it), timed from spawn to exit:

1. the passthrough (:mod:`benchmarks._passthrough`: Kafka source -> Delta sink, availableNow,
   ``--max-offsets-per-trigger``) on the one-record topic, once untimed (it warms the page cache
   of the jars for every run after it), then timed (``--startup-runs`` times, median): its
   start-up;
2. the passthrough on the backlog;
3. ``python -m ecomstream pipeline --once`` on the one-record topic (fresh data dir each
   time, ``--startup-runs`` times, median): its start-up;
4. ``pipeline --once`` on the backlog (fresh data dir, same ``--max-offsets-per-trigger``).

Throughput = events / (backlog run - one-record run) for each, and the ratio pipeline /
passthrough (target >= 0.4x). Row counts come from the tables' Delta logs; the pipeline's
``batch_phases`` log lines are summarised (median ms per phase over the backlog's batches);
peak RSS is the whole stack's (broker + the process under test with its JVM) during each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section
from benchmarks._stack import (
    GIB,
    MEMORY_METHOD,
    DeltaLog,
    RssSampler,
    add_common_options,
    create_topic,
    json_lines,
    loadavg,
    passthrough_cmd,
    phase_medians,
    phase_table,
    pipeline_cmd,
    produce,
    producer_cmd,
    timed,
    verdict,
)

TARGET_RATIO = 0.4
TARGET_RSS_GIB = 4.0


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=500_000)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--startup-runs", type=int, default=1, help="one-record runs each, median taken"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)

    from ecomstream import broker

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.work_dir))
    bootstrap = args.bootstrap_servers
    sampler = RssSampler()
    max_offsets = args.max_offsets_per_trigger
    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            sampler.add(info.pid, "broker")
        sampler.start()
        stamp = int(time.time())
        backlog, one = f"bench-catchup-{stamp}", f"bench-startup-{stamp}"
        create_topic(bootstrap, backlog)
        create_topic(bootstrap, one)
        t0 = time.perf_counter()
        summary = produce(
            producer_cmd(
                bootstrap,
                backlog,
                rate=0,
                seed=args.seed,
                fault_rate=args.fault_rate,
                summary=work / "produce.json",
                count=args.events,
            ),
            work / "produce.json",
        )
        fill_s = time.perf_counter() - t0
        produce(
            producer_cmd(
                bootstrap,
                one,
                rate=0,
                seed=args.seed,
                fault_rate=0,
                summary=work / "produce-one.json",
                count=1,
            ),
            work / "produce-one.json",
        )
        print(f"backlog: {args.events:,} events in {fill_s:.1f}s; one-record topic", flush=True)

        def passthrough(topic: str, name: str) -> tuple[float, int, str]:
            cmd = passthrough_cmd(bootstrap, topic, work / name, once=True, max_offsets=max_offsets)
            return timed(cmd, work / name / "run.log", sampler, "passthrough")

        def pipeline(topic: str, name: str) -> tuple[float, int, str]:
            cmd = pipeline_cmd(
                bootstrap, topic, work / name / "data", once=True, max_offsets=max_offsets
            )
            return timed(cmd, work / name / "run.log", sampler, "pipeline")

        warm_s, _, _ = passthrough(one, "passthrough-warm")
        print(f"warm-up start (untimed): {warm_s:.1f}s", flush=True)
        starts = [passthrough(one, f"passthrough-one-{i}") for i in range(args.startup_runs)]
        pt_starts = [s for s, _, _ in starts]
        pt_start, pt_start_rss = statistics.median(pt_starts), max(r for _, r, _ in starts)
        print(f"passthrough start-up (one record): {pt_start:.1f}s", flush=True)
        pt_total, pt_rss, pt_memory = passthrough(backlog, "passthrough-backlog")
        print(f"passthrough backlog: {pt_total:.1f}s", flush=True)
        starts = [pipeline(one, f"pipeline-one-{i}") for i in range(args.startup_runs)]
        pl_starts = [s for s, _, _ in starts]
        pl_start, pl_start_rss = statistics.median(pl_starts), max(r for _, r, _ in starts)
        print(f"pipeline start-up (one record): {pl_start:.1f}s", flush=True)
        pl_total, pl_rss, pl_memory = pipeline(backlog, "pipeline-backlog")
        print(f"pipeline backlog: {pl_total:.1f}s", flush=True)
        load_end = loadavg()

        n_pass = DeltaLog(work / "passthrough-backlog" / "table").refresh().rows
        data = work / "pipeline-backlog" / "data"
        count = {
            k: DeltaLog(data / k).refresh().rows
            for k in ("bronze/orders", "silver/orders", "silver/quarantine")
        }
        log = work / "pipeline-backlog" / "run.log"
        phases = phase_medians(json_lines(log, "batch_phases"))
        batches = [
            (int(b["batch_id"]), int(b.get("input_rows") or 0), int(b["duration_ms"]))
            for b in json_lines(log, "batch")
            if b.get("query") == "bronze"
        ]
    finally:
        sampler.stop()
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if n_pass != args.events or count["bronze/orders"] != args.events:
        raise SystemExit(f"rows missing: passthrough {n_pass:,}, tables {count}")
    n = args.events
    pt_net, pl_net = pt_total - pt_start, pl_total - pl_start
    pt_rate = n / pt_net if pt_net > 0 else float("nan")
    pl_rate = n / pl_net if pl_net > 0 else float("nan")
    ratio = pl_rate / pt_rate
    raw_ratio = (n / pl_total) / (n / pt_total)
    peak_gib = max(pt_rss, pl_rss, pt_start_rss, pl_start_rss) / GIB
    print(
        f"passthrough: {pt_total:.1f}s - start-up {pt_start:.1f}s = {pt_rate:,.0f} ev/s; "
        f"pipeline --once: {pl_total:.1f}s - start-up {pl_start:.1f}s = {pl_rate:,.0f} ev/s; "
        f"ratio {ratio:.2f}x (target >= {TARGET_RATIO}x; {raw_ratio:.2f}x with start-up); "
        f"peak RSS passthrough {pt_rss / GIB:.2f} GiB, pipeline {pl_rss / GIB:.2f} GiB",
        flush=True,
    )
    print(f"memory, passthrough run: {pt_memory}; pipeline run: {pl_memory}")
    if pt_net <= 0 or pl_net <= 0:
        print(
            "a backlog run took no longer than its start-up: the backlog is too small to tell "
            "apart from start-up noise (use a larger --events or more --startup-runs)"
        )
    print(f"tables: {count}; batches (id, rows, ms): {batches}")
    print(phase_table(phases))
    figures = {
        "events": n,
        "fault_rate": args.fault_rate,
        "max_offsets_per_trigger": max_offsets,
        "passthrough_s": pt_total,
        "passthrough_startup_s": pt_start,
        "passthrough_startup_runs_s": pt_starts,
        "passthrough_rate": pt_rate,
        "pipeline_s": pl_total,
        "pipeline_startup_s": pl_start,
        "pipeline_startup_runs_s": pl_starts,
        "pipeline_rate": pl_rate,
        "ratio": ratio,
        "ratio_with_startup": raw_ratio,
        "peak_rss_gib": peak_gib,
        "passthrough_peak_rss_gib": pt_rss / GIB,
        "pipeline_peak_rss_gib": pl_rss / GIB,
        "passthrough_memory": pt_memory,
        "pipeline_memory": pl_memory,
        "tables": count,
        "batches": batches,
        "phases": phases,
        "load_start": load_start,
        "load_end": load_end,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.write_doc or args.doc_path:
        cmd = f"python -m benchmarks.bench_pipeline --events {n}"
        cmd += f" --max-offsets-per-trigger {max_offsets}"
        if args.fault_rate != 0.05:
            cmd += f" --fault-rate {args.fault_rate}"
        if args.startup_runs != 1:
            cmd += f" --startup-runs {args.startup_runs}"
        pt_row = (
            f"| bare Kafka -> Delta passthrough (availableNow) | {pt_total:.1f} | "
            f"{pt_start:.1f} | {pt_net:.1f} | {pt_rate:,.0f} | the floor |"
        )
        pl_row = (
            f"| `pipeline --once` (bronze, quarantine, silver, gold, metrics) | {pl_total:.1f} | "
            f"{pl_start:.1f} | {pl_net:.1f} | {pl_rate:,.0f} | >= {TARGET_RATIO}x the floor |"
        )
        batch_text = "; ".join(
            f"{i}: {rows:,} rows in {ms / 1000:.1f} s" for i, rows, ms in batches
        )
        write_section(
            "pipeline catch-up",
            f"""
Command: `{cmd} --write-doc`. Backlog of {n:,} events ({args.fault_rate:.0%} faults, seed
{args.seed}) on an embedded broker, filled by the producer before any timing ({fill_s:.0f} s).
Each run is its own process with its own JVM, timed from spawn to exit, both queries with
maxOffsetsPerTrigger {max_offsets:,}; each run's start-up is the same command on a one-record
topic (median of {args.startup_runs}: passthrough {_secs(pt_starts)}, pipeline
{_secs(pl_starts)}; one untimed passthrough start ran first to warm the page cache). Order:
passthrough start-up, passthrough backlog, pipeline start-up, pipeline backlog. Machine load average
at start {load_start}, at end {load_end}, on {os.cpu_count()} cores; this machine's speed
drifts ~2x between runs, so read the ratio first.

| run | backlog s | one-record s (start-up) | net s | events/s less start-up | floor / target |
| --- | ---: | ---: | ---: | ---: | --- |
{pt_row}
{pl_row}

Ratio pipeline / passthrough, each less its start-up: **{ratio:.2f}x** (target >=
{TARGET_RATIO}x: {verdict(ratio, TARGET_RATIO, higher_is_better=True)}); with start-up
included: {raw_ratio:.2f}x. Peak RSS of the whole stack (broker + the run's process tree;
{MEMORY_METHOD}): passthrough {pt_rss / GIB:.2f} GiB, pipeline **{pl_rss / GIB:.2f}
GiB** (target <= {TARGET_RSS_GIB:.0f} GiB: {verdict(peak_gib, TARGET_RSS_GIB)}). Pipeline run:
{pl_memory}. Passthrough run: {pt_memory}.

Tables after the pipeline run (rows from the Delta logs): bronze {count["bronze/orders"]:,},
silver {count["silver/orders"]:,}, quarantine {count["silver/quarantine"]:,}; passthrough
{n_pass:,} (producer: {summary.get("clean", 0):,} clean, faults {summary.get("faults", {})}).
Pipeline batches (bronze: rows in s): {batch_text}.

Where a pipeline batch's time goes (`batch_phases` log lines of the backlog run; the writes
run side by side, so `writes` is their wall time, not their sum):

{phase_table(phases)}

The one-record run also pays one (tiny) batch, so "less start-up" takes a batch's fixed cost
off both sides as well.
""",
            args.doc_path,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
