"""``ecomstream pipeline`` options that change what reaches the tables, against a real broker.

Each test would fail without its option: ``--starting-offsets latest`` (records already on the
topic stay out of bronze), ``--categories`` (the catalogue decides silver or quarantine) and
``--wait-for-topic`` (a pipeline started before its topic exists processes it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import pytest

from ecomstream.adapters.local import CHECKPOINTS, LocalEnvironment
from ecomstream.jobs.medallion import NAME as MEDALLION
from tests.conftest import Broker
from tests.integration.test_pipeline_checks import (
    Running,
    assert_exact,
    order,
    record,
    tables,
    wait_for_layers,
)
from tests.kafka_helpers import send_all

CUSTOM = ("Books", "Gadgets")


def _wait_for_path(path: Path, run: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert run.proc.poll() is None, f"pipeline exited {run.proc.returncode}:\n{run.output()}"
        assert time.monotonic() < deadline, f"no {path} within {timeout}s:\n{run.output()[-3000:]}"
        time.sleep(0.5)


def test_latest_skips_what_was_on_the_topic_and_a_custom_catalogue_decides_silver(
    spark, kafka_broker: Broker, tmp_path: Path
):
    # Proves two protections in one continuous run (one JVM start):
    # --starting-offsets latest: with the default (earliest) old1/old2 would reach bronze, and
    #   assert_exact (bronze == exactly the records sent after the start) would fail.
    # --categories: with the default catalogue n1 (Gadgets) would be quarantined and n2
    #   (Fashion) would land in silver.
    topic = kafka_broker.new_topic("latest")
    data_dir = tmp_path / "data"
    old = [record(order("old1", 0.1)), record(order("old2", 0.2, category="Gadgets"))]
    send_all(kafka_broker.bootstrap, topic, old)
    run = Running(
        "pipeline", "--data-dir", str(data_dir), "--trigger-interval", "500 ms",
        "--starting-offsets", "latest", "--categories", ",".join(CUSTOM),
        "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
    )  # fmt: skip
    try:
        # Spark writes the offsets a new checkpoint starts from at its first trigger: once this
        # file exists, everything sent from here on is past "latest".
        initial = data_dir / CHECKPOINTS / MEDALLION / "sources" / "0" / "0"
        _wait_for_path(initial, run, timeout=600)
        new = [
            record(order("n1", 1.0, category="Gadgets")),  # custom only: silver
            record(order("n2", 1.1, category="Fashion")),  # default only: quarantined
            record(order("n3", 1.2)),  # Books, in both: silver
        ]
        send_all(kafka_broker.bootstrap, topic, new)
        wait_for_layers(data_dir, run, 2, timeout=600, quarantined=1)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, run.output()
    finally:
        if run.proc.poll() is None:
            run.kill9()

    counts = assert_exact(data_dir, new, categories=CUSTOM)
    assert counts == {"bronze": 3, "silver": 2, "quarantine": 1, "duplicates": 0}
    t = tables(spark, data_dir)
    assert {r.order_id for r in t["silver/orders"].collect()} == {"n1", "n3"}
    quarantined = t["silver/quarantine"].collect()
    assert [(r.order_id, list(r.reasons)) for r in quarantined] == [("n2", ["unknown_category"])]


def test_wait_for_topic_processes_a_topic_created_after_the_start(
    kafka_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Proves --wait-for-topic: without it the pipeline's first look finds no topic and exits
    # with "does not exist" (the run below would return non-zero). In process, through the CLI
    # parser, on the session's Spark: no JVM start of its own.
    from ecomstream.cli import main

    topic = kafka_broker.new_topic("late")
    data_dir = tmp_path / "data"
    looked_and_missing = threading.Event()
    real_list_topics = LocalEnvironment._list_topics

    def spy(self: LocalEnvironment) -> set[str]:
        names = real_list_topics(self)
        if self.topic not in names:
            looked_and_missing.set()
        return names

    monkeypatch.setattr(LocalEnvironment, "_list_topics", spy)
    records = [record(order(f"w{i}", i / 10)) for i in range(3)]
    failures: list[BaseException] = []

    def produce_once_the_pipeline_waits() -> None:
        try:
            assert looked_and_missing.wait(timeout=300), "the pipeline never looked for the topic"
            send_all(kafka_broker.bootstrap, topic, records)
        except BaseException as exc:
            failures.append(exc)

    producer = threading.Thread(target=produce_once_the_pipeline_waits, daemon=True)
    producer.start()
    pipeline_log = logging.getLogger("ecomstream.pipeline")
    handlers = list(pipeline_log.handlers)
    try:
        code = main(
            [
                "pipeline", "--once", "--wait-for-topic", "300", "--data-dir", str(data_dir),
                "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
            ]
        )  # fmt: skip
    finally:
        pipeline_log.handlers[:] = handlers  # the CLI adds a stderr handler per call
        producer.join(timeout=60)
    assert not failures, failures
    assert looked_and_missing.is_set()  # the topic really did not exist when the run began
    assert code == 0
    counts = assert_exact(data_dir, records)
    assert counts == {"bronze": 3, "silver": 3, "quarantine": 0, "duplicates": 0}
