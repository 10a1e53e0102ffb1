"""Producer throughput: realistic orders acknowledged by a local broker, against Kafka's own tool.

Starts an embedded broker of its own (stopped at the end), then measures
  1. generation alone (orders/s, no I/O),
  2. ``ecomstream produce``'s send path (generator + runner + sender, acks=all, idempotent) for a
     small grid of client settings, and kafka-python with the best of them,
  3. ``org.apache.kafka.tools.ProducerPerformance`` (the Java client) against the same broker with
     the same settings and record size (random bytes), and with our own orders as payloads,
and prints both rates and their ratio; ``--write-doc`` keeps docs/benchmarks.md current.

    .venv/bin/python -m benchmarks.bench_producer [--records 300000] [--write-doc]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ecomstream import broker, jars
from ecomstream.producer.generator import OrderGenerator
from ecomstream.producer.runner import run
from ecomstream.producer.sender import SenderSettings, open_sender

BATCH_BYTES = 512 * 1024
DEFAULT_COMPRESSION, DEFAULT_LINGER_MS = "none", 20  # ecomstream produce's defaults


def generation_rate(n: int) -> tuple[float, float, float]:
    """(orders/s wall clock, orders per CPU-second, mean record bytes), no I/O."""
    gen = OrderGenerator(1)
    batches = n // 2000
    start, cpu0 = time.perf_counter(), time.process_time()
    sizes = 0
    for _ in range(batches):
        sizes += sum(len(v) for _, v, _ in gen.batch(2000))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return batches * 2000 / elapsed, batches * 2000 / cpu, sizes / (batches * 2000)


CPU_RATES: list[float] = []  # acknowledged per CPU-second of this process (all its threads)


def python_rate(bootstrap: str, client: str, compression: str, linger_ms: int, n: int) -> float:
    cpu0 = time.process_time()
    topic = f"bench-{client}-{compression}-{linger_ms}-{time.time_ns()}"
    sender = open_sender(
        SenderSettings(bootstrap, topic, client, linger_ms, BATCH_BYTES, compression)
    )
    try:
        summary = run(OrderGenerator(1), sender, count=n, rate=0)
    finally:
        sender.close()
    if summary.failed or summary.acknowledged != n:
        raise SystemExit(f"{client}: {summary.failed} failed: {dict(summary.errors)}")
    CPU_RATES.append(n / max(time.process_time() - cpu0, 1e-9))
    return summary.rate


def java_rate(
    bootstrap: str,
    compression: str,
    linger_ms: int,
    n: int,
    *,
    record_size: int | None,
    payload_file: Path | None,
) -> float:
    topic = f"bench-java-{compression}-{linger_ms}-{time.time_ns()}"
    cmd = [
        "java",
        "-Xmx384m",
        "-cp",
        jars.kafka_classpath(),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(n),
        "--throughput",
        "-1",
    ]
    if payload_file is not None:
        cmd += ["--payload-file", str(payload_file)]
    else:
        cmd += ["--record-size", str(record_size)]
    cmd += [
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={linger_ms}",
        f"batch.size={BATCH_BYTES}",
        f"compression.type={compression}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    match = None
    for line in done.stdout.splitlines():
        match = re.search(r"^\d+ records sent, ([\d.]+) records/sec", line) or match
    if done.returncode != 0 or match is None:
        raise SystemExit(f"ProducerPerformance failed: {(done.stderr or done.stdout)[-400:]}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3, help="best-config repeats (median)")
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    n = args.records
    load_before = os.getloadavg()[0]

    gen_rate, gen_cpu_rate, avg_size = generation_rate(min(n, 200_000))
    record_size = round(avg_size)
    print(
        f"generation alone: {gen_rate:,.0f} orders/s ({gen_cpu_rate:,.0f} per CPU-second), "
        f"mean record {avg_size:.0f} bytes",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        data_dir = Path(tmp)
        info = broker.start(data_dir, broker.free_port())
        try:
            bootstrap = info.bootstrap
            payloads = data_dir / "orders.jsonl"
            payloads.write_bytes(b"\n".join(v for _, v, _ in OrderGenerator(2).batch(20_000)))
            python_rate(bootstrap, "confluent", "none", 5, 20_000)  # warm up the broker
            grid: dict[tuple[str, int], float] = {}
            for compression in ("none", "lz4", "zstd"):
                for linger in (5, 20, 50):
                    grid[(compression, linger)] = python_rate(
                        bootstrap, "confluent", compression, linger, n
                    )
                    print(
                        f"confluent {compression:5} linger {linger:3} ms: "
                        f"{grid[(compression, linger)]:,.0f}/s",
                        flush=True,
                    )
            # the head-to-head uses what users get (the CLI defaults), not the grid's noisy winner
            compression, linger = DEFAULT_COMPRESSION, DEFAULT_LINGER_MS
            kp_n = max(n // 10, 10_000)
            from kafka import codec

            kp_codec = (
                compression if getattr(codec, f"has_{compression}", lambda: True)() else "none"
            )
            kp_rate = python_rate(bootstrap, "kafka-python", kp_codec, linger, kp_n)
            print(
                f"kafka-python {kp_codec} linger {linger} ms ({kp_n:,} records): {kp_rate:,.0f}/s",
                flush=True,
            )
            ours, theirs, theirs_json, ours_cpu = [], [], [], []
            for _ in range(args.rounds):  # interleaved, so both see the same machine load
                ours.append(python_rate(bootstrap, "confluent", compression, linger, n))
                ours_cpu.append(CPU_RATES[-1])
                theirs.append(
                    java_rate(
                        bootstrap,
                        compression,
                        linger,
                        n,
                        record_size=record_size,
                        payload_file=None,
                    )
                )
                theirs_json.append(
                    java_rate(
                        bootstrap, compression, linger, n, record_size=None, payload_file=payloads
                    )
                )
                print(
                    f"round: ecomstream {ours[-1]:,.0f}/s, ProducerPerformance "
                    f"{theirs[-1]:,.0f}/s ({record_size} B random), "
                    f"{theirs_json[-1]:,.0f}/s (our orders as payload)",
                    flush=True,
                )
        finally:
            broker.stop(data_dir)

    ours_m, theirs_m, json_m, cpu_m = (
        statistics.median(x) for x in (ours, theirs, theirs_json, ours_cpu)
    )
    load_after = os.getloadavg()[0]
    print(f"\necomstream produce (confluent, {compression}, linger {linger} ms): {ours_m:,.0f}/s")
    print(f"  per CPU-second of the producer process:       {cpu_m:,.0f}/s")
    print(f"ProducerPerformance, {record_size} B random records:     {theirs_m:,.0f}/s")
    print(f"ProducerPerformance, our orders as payloads:    {json_m:,.0f}/s")
    print(
        f"ratio ecomstream / Java tool: {ours_m / theirs_m:.2f} (random), "
        f"{ours_m / json_m:.2f} (same payloads)"
    )

    if args.write_doc:
        from benchmarks._report import write_section

        rows = "\n".join(
            f"| confluent | {c} | {lg} | {r:,.0f} |" for (c, lg), r in sorted(grid.items())
        )
        cmd = f".venv/bin/python -m benchmarks.bench_producer --records {n} --write-doc"
        kib = BATCH_BYTES // 1024
        rounds_text = "; ".join(
            f"{a:,.0f} / {b:,.0f} / {c:,.0f}"
            for a, b, c in zip(ours, theirs, theirs_json, strict=True)
        )
        load_note = (
            "the machine was otherwise idle: the broker and the client under test make the load"
            if load_before < 4
            else "other work shared the machine, so read the ratio rather than the absolutes"
        )
        body = f"""Command: `{cmd}`
(embedded broker of its own, 2 partitions; acks=all, idempotent; batch.size {kib} KiB;
realistic orders, fault rate 0, mean record {avg_size:.0f} bytes). Load average (1 min) was
{load_before:.1f} before and {load_after:.1f} after on 2 cores ({load_note}). Both tools run
interleaved against the same broker, so the ratio is the fair comparison; the per-CPU-second
figure shows what one core does.

Generation alone (no I/O): **{gen_rate:,.0f} orders/s** ({gen_cpu_rate:,.0f} per CPU-second).

| what | records/s (median of {args.rounds}) |
| --- | --- |
| `ecomstream produce` defaults ({compression}, linger {linger} ms) | **{ours_m:,.0f}** |
| the same, per CPU-second of the producer process (all its threads) | {cpu_m:,.0f} |
| Kafka `ProducerPerformance`, {record_size} B random records, same settings | {theirs_m:,.0f} |
| Kafka `ProducerPerformance`, our orders as `--payload-file` | {json_m:,.0f} |
| kafka-python, compression {kp_codec}, linger {linger} ms ({kp_n:,} records) | {kp_rate:,.0f} |

Ratio ecomstream / Java tool: **{ours_m / theirs_m:.2f}** (random records),
**{ours_m / json_m:.2f}** (same payloads). The rounds (ecomstream / Java random / Java payloads):
{rounds_text}.

Client settings grid ({n:,} records each, confluent-kafka):

| client | compression | linger.ms | acknowledged/s |
| --- | --- | --- | --- |
{rows}
"""
        write_section("producer", body)
        print("docs/benchmarks.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
