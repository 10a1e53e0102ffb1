"""Issue 11 case 5: hostile payloads through the real broker and an in-process ``--once``.

1 MiB values (an order, an order with a 1 MiB name, garbage, invalid UTF-8), a 1 MiB key,
nesting 50,000 deep, a price nested 5,000 deep, 400- and 1,200-digit numbers, 10,000 fields, a
40,000-character field name, invalid UTF-8 and NUL bytes, a tombstone and an empty value
(tests/integration/hostile_run.py lists each with where the contract puts it). The batch must
not fail, every record must be in bronze once, each in silver or in quarantine with exactly the
reasons the contract gives (and the whole of every table equal to the plain-Python contract
model), and every table must load in pyarrow through delta-rs.

Protections this catches missing (each seen to fail with it switched off):
- the broker's ``message.max.bytes`` / the producer's request limit (broker.MAX_MESSAGE_BYTES,
  producer/sender.MAX_REQUEST_BYTES): the 1 MiB records are refused and the fixture fails;
- from_json's ``maxNestingDepth`` / ``maxNumLen`` (transforms/bronze.py): the deep and
  1,200-digit objects read as ``malformed_json``;
- the JVM's Jackson write limit lifted (spark.lift_json_write_depth): the price nested 5,000
  deep reads as ``malformed_json`` instead of ``invalid_price``;
- ``make_valid_utf8`` in bronze (contract §2): delta-rs cannot load bronze.
"""

from __future__ import annotations

from typing import Any

from tests.integration.hostile_run import HOSTILE, HUGE_KEY, MIB, HostileRun
from tests.integration.test_pipeline_checks import assert_exact, tables

TABLES = ("bronze/orders", "silver/orders", "silver/quarantine", "gold/category_sales",
          "gold/location_sales", "metrics/pipeline_batches")  # fmt: skip


def placed(spark: Any, run: HostileRun) -> dict[bytes, Any]:
    """kind (the record's key) -> "silver", its quarantine reasons, or None if in neither."""
    t = tables(spark, run.data_dir)
    coords = {
        (r.kafka_partition, r.kafka_offset): bytes(r.key)
        for r in t["bronze/orders"]
        .selectExpr("CAST(kafka_key AS BINARY) AS key", "kafka_partition", "kafka_offset")
        .collect()
    }
    where: dict[bytes, Any] = {key: None for key in coords.values()}
    for r in t["silver/orders"].select("kafka_partition", "kafka_offset").collect():
        where[coords[(r.kafka_partition, r.kafka_offset)]] = "silver"
    for r in t["silver/quarantine"].select("kafka_partition", "kafka_offset", "reasons").collect():
        where[coords[(r.kafka_partition, r.kafka_offset)]] = list(r.reasons)
    return where


def test_each_hostile_payload_lands_where_the_contract_says(spark, hostile_run: HostileRun):
    where = placed(spark, hostile_run)
    wrong = {
        kind: (where.get(kind.encode()), expected)
        for kind, (_, expected) in HOSTILE.items()
        if where.get(kind.encode()) != expected
    }
    assert wrong == {}, "payloads placed against the contract: {kind: (got, expected)}"
    assert where[HUGE_KEY] == "silver"
    counts = assert_exact(hostile_run.data_dir, hostile_run.sent)  # the model, every row
    assert counts["bronze"] == len(hostile_run.sent)


def test_one_batch_took_them_all_and_big_values_arrive_whole(spark, hostile_run: HostileRun):
    t = tables(spark, hostile_run.data_dir)
    batches = t["metrics/pipeline_batches"].where("query = 'bronze'").collect()
    assert sum(r.input_rows for r in batches) == len(hostile_run.sent)
    bronze = (
        t["bronze/orders"]
        .selectExpr("CAST(kafka_key AS BINARY) AS key", "length(raw_value) AS chars", "raw_bytes")
        .collect()
    )
    by_key = {bytes(r.key): r for r in bronze}
    assert by_key[b"value_1mib_garbage"].chars == MIB
    assert by_key[b"value_1mib_invalid_utf8"].chars == MIB  # one U+FFFD per byte
    assert bytes(by_key[b"value_1mib_invalid_utf8"].raw_bytes) == b"\xff" * MIB
    assert by_key[b"tombstone"].chars is None and by_key[b"tombstone"].raw_bytes is None
    assert by_key[b"empty"].chars == 0
    silver = {r.order_id: r for r in t["silver/orders"].collect()}
    assert len(silver["big-2"].product_name) == MIB
    assert silver["nul-1"].product_name == "a\u0000b"


def test_every_table_loads_in_pyarrow_through_delta_rs(hostile_run: HostileRun):
    """Contract §2: any reader loads every row, invalid UTF-8 and NUL bytes included."""
    from deltalake import DeltaTable

    rows = {}
    for name in TABLES:
        table = DeltaTable(str(hostile_run.data_dir / name)).to_pyarrow_table()
        rows[name] = table.num_rows
        if name == "bronze/orders":
            keys = table.column("kafka_key").to_pylist()
            raw = dict(zip(keys, table.column("raw_bytes").to_pylist(), strict=True))
            assert raw["invalid_utf8_in_order"] == HOSTILE["invalid_utf8_in_order"][0]
            values = dict(zip(keys, table.column("raw_value").to_pylist(), strict=True))
            assert values["nul_raw_in_string"].encode() == HOSTILE["nul_raw_in_string"][0]
            assert values["invalid_utf8_in_order"] == HOSTILE["invalid_utf8_in_order"][0].decode(
                "utf-8", errors="replace"
            )
    assert rows["bronze/orders"] == len(hostile_run.sent)
    assert rows["silver/orders"] + rows["silver/quarantine"] == len(hostile_run.sent)
