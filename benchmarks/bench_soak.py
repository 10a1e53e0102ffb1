"""Soak: the pipeline running continuously at a steady rate for half an hour: is it as fast at
the end as at the start, and what grows meanwhile (memory, files, Delta logs)?

    python -m benchmarks.bench_soak --rate 2000 --duration 1800 --window-minutes 5 --write-doc

One embedded broker (or ``--bootstrap-servers``), the pipeline in continuous mode (``python -m
ecomstream pipeline``, the CLI's default trigger and maintenance intervals unless given), the
producer at ``--rate`` events/s (``--fault-rate`` faults) for ``--warmup`` + ``--duration`` s;
the first ``--warmup`` s are left out of the latency figures. Every ``--sample-interval`` s:
RSS of the whole stack (broker, pipeline with its JVM, producer), and per table the live files
(adds minus removes in its Delta log) and the size of its ``_delta_log``.

Afterwards, per event, send -> visible in gold and in silver exactly as bench_latency measures
it (commit times from the Delta logs, gold by the silver commit's batch marker). Reported: p95
to gold in the first ``--window-minutes`` of the measured period vs the last (target: last <=
1.5x first), every window in between, RSS at start/middle/end, files and log size per table at
start/middle/end, the maintenance runs the pipeline logged.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._report import write_section
from benchmarks._stack import (
    GIB,
    MEMORY_METHOD,
    TABLES,
    DeltaLog,
    RssSampler,
    add_common_options,
    create_topic,
    end,
    first_send_us,
    json_lines,
    latency,
    loadavg,
    pipeline_cmd,
    pipeline_drained,
    pipeline_events,
    producer_cmd,
    spawn,
    tree_rss,
    verdict,
    wait_for,
)

TARGET_RATIO = 1.5
TARGET_RSS_GIB = 4.0


@dataclass
class Sample:
    t: float  # epoch s
    rss: int  # bytes, whole stack
    files: dict[str, int]  # table -> live files
    log_bytes: dict[str, int]  # table -> _delta_log size


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return ""


def _nearest(samples: list[Sample], when: float) -> Sample:
    return min(samples, key=lambda s: abs(s.t - when))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=1800, help="measured s")
    parser.add_argument("--warmup", type=float, default=60, help="s sent first, left out")
    parser.add_argument("--window-minutes", type=float, default=5)
    parser.add_argument("--sample-interval", type=float, default=10)
    parser.add_argument("--trigger-interval", default=None, help="pipeline (default: the CLI's)")
    parser.add_argument("--maintenance-interval", default=None, help="pipeline (default: CLI's)")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--settle", type=float, default=3, help="s after the query is up")
    add_common_options(parser)
    args = parser.parse_args(argv)
    window_s = args.window_minutes * 60
    if window_s > args.duration:
        parser.error("--window-minutes must fit in --duration")

    from ecomstream import broker

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-", dir=args.work_dir))
    data = work / "data"
    bootstrap = args.bootstrap_servers
    sampler = RssSampler()
    roots: list[int] = []
    samples: list[Sample] = []
    logs = {key: DeltaLog(data / key) for key in TABLES}
    proc = producer = None
    log = work / "pipeline.log"

    def sample() -> None:
        for table in logs.values():
            table.refresh()
        samples.append(
            Sample(
                t=time.time(),
                rss=tree_rss(roots),
                files={k: len(v.live) for k, v in logs.items()},
                log_bytes={k: v.log_bytes() for k, v in logs.items()},
            )
        )

    try:
        if not bootstrap:
            info = broker.start(work / "broker", broker.free_port())
            bootstrap = info.bootstrap
            sampler.add(info.pid, "broker")
            roots.append(info.pid)
        sampler.start()
        topic = f"bench-soak-{int(time.time())}"
        create_topic(bootstrap, topic)
        cmd = pipeline_cmd(
            bootstrap,
            topic,
            data,
            trigger_interval=args.trigger_interval,
            maintenance_interval=args.maintenance_interval,
        )
        print(f"starting: {shlex.join(cmd)}", flush=True)
        proc = spawn(cmd, log)
        sampler.add(proc.pid, "pipeline")
        roots.append(proc.pid)
        wait_for(data / "_checkpoints" / "medallion" / "metadata", proc, log)
        time.sleep(args.settle)
        total = args.warmup + args.duration
        summary = work / "produce.json"
        producer = spawn(
            producer_cmd(
                bootstrap,
                topic,
                rate=args.rate,
                seed=args.seed,
                fault_rate=args.fault_rate,
                summary=summary,
                duration=total,
            ),
            work / "produce.log",
        )
        sampler.add(producer.pid, "producer")
        roots.append(producer.pid)
        print(f"pipeline up; producing {args.rate:,}/s for {total:g}s", flush=True)
        next_at = time.monotonic()
        next_print = time.monotonic()
        while producer.poll() is None:
            if proc.poll() is not None:
                end(producer)
                raise SystemExit(f"pipeline exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() >= next_at:
                sample()
                next_at += args.sample_interval
                if time.monotonic() >= next_print:
                    s = samples[-1]
                    print(
                        f"  t+{s.t - samples[0].t:5.0f}s RSS {s.rss / GIB:.2f} GiB, bronze "
                        f"{logs['bronze/orders'].rows:,} rows, files {s.files}",
                        flush=True,
                    )
                    next_print += max(60.0, window_s)
            time.sleep(0.5)
        sampler.remove(producer.pid)
        roots.remove(producer.pid)
        if producer.returncode != 0:
            raise SystemExit(f"producer failed:\n{_tail(work / 'produce.log')}")
        produced = json.loads(summary.read_text())
        sent, sent_rate = int(produced["acknowledged"]), float(produced["rate"])
        produced_until = time.time()
        stopped = time.monotonic()
        drained = False
        while time.monotonic() - stopped < args.drain_timeout:
            sample()
            if pipeline_drained(logs, log, sent):
                drained = True
                break
            if proc.poll() is not None:
                raise SystemExit(f"pipeline exited with {proc.returncode}:\n{_tail(log)}")
            time.sleep(2)
        drain_s = time.monotonic() - stopped
        peak = sampler.peak()
        memory = sampler.memory_text()
        end(proc)
        sample()  # the tables as the run left them
        arrived = logs["bronze/orders"].rows
        live_check = {}
        try:
            from deltalake import DeltaTable

            live_check = {k: len(DeltaTable(str(data / k)).file_uris()) for k in TABLES}
        except Exception as exc:  # a cross-check only
            print(f"deltalake cross-check skipped: {exc}", flush=True)

        events = pipeline_events(data)
        # the last events sent that never reached bronze: never visible, in the last window
        unarrived = max(0, sent - arrived)
        start_us = first_send_us(events) + int(args.warmup * 1e6)
        end_us = start_us + int(args.duration * 1e6)
        w_us = int(window_s * 1e6)
        windows: list[tuple[int, int]] = []
        t = start_us
        while t + w_us <= end_us:
            windows.append((t, t + w_us))
            t += w_us
        if windows[-1][1] != end_us:
            windows.append((end_us - w_us, end_us))
        per_window = [
            (
                a,
                b,
                latency(events, "silver_us", a, b, unarrived if b == end_us else 0),
                latency(events, "gold_us", a, b, unarrived if b == end_us else 0),
            )
            for a, b in windows
        ]
        maint = json_lines(log, "maintenance")
        maint_failed = len(json_lines(log, "maintenance_failed"))
    finally:
        sampler.stop()
        for child in (producer, proc):
            if child is not None:
                end(child)
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()

    first_gold, last_gold = per_window[0][3], per_window[-1][3]
    ratio = last_gold.order_p95 / first_gold.order_p95 if first_gold.order_p95 else float("nan")
    ratio_send = last_gold.send_p95 / first_gold.send_p95 if first_gold.send_p95 else float("nan")
    at = {
        "start": _nearest(samples, start_us / 1e6),
        "middle": _nearest(samples, (start_us + end_us) / 2e6),
        "end": _nearest(samples, min(end_us / 1e6, produced_until)),
    }
    cmd_text = (
        f"python -m benchmarks.bench_soak --rate {args.rate} --duration {args.duration:g} "
        f"--warmup {args.warmup:g} --window-minutes {args.window_minutes:g}"
    )
    if args.trigger_interval is not None:
        cmd_text += f" --trigger-interval '{args.trigger_interval}'"
    if args.maintenance_interval is not None:
        cmd_text += f" --maintenance-interval '{args.maintenance_interval}'"
    if args.fault_rate != 0.05:
        cmd_text += f" --fault-rate {args.fault_rate}"
    lines = [
        f"Command: `{cmd_text} --write-doc`. One embedded broker, the pipeline continuous "
        f"(trigger interval {args.trigger_interval or 'the CLI default, 1 second'}, maintenance "
        f"interval {args.maintenance_interval or 'the CLI default, 5 minutes'}), the producer "
        f"at {args.rate:,} events/s ({args.fault_rate:.0%} faults, seed {args.seed}) for "
        f"{args.warmup:g} s of warm-up (left out) + {args.duration:g} s measured, all on this "
        f"machine. Machine load average at start {load_start}, at end {load_end}, on "
        f"{os.cpu_count()} cores.",
        "",
        f"p95 send -> visible in gold, last {args.window_minutes:g} min vs first: "
        f"**{ratio:.2f}x** from order_timestamp ({first_gold.order_p95:.2f} s -> "
        f"{last_gold.order_p95:.2f} s), {ratio_send:.2f}x from the Kafka send time "
        f"({first_gold.send_p95:.2f} s -> {last_gold.send_p95:.2f} s); target <= "
        f"{TARGET_RATIO:g}x: {verdict(ratio, TARGET_RATIO)} / {verdict(ratio_send, TARGET_RATIO)}.",
        f"Whole-stack peak RSS {peak / GIB:.2f} GiB (target <= {TARGET_RSS_GIB:g} GiB: "
        f"{verdict(peak / GIB, TARGET_RSS_GIB)}); at start / middle / end of the measured "
        "period "
        + " / ".join(f"{s.rss / GIB:.2f}" for s in at.values())
        + f" GiB. The {MEMORY_METHOD}; {memory}.",
        f"Events: {sent:,} sent ({sent_rate:,.0f}/s achieved), {arrived:,} in bronze, "
        f"{'all visible' if drained else '**not all visible**'} {drain_s:.0f} s after the "
        f"producer stopped. Maintenance: {len(maint)} runs"
        + (f" (median {statistics.median(m['ms'] for m in maint) / 1000:.1f} s)" if maint else "")
        + (f", {maint_failed} failed" if maint_failed else "")
        + ".",
        "",
        "Latency per window of send time (minutes from the end of the warm-up; from "
        "order_timestamp, late orders left out; `send` columns from the Kafka CreateTime):",
        "",
        "| window | events | silver p50 | silver p95 | gold p50 | gold p95 | gold p95 (send) |"
        " never in gold |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for a, b, s_lat, g_lat in per_window:
        lines.append(
            f"| {(a - start_us) / 60e6:.1f}-{(b - start_us) / 60e6:.1f} | {g_lat.events:,} | "
            f"{s_lat.order_p50:.2f} | {s_lat.order_p95:.2f} | {g_lat.order_p50:.2f} | "
            f"{g_lat.order_p95:.2f} | {g_lat.send_p95:.2f} | {g_lat.missing:,} |"
        )
    lines += [
        "",
        "Per table, live files (adds minus removes in the Delta log) and `_delta_log` size, at "
        "the start / middle / end of the measured period:",
        "",
        "| table | files | _delta_log KiB |",
        "| --- | ---: | ---: |",
    ]
    for key in TABLES:
        files = " / ".join(f"{s.files[key]:,}" for s in at.values())
        kib = " / ".join(f"{s.log_bytes[key] / 1024:,.0f}" for s in at.values())
        lines.append(f"| {key} | {files} | {kib} |")
    if live_check:
        last = samples[-1].files
        agree = all(live_check[k] == last[k] for k in TABLES)
        lines += [
            "",
            "Live files after the run by `deltalake.DeltaTable(...).file_uris()`: "
            + ", ".join(f"{k} {v:,}" for k, v in live_check.items())
            + (" (the same as the log count)." if agree else f" (log count: {last})."),
        ]
    body = "\n".join(lines)
    print(body)
    if args.json_out:
        figures: dict[str, Any] = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "sent": sent,
            "arrived": arrived,
            "ratio": ratio,
            "ratio_send": ratio_send,
            "peak_rss": peak,
            "windows": [
                {"from_us": a, "to_us": b, "silver": asdict(s), "gold": asdict(g)}
                for a, b, s, g in per_window
            ],
            "samples": [asdict(s) for s in samples],
            "maintenance": maint,
        }
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.write_doc or args.doc_path:
        write_section("pipeline soak", body, args.doc_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
