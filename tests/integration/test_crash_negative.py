"""Negative control for test_crash.py: with the commit-marker check switched off for one table
(the hidden, test-only ``ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE=<table>``), a real process death right
after that table's write and the restart's replay write its rows twice, and the same oracle
catches it. A check that cannot fail would prove nothing; tests/unit/test_batch.py runs the
same control for every table in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.test_crash import _args, crash_at, orders_with_faults
from tests.integration.test_pipeline_checks import assert_exact, run_cli
from tests.kafka_helpers import send_all


def test_without_the_marker_check_a_replay_duplicates_and_is_caught(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.new_topic("unsafe")
    data_dir = tmp_path / "data"
    sent = orders_with_faults(3, 300, "u")
    send_all(kafka_broker.bootstrap, topic, sent)
    unsafe = {"ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE": "silver/quarantine"}

    crash_at(kafka_broker, topic, data_dir, "silver/quarantine", **unsafe)
    done = run_cli(*_args(kafka_broker, topic, data_dir, "--once"), timeout=900, **unsafe)
    assert done.returncode == 0, done.stderr[-2000:]

    caught = r"quarantine differs from the contract model: [1-9][0-9]* unexpected rows"
    with pytest.raises(AssertionError, match=caught):
        assert_exact(data_dir, sent)
