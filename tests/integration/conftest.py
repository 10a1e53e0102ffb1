"""Fixtures shared by more than one integration module."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.hostile_run import HostileRun, send_and_run


@pytest.fixture(scope="session")
def hostile_run(
    spark: Any, kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> HostileRun:
    """The hostile-payload and schema-drift topic after one ``pipeline --once`` (one run for
    tests/integration/test_hostile_payloads.py and test_schema_drift.py)."""
    return send_and_run(kafka_broker, tmp_path_factory.mktemp("hostile"))
