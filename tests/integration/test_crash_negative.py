"""Negative control for test_crash.py: with idempotence switched off (the hidden, test-only
``ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE=1`` drops the txnAppId/txnVersion of every foreachBatch
write), the same crash inside a silver batch duplicates quarantine rows, and the same check
catches it. A check that cannot fail would prove nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.test_crash import HOOK, _args, orders_with_faults
from tests.integration.test_pipeline_checks import Running, assert_exact, run_cli
from tests.kafka_helpers import send_all

UNSAFE = {"ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE": "1"}


def test_without_idempotence_a_crash_inside_a_batch_duplicates_and_is_caught(
    spark, kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("unsafe")
    data_dir = tmp_path / "data"
    sent = orders_with_faults(3, 300, "u")
    send_all(kafka_broker.bootstrap, topic, sent)

    run = Running(*_args(kafka_broker, topic, data_dir, "--once"), **{HOOK: "silver:600"}, **UNSAFE)
    try:
        run.wait_for("ECOMSTREAM_TEST_HOOK paused silver batch", timeout=600)
    finally:
        run.kill9()
    done = run_cli(*_args(kafka_broker, topic, data_dir, "--once"), timeout=900, **UNSAFE)
    assert done.returncode == 0, done.stderr[-2000:]

    with pytest.raises(AssertionError, match=r"quarantine differs: [1-9][0-9]* unexpected rows"):
        assert_exact(spark, data_dir, sent)
