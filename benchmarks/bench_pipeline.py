"""Catch-up: an N-event backlog drained by ``ecomstream pipeline --once``, end to end through
gold, beside a bare Kafka -> Delta passthrough query on the same backlog in the same session.

    python -m benchmarks.bench_pipeline --events 2000000 --write-doc

Starts its own embedded broker (or uses ``--bootstrap-servers``), fills a fresh topic with the
producer (not timed), then times (1) the passthrough: Kafka source -> key/value/coordinates ->
Delta sink, availableNow; (2) the pipeline: bronze, silver (+ quarantine), gold, --once. Both
read the same topic from the earliest offset with the same maxOffsetsPerTrigger.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section


class _BatchLog(logging.Handler):
    """Collects (query, input rows, duration ms) from the pipeline's per-batch log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.loads(record.getMessage())
        except ValueError:
            return
        if line.get("event") == "batch":
            self.batches.append(
                (line["query"], int(line.get("input_rows") or 0), int(line["duration_ms"]))
            )


def _produce(bootstrap: str, topic: str, events: int, fault_rate: float, work: Path) -> dict:
    summary = work / "produce.json"
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "produce", "--bootstrap-servers", bootstrap,
         "--topic", topic, "--count", str(events), "--rate", "0", "--seed", "7",
         "--fault-rate", str(fault_rate), "--progress", "off", "--summary-json", str(summary)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"producer failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(summary.read_text()))


def _passthrough(spark, bootstrap: str, topic: str, max_offsets: int, work: Path) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(max_offsets))
        .load()
        .selectExpr(
            "CAST(value AS STRING) AS raw_value",
            "CAST(key AS STRING) AS kafka_key",
            "topic AS kafka_topic",
            "partition AS kafka_partition",
            "offset AS kafka_offset",
            "timestamp AS kafka_timestamp",
            "current_timestamp() AS ingested_at",
        )
    )
    query = (
        source.writeStream.format("delta")
        .option("checkpointLocation", str(work / "passthrough" / "_checkpoint"))
        .trigger(availableNow=True)
        .start(str(work / "passthrough" / "table"))
    )
    try:
        query.awaitTermination()
    finally:
        query.stop()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--bootstrap-servers", default="")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=500_000)
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)

    from ecomstream import broker
    from ecomstream.jobs import pipeline
    from ecomstream.jobs.settings import PipelineSettings
    from ecomstream.spark import local_session

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    bootstrap = args.bootstrap_servers
    try:
        if not bootstrap:
            bootstrap = broker.start(work / "broker", broker.free_port()).bootstrap
        topic = f"bench-catchup-{int(time.time())}"
        t0 = time.perf_counter()
        summary = _produce(bootstrap, topic, args.events, args.fault_rate, work)
        print(f"backlog: {args.events:,} events in {time.perf_counter() - t0:.1f}s", flush=True)

        spark = local_session("bench-pipeline", log_file=work / "spark.log")
        passthrough_s = _passthrough(spark, bootstrap, topic, args.max_offsets_per_trigger, work)
        n_pass = spark.read.format("delta").load(str(work / "passthrough" / "table")).count()
        print(f"passthrough: {n_pass:,} rows in {passthrough_s:.1f}s", flush=True)

        pipeline.configure_logging()
        batch_log = _BatchLog()
        logging.getLogger("ecomstream.pipeline").addHandler(batch_log)
        data_dir = work / "data"
        settings = PipelineSettings(
            topic=topic, data_dir=data_dir, bootstrap_servers=bootstrap, once=True,
            max_offsets_per_trigger=args.max_offsets_per_trigger,
        )  # fmt: skip
        t0 = time.perf_counter()
        pipeline.run(settings)
        pipeline_s = time.perf_counter() - t0
        count = {
            key: spark.read.format("delta").load(str(data_dir / key)).count()
            for key in ("bronze/orders", "silver/orders", "silver/quarantine")
        }
        spark.stop()
    finally:
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    assert n_pass == args.events and count["bronze/orders"] == args.events, (n_pass, count)
    pass_rate, pipe_rate = args.events / passthrough_s, args.events / pipeline_s
    ratio = pipe_rate / pass_rate
    print(f"pipeline --once: {args.events:,} events in {pipeline_s:.1f}s = {pipe_rate:,.0f} ev/s; "
          f"passthrough {pass_rate:,.0f} ev/s; ratio {ratio:.2f}x", flush=True)  # fmt: skip
    if args.write_doc:
        batches = "; ".join(
            f"{q} {rows:,} in {ms / 1000:.1f}" for q, rows, ms in batch_log.batches if rows
        )
        n = f"{args.events:,}"
        cmd = f"python -m benchmarks.bench_pipeline --events {args.events} --write-doc"
        write_section(
            "pipeline catch-up",
            f"""
Command: `{cmd}` (max offsets per trigger {args.max_offsets_per_trigger:,}, fault rate
{args.fault_rate}). Backlog on an embedded broker, filled by the producer before timing.
Targets: >= 100,000 events/s through gold and >= 0.5x the passthrough.

| run | events | seconds | events/s |
| --- | ---: | ---: | ---: |
| bare Kafka -> Delta passthrough (availableNow) | {n} | {passthrough_s:.1f} | {pass_rate:,.0f} |
| `pipeline --once` (all three layers) | {n} | {pipeline_s:.1f} | {pipe_rate:,.0f} |

Ratio pipeline / passthrough: **{ratio:.2f}x**. Tables after the run: bronze
{count["bronze/orders"]:,}, silver {count["silver/orders"]:,}, quarantine
{count["silver/quarantine"]:,} (producer: {summary.get("clean", "?")} clean,
faults {summary.get("faults", {})}).
Load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f} on
{os.cpu_count()} cores (figures from a shared, busy machine are a floor, not the design's).
The pipeline time includes creating the tables and starting three queries one after the other;
the passthrough ran first in the same JVM. Batches (query: rows in seconds):
{batches}
""",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
