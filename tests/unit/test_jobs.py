"""The streaming jobs' pieces that need no Kafka: settings, adapters, idempotent writes,
metrics rows from query progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecomstream import adapters
from ecomstream.adapters.base import TABLE_KEYS, TableRef
from ecomstream.adapters.local import LocalEnvironment
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import writes
from ecomstream.jobs.bronze import progress_metrics
from ecomstream.jobs.metrics import METRICS_SCHEMA, BatchMetrics, utcnow
from ecomstream.jobs.settings import PipelineSettings, parse_interval, pause_hook


def _settings(**kw: object) -> PipelineSettings:
    base: dict[str, object] = {"topic": "t", "data_dir": Path("d"), "bootstrap_servers": "b:1"}
    return PipelineSettings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1 second", "1000 milliseconds"), ("500 ms", "500 milliseconds"), ("0", "0 seconds"),
     ("2.5s", "2500 milliseconds"), (" 10 seconds ", "10000 milliseconds")],
)  # fmt: skip
def test_trigger_interval_forms(text: str, expected: str):
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window": "5 parsecs"}, "invalid --window"),
        ({"window": "0 minutes"}, "invalid --window"),
        ({"trigger_interval": "soon"}, "invalid --trigger-interval"),
        ({"profile": "cloud"}, "unknown --profile"),
        ({"bootstrap_servers": " "}, "--bootstrap-servers is required"),
        ({"topic": ""}, "--topic is required"),
        ({"max_offsets_per_trigger": 0}, "--max-offsets-per-trigger"),
        ({"starting_offsets": "middle"}, "invalid --starting-offsets"),
        ({"wait_for_topic_s": -1.0}, "--wait-for-topic"),
        ({"max_bytes_per_trigger": "0"}, "invalid --max-bytes-per-trigger"),
        ({"max_bytes_per_trigger": "lots"}, "invalid --max-bytes-per-trigger"),
    ],
)
def test_settings_are_validated_at_the_edge(kw: dict[str, object], message: str):
    with pytest.raises(EcomstreamError, match=message.replace("-", r"\-")):
        _settings(**kw)


def test_settings_normalise_and_stay_frozen():
    s = _settings(window="2 Minutes", trigger_interval="250ms")
    assert (s.window, s.trigger_interval) == ("2 minutes", "250 milliseconds")
    with pytest.raises(AttributeError):
        s.topic = "other"  # type: ignore[misc]
    assert _settings(profile="databricks", bootstrap_servers="").profile == "databricks"
    assert _settings(max_bytes_per_trigger="64m").max_bytes_per_trigger == str(64 * 1024**2)
    assert _settings(max_bytes_per_trigger=" 1 GB").max_bytes_per_trigger == str(1024**3)


def test_pause_hook_reads_only_its_query(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ECOMSTREAM_TEST_PAUSE_IN_BATCH", "silver:2.5")
    assert (pause_hook("silver"), pause_hook("gold")) == (2.5, 0.0)
    monkeypatch.setenv("ECOMSTREAM_TEST_PAUSE_IN_BATCH", "silver:x")
    assert pause_hook("silver") == 0.0


def test_local_layout_keeps_checkpoints_beside_tables(tmp_path: Path):
    env = LocalEnvironment(bootstrap_servers="b:1", topic="t", data_dir=tmp_path)
    assert isinstance(env, adapters.Environment)
    tables = {key: Path(str(env.table(key))) for key in TABLE_KEYS}
    assert tables["silver/quarantine"] == tmp_path / "silver" / "quarantine"
    checkpoints = [Path(env.checkpoint(q)) for q in ("bronze", "silver", "gold")]
    assert len(set(checkpoints)) == 3
    for cp in checkpoints:
        assert cp.parent == tmp_path / "_checkpoints"
        assert not any(t == cp or t in cp.parents for t in tables.values())
    assert env.kafka_source_options() == {"kafka.bootstrap.servers": "b:1", "subscribe": "t"}
    with pytest.raises(KeyError):
        env.table("gold/nope")


def test_binding_refuses_another_topic_or_window(tmp_path: Path):
    env = LocalEnvironment(bootstrap_servers="b:1", topic="t", data_dir=tmp_path)
    env.bind("orders", "1 minute")
    assert json.loads((tmp_path / "_ecomstream.json").read_text())["topic"] == "orders"
    env.bind("orders", "1 minute")  # the same binding again is fine
    with pytest.raises(EcomstreamError, match="holds topic 'orders', not 'payments'"):
        env.bind("payments", "1 minute")
    with pytest.raises(EcomstreamError, match="gold windows of '1 minute'"):
        env.bind("orders", "5 minutes")


def test_tables_without_a_binding_are_not_adopted(tmp_path: Path):
    (tmp_path / "bronze" / "orders" / "_delta_log").mkdir(parents=True)
    env = LocalEnvironment(bootstrap_servers="b:1", topic="t", data_dir=tmp_path)
    with pytest.raises(EcomstreamError, match=r"no _ecomstream\.json"):
        env.bind("orders", "1 minute")


def test_unknown_profile_is_one_clear_error():
    with pytest.raises(EcomstreamError, match="unknown profile 'cloud'"):
        adapters.get("cloud")


def test_table_ref_is_exactly_one_of_path_or_name():
    with pytest.raises(ValueError):
        TableRef()
    with pytest.raises(ValueError):
        TableRef(path="/x", name="c.s.t")
    assert str(TableRef(name="c.s.t")) == "c.s.t"


def test_bronze_metrics_from_progress():
    progress = {
        "batchId": 4,
        "timestamp": "2026-11-25T10:00:00.000Z",
        "numInputRows": 30,
        "durationMs": {"triggerExecution": 1500},
        "sources": [
            {
                "endOffset": {"orders": {"0": 10, "1": 20}},
                "latestOffset": '{"orders":{"0":15,"1":25}}',
            }
        ],
        "sink": {"numOutputRows": -1},
    }
    row = progress_metrics(progress)
    assert row is not None
    assert (row.batch_id, row.input_rows, row.output_rows, row.duration_ms) == (4, 30, 30, 1500)
    assert (row.kafka_processed_offset_total, row.kafka_end_offset_total) == (30, 40)
    assert row.started_at.isoformat() == "2026-11-25T10:00:00"
    assert progress_metrics({**progress, "numInputRows": 0}) is None


def test_metrics_rows_fit_the_metrics_schema(spark):
    row = BatchMetrics("silver", 3, utcnow(), input_rows=5, quarantine_reasons={"null_price": 2})
    df = spark.createDataFrame([row.finish().row()], METRICS_SCHEMA)
    got = df.first()
    assert got.query == "silver" and got.quarantine_reasons == {"null_price": 2}
    assert json.loads(row.log_line())["event"] == "batch"


def test_appends_and_inserts_are_idempotent_per_batch(spark, tmp_path: Path):
    table = TableRef(path=str(tmp_path / "t"))
    df = spark.createDataFrame([("a", 1), ("b", 2)], "k string, v int")
    writes.append(df, table, "app", 0)
    writes.append(df, table, "app", 0)  # a replay of batch 0
    assert spark.read.format("delta").load(table.path).count() == 2

    more = spark.createDataFrame([("b", 20), ("c", 3), ("c", 30)], "k string, v int").limit(2)
    assert writes.insert_new(more, table, "k", "insert-app", 1) == 1
    assert writes.insert_new(more, table, "k", "insert-app", 1) is None  # replayed
    assert writes.insert_new(more, table, "k", "insert-app", 2) == 0  # nothing new
    rows = sorted(tuple(r) for r in spark.read.format("delta").load(table.path).collect())
    assert rows == [("a", 1), ("b", 2), ("c", 3)]
    assert spark.conf.get(writes.TXN_APP_ID, None) is None  # not left on the session


def test_merge_upsert_matches_null_keys(spark, tmp_path: Path):
    table = TableRef(path=str(tmp_path / "g"))
    first = spark.createDataFrame([("x", None, 1), ("y", "c", 1)], "a string, b string, n int")
    writes.append(first, table, "seed", 0)
    update = spark.createDataFrame([("x", None, 5)], "a string, b string, n int")
    assert writes.merge_upsert(update, table, ["a", "b"], "up", 1) == 1
    rows = sorted(tuple(r) for r in spark.read.format("delta").load(table.path).collect())
    assert rows == [("x", None, 5), ("y", "c", 1)]


def test_the_unsafe_switch_really_drops_idempotence(spark, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE", "1")
    table = TableRef(path=str(tmp_path / "u"))
    df = spark.createDataFrame([("a", 1)], "k string, v int")
    writes.append(df, table, "app", 0)
    writes.append(df, table, "app", 0)
    assert spark.read.format("delta").load(table.path).count() == 2


def test_silver_batch_runs_the_checks_once(spark, tmp_path: Path):
    """Both sides of ``validate`` read the batch's cached checks instead of recomputing them."""
    import datetime as dt

    from ecomstream.catalogue import DEFAULT_CATEGORIES
    from ecomstream.jobs.silver import checked_frame
    from ecomstream.schemas import KAFKA_SOURCE_SCHEMA
    from ecomstream.transforms.bronze import to_bronze
    from ecomstream.transforms.silver import validate

    kafka = spark.createDataFrame(
        [(b"a", b'{"order_id": "a"}', "t", 0, 1, dt.datetime(2026, 1, 1), 0)], KAFKA_SOURCE_SCHEMA
    )
    to_bronze(kafka).write.format("delta").save(str(tmp_path / "b"))
    batch = spark.read.format("delta").load(str(tmp_path / "b"))
    checked = checked_frame(batch, DEFAULT_CATEGORIES)
    assert checked is not None
    try:
        for side in validate(batch, DEFAULT_CATEGORIES):
            plan = side._jdf.queryExecution().withCachedData().toString()
            assert "InMemoryRelation" in plan
    finally:
        checked.unpersist()


def test_declared_table_schemas_are_what_the_transforms_produce(spark, tmp_path: Path):
    """ensure_tables creates tables from the declared schemas; the transforms must agree."""
    from ecomstream.jobs.pipeline import TABLE_PROPERTIES, declared_schemas, lenient
    from ecomstream.schemas import KAFKA_SOURCE_SCHEMA
    from ecomstream.transforms.bronze import to_bronze
    from ecomstream.transforms.gold import category_sales, location_sales
    from ecomstream.transforms.silver import validate

    settings = _settings()
    bronze = to_bronze(spark.createDataFrame([], KAFKA_SOURCE_SCHEMA))
    valid, quarantined = validate(bronze, settings.categories)
    derived = {
        "bronze/orders": bronze.schema,
        "silver/orders": valid.schema,
        "silver/quarantine": quarantined.schema,
        "gold/category_sales": category_sales(valid, settings.window).schema,
        "gold/location_sales": location_sales(valid, settings.window).schema,
        "metrics/pipeline_batches": METRICS_SCHEMA,
    }
    declared = declared_schemas()
    assert derived.keys() == declared.keys() == set(TABLE_KEYS)
    for key, schema in declared.items():
        assert lenient(derived[key]) == lenient(schema), key

    table = TableRef(path=str(tmp_path / "bronze"))
    properties = TABLE_PROPERTIES["bronze/orders"]
    table.create_if_missing(spark, lenient(declared["bronze/orders"]), properties)
    detail = table.delta_table(spark).detail().first()
    assert detail is not None
    assert {k: detail["properties"][k] for k in properties} == properties


def test_warm_up_runs_every_layer_on_one_good_and_one_bad_record(spark):
    from ecomstream.jobs.pipeline import warm_up

    assert warm_up(spark) == (1, 1)


def test_waiting_for_the_topic_also_waits_for_the_broker(tmp_path: Path):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    env = LocalEnvironment(
        bootstrap_servers=f"127.0.0.1:{port}",
        topic="t",
        data_dir=tmp_path,
        wait_for_topic_s=1.5,
    )
    started = time.monotonic()
    with pytest.raises(EcomstreamError, match="unreachable"):
        env.preflight()
    assert time.monotonic() - started >= 1.5
