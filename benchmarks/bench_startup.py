"""Start-up benchmark: one-record ``pipeline --once`` runs, with and without the class archive.

    .venv/bin/python -m benchmarks.bench_startup [--runs 3] [--write-doc]

One embedded broker, a one-record topic. Each round runs, in turn: the pipeline as a user runs it
(the class archive ``python -m ecomstream.warmup`` wrote, class_archive.py), the same command
with class sharing left to the JVM's default (``--spark-conf
spark.driver.extraJavaOptions=-Xshare:auto``, which keeps the archive out), and the bare Kafka ->
Delta passthrough on the same record as the floor. Each run is its own process on a new data dir,
timed from spawn to exit; medians over the rounds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section
from benchmarks._stack import (
    REPO,
    add_common_options,
    create_topic,
    loadavg,
    passthrough_cmd,
    pipeline_cmd,
    produce,
    producer_cmd,
)

NO_ARCHIVE = ["--spark-conf", "spark.driver.extraJavaOptions=-Xshare:auto"]


def _run(cmd: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{cmd} exited with {rc}; see {log}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians taken")
    add_common_options(parser)
    args = parser.parse_args(argv)

    from ecomstream import broker, class_archive
    from ecomstream.spark import resolved_jars

    archive = class_archive.path_for(resolved_jars())
    if archive is None or not archive.is_file():
        raise SystemExit(f"no class archive at {archive}: run python -m ecomstream.warmup first")
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-", dir=args.work_dir))
    bootstrap = args.bootstrap_servers
    times: dict[str, list[float]] = {"archive": [], "none": [], "passthrough": []}
    try:
        if not bootstrap:
            bootstrap = broker.start(work / "broker", broker.free_port()).bootstrap
        topic = f"bench-startup-{int(time.time())}"
        create_topic(bootstrap, topic)
        summary = work / "produce.json"
        produce(producer_cmd(bootstrap, topic, rate=0, seed=7, fault_rate=0, summary=summary,
                             count=1), summary)  # fmt: skip
        _run(passthrough_cmd(bootstrap, topic, work / "warm", once=True), work / "warm.log")
        for i in range(args.runs):
            for name, cmd in (
                ("archive", pipeline_cmd(bootstrap, topic, work / f"a{i}", once=True)),
                ("none", pipeline_cmd(bootstrap, topic, work / f"n{i}", once=True) + NO_ARCHIVE),
                ("passthrough", passthrough_cmd(bootstrap, topic, work / f"p{i}", once=True)),
            ):
                times[name].append(_run(cmd, work / "logs" / f"{name}-{i}.log"))
                print(f"round {i}: {name} {times[name][-1]:.1f} s", flush=True)
    finally:
        if not args.bootstrap_servers:
            broker.stop(work / "broker")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()

    med = {name: statistics.median(values) for name, values in times.items()}
    runs = {name: ", ".join(f"{v:.1f}" for v in values) for name, values in times.items()}
    saved = med["none"] - med["archive"]
    size_mib = archive.stat().st_size / 2**20
    print(
        f"one-record pipeline --once: {med['archive']:.1f} s with the class archive, "
        f"{med['none']:.1f} s without ({saved:.1f} s saved); passthrough {med['passthrough']:.1f} s"
    )
    if args.write_doc or args.doc_path:
        body = f"""
Command: `python -m benchmarks.bench_startup --runs {args.runs} --write-doc`. One embedded broker, a
one-record topic; each round runs the pipeline as users run it (with the driver's class archive,
{size_mib:.0f} MiB, written by `python -m ecomstream.warmup`), the same command without it
(`{" ".join(NO_ARCHIVE)}`), and the bare Kafka -> Delta passthrough on the same record (the
floor; its session maps the archive too). Each run is its own process on a new data dir, spawn
to exit. Machine load average at start {load_start}, at end {load_end}, on 2 cores.

| run | median s | runs (s) |
| --- | ---: | --- |
| `pipeline --once`, class archive (the default) | {med["archive"]:.1f} | {runs["archive"]} |
| `pipeline --once`, no archive | {med["none"]:.1f} | {runs["none"]} |
| passthrough (floor) | {med["passthrough"]:.1f} | {runs["passthrough"]} |

The archive saves **{saved:.1f} s** ({saved / med["none"]:.0%}) of every start of a pipeline
process: its JVM maps about 15,000 classes already parsed and verified instead of reading them
from Spark's, Delta's and Kafka's jars.
"""
        write_section("pipeline start-up", body, args.doc_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
