"""Issue 11 case 6: schema drift (extra fields, renamed fields, fields of another type) through
the real broker and an in-process ``--once`` (the same run as test_hostile_payloads.py).

Never a crash; an event with extra fields enters silver and its extra fields stay in bronze's
``raw_value``; a renamed field is a missing one; a field of another type is the contract's
``invalid_*`` (never a NULL, never malformed_json).

Protection this catches missing (seen to fail with it switched off): bronze reads every event
field as text (schemas.ORDER_EVENT_SCHEMA). Parsed as a number, a price sent as an object,
a boolean or an array would read as NULL (``null_price``, as if absent) and a quantity of
``2.5`` would be cut to 2 instead of ``invalid_quantity``.
"""

from __future__ import annotations

import json

from tests.integration.hostile_run import DRIFT, HostileRun
from tests.integration.test_hostile_payloads import placed
from tests.integration.test_pipeline_checks import tables


def test_drifted_events_land_where_the_contract_says(spark, hostile_run: HostileRun):
    where = placed(spark, hostile_run)
    wrong = {
        kind: (where.get(kind.encode()), expected)
        for kind, (_, expected) in DRIFT.items()
        if where.get(kind.encode()) != expected
    }
    assert wrong == {}, "events placed against the contract: {kind: (got, expected)}"


def test_extra_fields_stay_in_bronze_and_silver_keeps_its_columns(spark, hostile_run: HostileRun):
    t = tables(spark, hostile_run.data_dir)
    raw = {
        bytes(r.key): r.raw_value
        for r in t["bronze/orders"]
        .selectExpr("CAST(kafka_key AS BINARY) AS key", "raw_value")
        .collect()
    }
    sent = json.loads(DRIFT["drift_extra_fields"][0])  # type: ignore[arg-type]
    kept = json.loads(raw[b"drift_extra_fields"])
    assert (kept["coupon"], kept["loyalty"]) == ("WINTER", {"tier": "gold"}) and kept == sent
    assert json.loads(raw[b"drift_renamed_price"])["unit_price"] == "12.50"
    silver = t["silver/orders"]
    assert "coupon" not in silver.columns and "unit_price" not in silver.columns
    row = silver.where("order_id = 'drift-10'").collect()
    assert [(r.quantity, str(r.total_amount)) for r in row] == [(2, "25.00")]
