"""Issue 11, case 5 ("memory stays bounded"): a batch too big for the driver's heap.

Spark's Kafka source bounds a batch by records only, and the driver holds the whole batch as
Arrow, so 40 payloads of 1 MiB of invalid UTF-8 (about 4 bytes of Arrow per payload byte) do
not fit a 512m driver. One topic, one chain:

1. a few small orders through an in-process run (the session's 2g heap): the tables and the
   checkpoint exist, batch 0 is committed;
2. the 40 big payloads, then ``pipeline --once`` as a real process with
   ``spark.driver.memory=512m``: its JVM runs out of heap in the batch and exits; the process
   must exit 1 with ONE line (which batch, by its Kafka offsets, and what to run), no
   traceback, and nothing of the batch committed (the checkpoint has no commit for it and
   every table is at the version it had);
3. more small orders, then an in-process run with ``--max-offsets-per-trigger 10``: the failed
   batch is replayed whole (Spark replays a planned batch with its planned offsets, which is
   why the line asks for more heap for it), the rest comes in small batches, and every table is
   exact against the contract model (each record once in bronze, nothing lost or doubled).

Protections this catches missing: the mapping of a lost JVM / OutOfMemoryError to the line
(``jobs/memory.py`` via ``pipeline.run``: without it the line is ``Py4JError: An error occurred
while calling oNN.isActive``), and the root logger's handler that keeps Py4J's own records off
the terminal (``errors.redact_library_logs``: without it py4j's ``logging.exception`` prints
``ERROR:root:Exception while sending command.`` and a traceback). ``-XX:+ExitOnOutOfMemoryError``
(spark.py) is not caught missing here: in this batch the error is thrown in a task, and
Spark's own handler exits the JVM (code 52) just the same.
"""

from __future__ import annotations

from pathlib import Path

from ecomstream.jobs import pipeline
from ecomstream.jobs.settings import PipelineSettings
from tests.conftest import Broker
from tests.integration.test_pipeline_checks import assert_exact, order, record, run_cli, tables
from tests.kafka_helpers import send_all, send_with_producer, wait_for_records

MIB = 1024 * 1024
BIG = 40
HANG_GUARD_S = 600


def _once(broker: Broker, topic: str, data_dir: Path, **kw: object) -> None:
    settings = PipelineSettings(
        topic=topic, data_dir=data_dir, bootstrap_servers=broker.bootstrap, once=True, **kw
    )  # type: ignore[arg-type]
    assert pipeline.run(settings) == 0


def _versions(spark: object, data_dir: Path) -> dict[str, int]:
    from delta import DeltaTable

    return {
        key: DeltaTable.forPath(spark, str(data_dir / key)).history(1).collect()[0].version
        for key in tables(spark, data_dir)
    }


def test_a_batch_too_big_for_the_heap_is_one_line_and_a_restart_continues_exactly(
    spark, kafka_broker: Broker, tmp_path: Path
) -> None:
    topic = kafka_broker.new_topic("memory")
    data_dir = tmp_path / "data"
    first = [record(order(f"m{i}", i * 0.1)) for i in range(5)]
    send_all(kafka_broker.bootstrap, topic, first)
    _once(kafka_broker, topic, data_dir)
    before = _versions(spark, data_dir)

    big = [(b"big-%d" % i, b"\xff" * MIB) for i in range(BIG)]
    send_with_producer(kafka_broker.bootstrap, topic, big)
    assert wait_for_records(kafka_broker.bootstrap, topic, len(first) + BIG, timeout_s=60)
    result = run_cli(
        "pipeline", "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
        "--data-dir", str(data_dir), "--once", "--spark-conf", "spark.driver.memory=512m",
        timeout=HANG_GUARD_S,
    )  # fmt: skip
    # stderr also carries the pipeline's JSON log lines ({"event": "start", ...})
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    # the batch is the 40 big records: partitions' offsets after the 5 first records
    assert lines[0].startswith(f"ecomstream: error: a batch of {BIG} records ({topic} partition")
    assert "did not fit the driver's memory (spark.driver.memory 512m)" in lines[0]
    assert "--spark-conf spark.driver.memory=1g" in lines[0]
    assert "--max-offsets-per-trigger (e.g. 10)" in lines[0]
    assert lines[0].endswith("nothing of the batch was lost")
    # nothing of it committed: no table moved, the checkpoint has no commit for batch 1
    assert _versions(spark, data_dir) == before
    commits = data_dir / "_checkpoints" / "medallion" / "commits"
    assert sorted(p.name for p in commits.iterdir() if p.name.isdigit()) == ["0"]

    last = [record(order(f"n{i}", 2 + i * 0.1)) for i in range(12)] + [record(order("m1", 0.1))]
    send_all(kafka_broker.bootstrap, topic, last)
    _once(kafka_broker, topic, data_dir, max_offsets_per_trigger=10)
    counts = assert_exact(data_dir, first + big + last)
    assert counts == {"bronze": 5 + BIG + 13, "silver": 17, "quarantine": BIG, "duplicates": 1}
