"""Reprocess: ``ecomstream reprocess`` of a bronze table beside ``pipeline --once`` over the same
records from Kafka, in the same run.

    python -m benchmarks.bench_reprocess --events 2000000 --write-doc

One embedded broker (or ``--bootstrap-servers``). The producer fills a two-partition topic
(``--events``, ``--fault-rate``; not timed). Then, each as its own process with its own JVM (as
a user runs it), timed from spawn to exit, the stack's peak RSS sampled meanwhile:

1. ``pipeline --once`` of the topic into a new data dir (1-minute windows): what the stream
   costs for these records, Kafka read included;
2. ``reprocess --window "5 minutes"`` of that data dir: the same records read from bronze,
   through the same batch, into staging, and every table switched.

Ratio = pipeline seconds / reprocess seconds (target >= 1.0x: a reprocess reads Delta, pays no
broker and writes no bronze). Row counts come from the tables' Delta logs; the reprocess's
own figures from its ``{"event": "reprocess"}`` log line. ``--verify`` adds a third run,
``pipeline --once --window "5 minutes"`` into another new data dir, and compares the row
counts of the rebuilt tables with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section
from benchmarks._stack import (
    GIB,
    RssSampler,
    add_common_options,
    create_topic,
    json_lines,
    loadavg,
    pipeline_cmd,
    produce,
    producer_cmd,
    timed,
)

TARGET_RATIO = 1.0
TARGET_RSS_GIB = 4.0
WINDOW = "5 minutes"
REBUILT = ("silver/orders", "silver/quarantine", "gold/category_sales", "gold/location_sales")


def count(table: Path) -> int:
    """Rows a table holds now (the rebuilt tables were overwritten: not the log's adds)."""
    from deltalake import DeltaTable

    return int(DeltaTable(str(table)).to_pyarrow_dataset().count_rows())


def reprocess_cmd(data_dir: Path, window: str, chunk_rows: int) -> list[str]:
    return [
        sys.executable, "-m", "ecomstream", "reprocess", "--data-dir", str(data_dir),
        "--window", window, "--chunk-rows", str(chunk_rows),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verify", action="store_true", help="a third run to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, medians taken")
    parser.add_argument("--partitions", type=int, default=2, help="of the topic")
    add_common_options(parser)
    args = parser.parse_args(argv)

    from ecomstream import broker

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-reprocess-", dir=args.work_dir))
    bootstrap = args.bootstrap_servers
    sampler = RssSampler()
    n, chunk = args.events, args.max_offsets_per_trigger
    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            sampler.add(info.pid, "broker")
        sampler.start()
        topic = f"bench-reprocess-{int(time.time())}"
        create_topic(bootstrap, topic, args.partitions)
        t0 = time.perf_counter()
        produce(
            producer_cmd(
                bootstrap,
                topic,
                rate=0,
                seed=args.seed,
                fault_rate=args.fault_rate,
                summary=work / "produce.json",
                count=n,
            ),
            work / "produce.json",
        )
        print(f"topic: {n:,} events in {time.perf_counter() - t0:.1f}s", flush=True)

        # rounds alternate (pipeline, reprocess of its data dir), each pipeline into a new
        # data dir: on a shared machine a single pair measures the neighbours as much as us
        pl_runs: list[tuple[float, int, str]] = []
        rp_runs: list[tuple[float, int, str]] = []
        for r in range(args.rounds):
            data = work / f"pipeline-{r}" / "data"
            cmd = pipeline_cmd(bootstrap, topic, data, once=True, max_offsets=chunk)
            pl_runs.append(timed(cmd, work / f"pipeline-{r}" / "run.log", sampler, "pipeline"))
            print(f"round {r}: pipeline --once {pl_runs[-1][0]:.1f}s", flush=True)
            before = {k: count(data / k) for k in ("bronze/orders", *REBUILT)}
            log = work / f"reprocess-{r}.log"
            cmd = reprocess_cmd(data, WINDOW, chunk)
            rp_runs.append(timed(cmd, log, sampler, "reprocess"))
            print(f"round {r}: reprocess {rp_runs[-1][0]:.1f}s", flush=True)
            after = {k: count(data / k) for k in REBUILT}
        pl_s = statistics.median(s for s, _, _ in pl_runs)
        rp_s = statistics.median(s for s, _, _ in rp_runs)
        pl_rss, pl_mem = max((r, m) for _, r, m in pl_runs)
        rp_rss, rp_mem = max((r, m) for _, r, m in rp_runs)
        figures_line = (json_lines(log, "reprocess") or [{}])[-1]
        switches = {j["table"]: j["ms"] for j in json_lines(log, "reprocess_switch")}
        chunks = [(j["batch_id"], j["read"]) for j in json_lines(log, "batch_phases")]
        batches = [
            (j["batch_id"], j["read"])
            for j in json_lines(work / f"pipeline-{r}" / "run.log", "batch_phases")
        ]
        verified = None
        if args.verify:
            other = work / "verify" / "data"
            cmd = pipeline_cmd(bootstrap, topic, other, once=True, max_offsets=chunk)
            timed([*cmd, "--window", WINDOW], work / "verify" / "run.log", sampler, "verify")
            want = {k: count(other / k) for k in REBUILT}
            verified = want == after
            print(f"verify: a new pipeline with {WINDOW} windows holds {want}", flush=True)
        load_end = loadavg()
    finally:
        sampler.stop()
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if before["bronze/orders"] != n:
        raise SystemExit(f"bronze holds {before['bronze/orders']:,} rows, not {n:,}")
    ratio = pl_s / rp_s
    peak = max(pl_rss, rp_rss) / GIB
    ok = ratio >= TARGET_RATIO and rp_rss / GIB <= TARGET_RSS_GIB
    print(
        f"pipeline --once {pl_s:.1f}s, reprocess {rp_s:.1f}s: {ratio:.2f}x (target >= "
        f"{TARGET_RATIO}x); peak RSS pipeline {pl_rss / GIB:.2f} GiB, reprocess "
        f"{rp_rss / GIB:.2f} GiB (target <= {TARGET_RSS_GIB} GiB): {'met' if ok else 'NOT met'}",
        flush=True,
    )
    print(f"memory, pipeline run: {pl_mem}; reprocess run: {rp_mem}")
    print(f"rows before {before}; after {after}")
    figures = {
        "events": n,
        "fault_rate": args.fault_rate,
        "chunk_rows": chunk,
        "pipeline_s": pl_s,
        "reprocess_s": rp_s,
        "pipeline_runs_s": [s for s, _, _ in pl_runs],
        "reprocess_runs_s": [s for s, _, _ in rp_runs],
        "ratio": ratio,
        "pipeline_peak_rss_gib": pl_rss / GIB,
        "reprocess_peak_rss_gib": rp_rss / GIB,
        "pipeline_memory": pl_mem,
        "reprocess_memory": rp_mem,
        "switches_ms": switches,
        "before": before,
        "after": after,
        "reprocess_line": figures_line,
        "verified": verified,
        "load_start": load_start,
        "load_end": load_end,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if args.write_doc or args.doc_path:
        cmd_text = f"python -m benchmarks.bench_reprocess --events {n}"
        if chunk != 200_000:
            cmd_text += f" --max-offsets-per-trigger {chunk}"
        if args.verify:
            cmd_text += " --verify"
        if args.rounds != 1:
            cmd_text += f" --rounds {args.rounds}"
        runs = (
            f"Rounds (pipeline, reprocess seconds): "
            f"{[(round(a[0], 1), round(b[0], 1)) for a, b in zip(pl_runs, rp_runs, strict=True)]}; "
            "medians below."
        )
        check = {
            None: "not checked (no `--verify`)",
            True: f'equal to a new `pipeline --once --window "{WINDOW}"`\'s',
            False: "DIFFERENT from a new pipeline's (see the run's output)",
        }[verified]
        rows = "\n".join(
            f"| `{k}` | {before[k]:,} | {after[k]:,} |" for k in REBUILT
        )  # fmt: skip
        write_section(
            "reprocess",
            f"""
Command: `{cmd_text} --write-doc`. {n:,} events ({args.fault_rate:.0%} faults, seed
{args.seed}) on a topic of {args.partitions} partitions on the embedded broker; each run
its own process and JVM, timed from spawn to exit (start-up included in both), batches /
chunks of {chunk:,} records. {runs}

| run | seconds | peak RSS (GiB, the stack) |
| --- | --- | --- |
| `pipeline --once` from Kafka, 1-minute windows | {pl_s:.1f} | {pl_rss / GIB:.2f} |
| `reprocess --window "{WINDOW}"` from bronze | {rp_s:.1f} | {rp_rss / GIB:.2f} |

The stack's memory (the broker stays up during both), pipeline run: {pl_mem}; reprocess run:
{rp_mem}. Spark job per batch (id, ms), pipeline: {batches}; reprocess chunks: {chunks}.
Switch commits (ms): {switches}.

Ratio pipeline / reprocess: **{ratio:.2f}x** (target >= {TARGET_RATIO}x); peak RSS of the
reprocess {rp_rss / GIB:.2f} GiB with the broker's (target <= {TARGET_RSS_GIB} GiB; the
stack's peak over both runs {peak:.2f} GiB). Load average {load_start} at the start,
{load_end} at the end.

| table | rows before (1 minute) | rows after ({WINDOW}) |
| --- | --- | --- |
{rows}

Rebuilt tables' row counts: {check}.
""",
            args.doc_path,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
