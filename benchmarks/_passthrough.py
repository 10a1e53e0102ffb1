"""The floor the pipeline stands beside: a bare Kafka -> Delta query (no parsing, no checks, one
table through Delta's streaming sink), run as its own process the way ``ecomstream pipeline``
runs, with the same local Spark session settings (``ecomstream.spark.local_session``).

    python -m benchmarks._passthrough --bootstrap-servers B --topic T --dir D --once
    python -m benchmarks._passthrough --bootstrap-servers B --topic T --dir D --trigger-interval 0

The table is ``D/table``, the checkpoint ``D/_checkpoint``. ``--once``: availableNow, exits
when the topic is drained; otherwise runs until SIGTERM/SIGINT, then stops the query cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--trigger-interval", default="0")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=500_000)
    args = parser.parse_args(argv)
    os.environ["TZ"] = "UTC"
    time.tzset()

    from ecomstream.jobs.settings import parse_interval
    from ecomstream.spark import local_session

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    work = args.dir.resolve()
    spark = local_session("bench-passthrough", log_file=work / "spark.log")
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", str(args.max_offsets_per_trigger))
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
    writer = (
        source.writeStream.format("delta")
        .queryName("passthrough")
        .option("checkpointLocation", str(work / "_checkpoint"))
    )
    if args.once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=parse_interval(args.trigger_interval))
    query = writer.start(str(work / "table"))
    # poll instead of awaitTermination(): a signal never lands in the middle of a Py4J call
    while query.isActive and not stop.is_set():
        stop.wait(0.5)
    if query.isActive:
        query.stop()
    error = query.exception()
    if error is not None:
        print(f"passthrough query failed: {str(error).splitlines()[0][:400]}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
