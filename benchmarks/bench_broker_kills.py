"""Stress (issue 26): the broker killed -9 or stopped cleanly at random moments, again and again,
under a producer at 2,000 orders/s and a continuous pipeline; each client in turn.

Per client: a broker of its own, a continuous ``ecomstream pipeline`` and an
``ecomstream produce`` process (fixed seed and start time, so the benchmark regenerates exactly
what was sent). Then ``--cycles`` times: run for a random 2-10 s, kill -9 the broker (two times
in three) or stop it cleanly, leave it down a random 1-8 s, start it again, and time from the
restart (``kafka start`` returned) to the next acknowledged record (the topic's end offsets
grow: only an acknowledged record is on the topic) and to the next pipeline batch (bronze
grows). A cycle that sees neither within ``--stuck-after`` seconds ends the run as stuck.

At the end: the producer's summary (sent = acknowledged, nothing failed), every acknowledged
order on the topic exactly once, and bronze, silver, quarantine and gold exact against the
contract model (the tests' oracle, tests/unit/contract_model.py).

    .venv/bin/python -m benchmarks.bench_broker_kills --cycles 30 --write-doc
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._report import write_section
from benchmarks._stack import (
    REPO,
    DeltaLog,
    create_topic,
    end,
    loadavg,
    pipeline_cmd,
    pipeline_drained,
    producer_cmd,
    spawn,
    wait_for,
)
from ecomstream import broker

START = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
FAULT_RATE = 0.05
# Above this many records the tables are checked by invariants in Arrow (check_invariants),
# not by the model, which holds every row as Python objects
FULL_CHECK_MAX = 500_000
# Reading millions of records back with kafka-python (~50,000/s here) takes minutes
READ_BACK_S = 1800.0


@dataclass
class Cycle:
    kind: str
    down_s: float
    restart_s: float  # kafka start, until it returned
    ack_s: float | None  # restart -> next acknowledged record
    batch_s: float | None  # restart -> next bronze commit


@dataclass
class ClientRun:
    client: str
    cycles: list[Cycle] = field(default_factory=list)
    stuck: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    on_topic: int = 0
    lost: int = 0
    duplicated: int = 0
    exact: str = ""
    elapsed_s: float = 0.0


def _end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=3000
        )
    except (KafkaError, OSError):
        return -1
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        offsets = consumer.end_offsets([TopicPartition(topic, p) for p in parts], timeout_ms=3000)
        return sum(offsets.values())
    except (KafkaError, OSError):
        return -1
    finally:
        consumer.close()


def _bronze_rows(data_dir: Path) -> int:
    log = data_dir / "bronze/orders/_delta_log"
    if not log.exists():
        return 0
    return DeltaLog(data_dir / "bronze/orders").refresh().rows


def _kill9(data_dir: Path) -> None:
    info = broker.running(data_dir)
    assert info is not None, "the broker is not running"
    os.kill(info.pid, signal.SIGKILL)
    while broker._pid_alive(info.pid):
        broker._reap(info.pid)
        time.sleep(0.05)
    broker._reap(info.pid)


def _until(condition: Any, timeout_s: float) -> float | None:
    """Seconds until ``condition()`` holds, None if it did not within ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def run_client(client: str, args: argparse.Namespace, work: Path, rng: random.Random) -> ClientRun:
    result = ClientRun(client)
    bdir, data_dir = work / f"{client}-broker", work / f"{client}-data"
    port = broker.free_port()
    broker.start(bdir, port, heap="384m")
    bootstrap = f"127.0.0.1:{port}"
    topic = f"kills-{client}"
    create_topic(bootstrap, topic)
    pipe_log = work / f"{client}-pipeline.log"
    pipeline = spawn(
        [*pipeline_cmd(bootstrap, topic, data_dir, maintenance_interval="0"),
         "--broker-outage-limit", str(args.stuck_after + 60)],
        pipe_log,
    )  # fmt: skip
    summary_path = work / f"{client}-summary.json"
    prod_log = work / f"{client}-producer.log"
    producer = spawn(
        [*producer_cmd(bootstrap, topic, rate=args.rate, seed=args.seed, fault_rate=FAULT_RATE,
                       summary=summary_path),
         "--client", client, "--start-time", START.isoformat(),
         "--client-log", str(work / f"{client}-client.log")],
        prod_log,
    )  # fmt: skip
    t0 = time.monotonic()
    try:
        wait_for(data_dir / "_checkpoints/medallion/commits/0", pipeline, pipe_log)
        for n in range(args.cycles):
            time.sleep(rng.uniform(2, 10))
            kind = "kill -9" if rng.random() < 2 / 3 else "clean stop"
            if kind == "kill -9":
                _kill9(bdir)
            else:
                broker.stop(bdir)
            down = rng.uniform(1, 8)
            time.sleep(down)  # the outage itself
            offsets, rows = _end_offsets(bootstrap, topic), _bronze_rows(data_dir)
            t = time.monotonic()
            broker.start(bdir, port, heap="384m")
            restart = time.monotonic() - t
            if offsets < 0:  # read before the kill would race it: the first answer after
                offsets = _end_offsets(bootstrap, topic)
            ack = _until(lambda o=offsets: _end_offsets(bootstrap, topic) > o, args.stuck_after)
            batch = _until(lambda r=rows: _bronze_rows(data_dir) > r, args.stuck_after)
            cycle = Cycle(kind, down, restart, ack, None if batch is None else batch + (ack or 0))
            result.cycles.append(cycle)
            print(
                f"[{client}] cycle {n + 1}/{args.cycles}: {kind}, down {down:.1f}s, restart "
                f"{restart:.1f}s, next ack {_fmt(ack)}, next batch {_fmt(cycle.batch_s)}",
                flush=True,
            )
            if ack is None or batch is None:
                result.stuck = f"cycle {n + 1} ({kind}): no {'ack' if ack is None else 'batch'}"
                break
            if producer.poll() is not None or pipeline.poll() is not None:
                result.stuck = f"cycle {n + 1}: a process exited (see {work})"
                break
    finally:
        end(producer, timeout_s=200)
        result.elapsed_s = time.monotonic() - t0
    if summary_path.exists():
        result.summary = json.loads(summary_path.read_text())
    _check(result, bootstrap, topic, data_dir, pipeline, pipe_log, args)
    end(pipeline)
    broker.stop(bdir)
    return result


def _check(
    result: ClientRun,
    bootstrap: str,
    topic: str,
    data_dir: Path,
    pipeline: Any,
    pipe_log: Path,
    args: Any,
) -> None:
    """Every acknowledged order on the topic once; the tables exact against the model."""
    from ecomstream.producer.generator import OrderGenerator

    # the tests' oracle: the benchmark checks exactly what the outage test checks
    sys.path.insert(0, str(REPO))
    from tests.integration.test_pipeline_checks import assert_exact
    from tests.kafka_helpers import read_all

    on_topic = read_all(bootstrap, topic, timeout_s=READ_BACK_S)
    result.on_topic = len(on_topic)
    sent = int(result.summary.get("sent", 0))
    gen = OrderGenerator(args.seed, fault_rate=FAULT_RATE, start_time=START, rate=args.rate)
    # records compared by a hash of key and value: millions of them, in little memory
    generated = Counter(hash((key, value)) for key, value, _ in gen.batch(sent))
    topic_counts = Counter(hash(record) for record in on_topic)
    values = Counter(hash(value) for _, value in on_topic)
    if len(on_topic) > FULL_CHECK_MAX:
        del on_topic  # the model's check below holds every row in Python: too big here
    # the generator's own re-sends (fault "duplicate") are in ``generated`` as often as sent
    result.duplicated = sum((topic_counts - generated).values())
    # sent and not on the topic: with nothing failed, every one of them is a lost record (a
    # failed record may or may not be on the topic, so a count up to "failed" can be those)
    result.lost = sum((generated - topic_counts).values())
    if pipeline.poll() is not None:
        result.exact = f"pipeline exited {pipeline.returncode}"
        return
    bronze = DeltaLog(data_dir / "bronze/orders")

    def drained() -> bool:
        return pipeline_drained({"bronze/orders": bronze.refresh()}, pipe_log, result.on_topic)

    if _until(drained, 600) is None:
        result.exact = "the pipeline did not catch up with the topic within 600 s"
        return
    try:
        if result.on_topic > FULL_CHECK_MAX:
            counts = check_invariants(data_dir, values)
            how = "invariants"
        else:
            counts = assert_exact(data_dir, on_topic)
            how = "exact against the model"
        result.exact = (
            f"{how}: bronze {counts['bronze']:,}, silver {counts['silver']:,}, "
            f"quarantine {counts['quarantine']:,}"
        )
    except AssertionError as exc:
        result.exact = f"NOT exact: {str(exc).splitlines()[0]}"


def check_invariants(data_dir: Path, topic_values: Counter[int]) -> dict[str, int]:
    """The tables of a run too big for the model's check (it holds every row as Python
    objects: 10 GiB at 3.4M records), checked in Arrow:

    - bronze holds every record on the topic once: each (partition, offset) once, and its
      payloads are the topic's values, as a multiset;
    - every bronze record is in exactly one of silver or quarantine, or else is a later record
      of an order id silver holds from an earlier (partition, offset): first-wins, never late;
      silver holds each order id once;
    - each gold table equals the aggregate of silver, exactly (counts, units, revenue, the
      half-up average), window for window.
    Which records are valid is the model's question and not re-asked here."""
    import decimal

    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    def table(name: str, columns: list[str]) -> pa.Table:
        return DeltaTable(str(data_dir / name)).to_pyarrow_table(columns=columns)

    bronze = table("bronze/orders", ["kafka_partition", "kafka_offset", "raw_value", "raw_bytes"])
    coords = [
        (p, o)
        for p, o in zip(
            bronze["kafka_partition"].to_pylist(), bronze["kafka_offset"].to_pylist(), strict=True
        )
    ]
    assert len(set(coords)) == len(coords), "bronze holds a Kafka record twice"
    payloads = Counter(
        hash(raw_b if raw_b is not None else raw_v.encode())
        for raw_v, raw_b in zip(
            bronze["raw_value"].to_pylist(), bronze["raw_bytes"].to_pylist(), strict=True
        )
    )
    assert payloads == topic_values, "bronze's payloads are not the topic's records"
    texts = dict(zip(coords, bronze["raw_value"].to_pylist(), strict=True))
    del bronze, payloads

    silver = table(
        "silver/orders",
        ["order_id", "kafka_partition", "kafka_offset", "order_timestamp", "category",
         "country", "city", "quantity", "total_amount"],
    )  # fmt: skip
    quarantine = table("silver/quarantine", ["kafka_partition", "kafka_offset"])
    s_coords = list(
        zip(silver["kafka_partition"].to_pylist(), silver["kafka_offset"].to_pylist(), strict=True)
    )
    q_coords = set(
        zip(
            quarantine["kafka_partition"].to_pylist(),
            quarantine["kafka_offset"].to_pylist(),
            strict=True,
        )
    )
    ids = silver["order_id"].to_pylist()
    assert len(set(ids)) == len(ids), "silver holds an order id twice"
    first = dict(zip(ids, s_coords, strict=True))
    assert not q_coords & set(s_coords), "a record is in silver and in quarantine"
    assert set(s_coords) | q_coords <= set(texts), (
        "silver or quarantine holds a record bronze lacks"
    )
    rest = set(texts) - set(s_coords) - q_coords
    for coord in rest:
        order_id = json.loads(texts[coord])["order_id"]
        assert order_id in first and first[order_id] < coord, (
            f"bronze record {coord} (order {order_id}) is in neither table and is not a later "
            "record of an order silver holds"
        )

    window = pc.floor_temporal(silver["order_timestamp"], unit="minute")
    silver = silver.append_column("window_start", window)
    cents = decimal.Decimal("0.01")

    def same(gold_name: str, keys: list[str], extra: list[str]) -> None:
        aggs = [("order_id", "count"), ("total_amount", "sum")]
        if "units_sold" in extra:
            aggs.append(("quantity", "sum"))
        want = {}
        for row in silver.group_by(keys).aggregate(aggs).to_pylist():
            value = [row["order_id_count"], row["total_amount_sum"]]
            if "units_sold" in extra:
                value.append(row["quantity_sum"])
                value.append(
                    (row["total_amount_sum"] / row["order_id_count"]).quantize(
                        cents, rounding=decimal.ROUND_HALF_UP
                    )
                )
            want[tuple(_naive(row[k]) for k in keys)] = value
        cols = ["order_count", "revenue", *extra]
        got = {
            tuple(_naive(row[k]) for k in keys): [row[c] for c in cols]
            for row in table(gold_name, [*keys, *cols]).to_pylist()
        }
        assert got == want, f"{gold_name} is not the aggregate of silver"

    same("gold/category_sales", ["window_start", "category"], ["units_sold", "avg_order_value"])
    same("gold/location_sales", ["window_start", "country", "city"], [])
    return {"bronze": len(coords), "silver": len(ids), "quarantine": len(q_coords)}


def _naive(value: Any) -> Any:
    return value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value


def _fmt(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f}s"


def _p(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def report(runs: list[ClientRun], args: argparse.Namespace) -> str:
    lines = [
        f"{args.cycles} cycles per client: run 2-10 s, then the broker killed -9 (two in three) "
        f"or stopped cleanly, down 1-8 s, restarted; producer at {args.rate:,.0f} orders/s "
        f"({FAULT_RATE:.0%} faults), continuous pipeline. Load average at the end: {loadavg()}.",
        "",
        "| client | cycles survived | kill -9 / clean | restart s p50 / max | restart -> next ack "
        "s p50 / max | restart -> next batch s p50 / max | sent | acknowledged | failed | "
        "on topic | sent, not on topic | duplicated | tables |",
        "| --- " + "| ---: " * 11 + "| --- |",
    ]
    for r in runs:
        kills = sum(c.kind == "kill -9" for c in r.cycles)
        ok = len(r.cycles) - (1 if r.stuck else 0)
        s = r.summary
        lines.append(
            f"| {r.client} | {ok} of {args.cycles} | {kills} / {len(r.cycles) - kills} | "
            f"{_p([c.restart_s for c in r.cycles])} | "
            f"{_p([c.ack_s for c in r.cycles if c.ack_s is not None])} | "
            f"{_p([c.batch_s for c in r.cycles if c.batch_s is not None])} | "
            f"{s.get('sent', 0):,} | {s.get('acknowledged', 0):,} | {s.get('failed', 0):,} | "
            f"{r.on_topic:,} | {r.lost} | {r.duplicated} | {r.exact} |"
        )
        if r.stuck:
            lines.append(f"\n{r.client}: STUCK at {r.stuck}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--clients", default="confluent,kafka-python")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--stuck-after", type=float, default=120.0)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-kills-", dir=args.work_dir))
    print(f"work dir: {work}", flush=True)
    runs = [run_client(c, args, work, rng) for c in args.clients.split(",")]
    text = report(runs, args)
    print(text)
    if args.write_doc:
        write_section("broker kills under load", text)
    ok = all(
        not r.stuck and r.lost == 0 and r.duplicated == 0
        and r.exact.startswith(("exact", "invariants"))
        and r.summary.get("failed", 1) == 0
        for r in runs
    )  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
