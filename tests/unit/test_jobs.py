"""The streaming jobs' pieces that need no Kafka: settings, adapters, the ledger of idempotent
writes, Arrow rows for delta-rs, and the in-memory state the medallion batch keeps."""

from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

from ecomstream import adapters
from ecomstream.adapters.base import OLD_LAYOUT_QUERIES, QUERIES, TABLE_KEYS, TableRef
from ecomstream.adapters.local import LocalEnvironment
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import ledger as ledger_module
from ecomstream.jobs.arrow import arrow_schema, to_arrow
from ecomstream.jobs.ledger import (
    UNSAFE_NO_IDEMPOTENCE_ENV,
    Ledger,
    idempotence_enabled,
    marker,
    parse_marker,
)
from ecomstream.jobs.metrics import METRICS_SCHEMA, BatchMetrics, utcnow
from ecomstream.jobs.settings import PipelineSettings, parse_interval
from ecomstream.jobs.state import GoldHours, OrderIds, epoch_hour, half_up_cents
from ecomstream.schemas import CATEGORY_SALES_SCHEMA, GOLD_PARTITION, LOCATION_SALES_SCHEMA


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


def test_local_layout_keeps_checkpoints_beside_tables(tmp_path: Path):
    env = LocalEnvironment(bootstrap_servers="b:1", topic="t", data_dir=tmp_path)
    assert isinstance(env, adapters.Environment)
    tables = {key: Path(str(env.table(key))) for key in TABLE_KEYS}
    assert tables["silver/quarantine"] == tmp_path / "silver" / "quarantine"
    assert QUERIES == ("medallion",)
    checkpoint = Path(env.checkpoint("medallion"))
    assert checkpoint == tmp_path / "_checkpoints" / "medallion"
    assert not any(t == checkpoint or t in checkpoint.parents for t in tables.values())
    assert not any(checkpoint in t.parents for t in tables.values())
    # the three per-layer queries are gone: asking for their checkpoints is a mistake
    for old in OLD_LAYOUT_QUERIES:
        with pytest.raises(KeyError):
            env.checkpoint(old)
    assert env.kafka_source_options() == {"kafka.bootstrap.servers": "b:1", "subscribe": "t"}
    with pytest.raises(KeyError):
        env.table("gold/nope")


def test_a_data_dir_of_the_three_query_layout_is_refused(tmp_path: Path):
    """Its tables were written under other query ids and checkpoints: the medallion query would
    read the topic again from the start into them."""
    env = LocalEnvironment(bootstrap_servers="b:1", topic="t", data_dir=tmp_path)
    env.bind("orders", "1 minute")
    (tmp_path / "_checkpoints" / "silver").mkdir(parents=True)
    with pytest.raises(EcomstreamError, match="older three-query layout \\(silver checkpoints\\)"):
        env.bind("orders", "1 minute")
    # a data dir the medallion query already runs in is its own, whatever else lies there
    (tmp_path / "_checkpoints" / "medallion").mkdir()
    env.bind("orders", "1 minute")


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


def test_metrics_rows_fit_the_metrics_schema(spark):
    row = BatchMetrics("silver", 3, utcnow(), input_rows=5, quarantine_reasons={"null_price": 2})
    df = spark.createDataFrame([row.finish().row()], METRICS_SCHEMA)
    got = df.first()
    assert got.query == "silver" and got.quarantine_reasons == {"null_price": 2}
    assert json.loads(row.log_line())["event"] == "batch"


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


def test_a_local_table_created_by_delta_rs_is_the_table_spark_creates(spark, tmp_path: Path):
    """A local table's version 0 is written by delta-rs (0.24 s for six tables, against 8.6 s
    through Spark): what Spark then reads must be what Spark's own CREATE makes, for every
    table (schema, partitioning, properties, protocol). Two tables stand for the six: bronze
    (statistics columns among its properties) and a gold table (partitioned); the others differ
    from them only in their schema, which Delta keeps as Spark's own JSON."""
    from deltalake import DeltaTable

    from ecomstream.jobs.pipeline import (
        PARTITION_COLUMNS,
        TABLE_PROPERTIES,
        declared_schemas,
        lenient,
    )

    for key in ("bronze/orders", "gold/category_sales"):
        schema = declared_schemas()[key]
        fast, spark_made = (TableRef(path=str(tmp_path / side / key)) for side in ("rs", "spark"))
        args = (lenient(schema), TABLE_PROPERTIES.get(key), PARTITION_COLUMNS.get(key, ()))
        fast.create_if_missing(spark, *args)
        fast.create_if_missing(spark, *args)  # a second start: nothing to do
        spark_made.create_with_spark(spark, *args)
        got, want = (t.delta_table(spark).detail().first() for t in (fast, spark_made))
        assert got is not None and want is not None
        for column in ("format", "partitionColumns", "properties", "numFiles",
                       "minReaderVersion", "minWriterVersion", "tableFeatures"):  # fmt: skip
            assert got[column] == want[column], (key, column, got[column], want[column])
        assert fast.read(spark).schema == spark_made.read(spark).schema, key
        assert DeltaTable(str(tmp_path / "rs" / key)).version() == 0, key


def test_warm_up_runs_every_layer_on_one_good_and_one_bad_record(spark):
    from ecomstream.jobs.pipeline import warm_up

    assert warm_up(spark) == (1, 1)


def test_waiting_for_the_topic_also_waits_for_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Proves --wait-for-topic also retries an unreachable broker: without that, preflight gives
    # up after its first attempt. The adapter's clock is a fake one that moves only when it
    # sleeps, so "waited 1.5 s" is checked on the clock it uses, not on the wall clock (one real
    # attempt alone takes KAFKA_TIMEOUT_MS, which is why each attempt here is kept short).
    import socket
    import types

    from ecomstream.adapters import local

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    clock = types.SimpleNamespace(now=0.0)

    def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr(
        local, "time", types.SimpleNamespace(monotonic=lambda: clock.now, sleep=fake_sleep)
    )
    monkeypatch.setattr(local, "KAFKA_TIMEOUT_MS", 300)
    attempts: list[float] = []
    real_list_topics = LocalEnvironment._list_topics

    def counted(self: LocalEnvironment) -> set[str]:
        attempts.append(clock.now)
        return real_list_topics(self)

    monkeypatch.setattr(LocalEnvironment, "_list_topics", counted)
    env = LocalEnvironment(
        bootstrap_servers=f"127.0.0.1:{port}",
        topic="t",
        data_dir=tmp_path,
        wait_for_topic_s=1.5,
    )
    with pytest.raises(EcomstreamError, match="unreachable"):
        env.preflight()
    assert len(attempts) >= 2, attempts  # it tried again ...
    assert attempts[0] == 0.0 and attempts[-1] >= 1.5, attempts  # ... until the bound ran out


# --- the ledger: idempotent writes by the batch id in the commit ------------------------------

KV = T.StructType([T.StructField("k", T.StringType()), T.StructField("v", T.IntegerType())])


class _RemoteTable(TableRef):
    """A table delta-rs cannot reach (ADLS, Unity Catalog): the ledger falls back to Spark."""

    def local_path(self) -> str | None:
        return None


def _kv_table(spark, tmp_path: Path, name: str = "t") -> TableRef:  # type: ignore[no-untyped-def]
    table = TableRef(path=str(tmp_path / name))
    table.create_if_missing(spark, KV)
    return table


def _kv(spark, *rows: tuple[str, int]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(list(rows), KV)


def _content(spark, table: TableRef) -> list[tuple]:  # type: ignore[no-untyped-def]
    return sorted(tuple(r) for r in table.read(spark).collect())


def _markers(spark, table: TableRef) -> list[str | None]:  # type: ignore[no-untyped-def]
    """Each commit's userMetadata, oldest first."""
    history = table.delta_table(spark).history().orderBy("version")
    return [r["userMetadata"] for r in history.collect()]


def test_a_second_append_of_the_same_batch_is_skipped(spark, tmp_path: Path):
    table = _kv_table(spark, tmp_path)
    ledger = Ledger(spark, "w")
    assert ledger.last_batch("t", table) == -1
    first = _kv(spark, ("a", 1), ("b", 2))
    assert ledger.append(first, "t", table, 0) is True
    assert ledger.append(first, "t", table, 0) is False
    # a restart: a new ledger finds the batch in the table's log, not in memory
    restarted = Ledger(spark, "w")
    assert restarted.last_batch("t", table) == 0
    assert restarted.append(first, "t", table, 0) is False
    assert restarted.append(_kv(spark, ("c", 3)), "t", table, 1) is True
    assert restarted.append(first, "t", table, 0) is False  # older than the newest: held too
    assert _content(spark, table) == [("a", 1), ("b", 2), ("c", 3)]
    assert _markers(spark, table) == [None, marker("w", 0), marker("w", 1)]


def test_a_marker_of_another_writer_counts_as_nothing_written(spark, tmp_path: Path):
    """A new checkpoint is a new query id: its batch 0 is not the old query's batch 0."""
    table = _kv_table(spark, tmp_path)
    assert Ledger(spark, "old-query").append(_kv(spark, ("a", 1)), "t", table, 7) is True
    ledger = Ledger(spark, "new-query")
    assert ledger.last_batch("t", table) == -1
    assert ledger.append(_kv(spark, ("b", 2)), "t", table, 0) is True
    assert Ledger(spark, "old-query").last_batch("t", table) == 7
    assert _content(spark, table) == [("a", 1), ("b", 2)]


def test_newer_unmarked_commits_are_passed_over(spark, tmp_path: Path, monkeypatch):
    """Compaction or a manual append after the last batch must not hide that batch, however
    many of them there are (past HISTORY_DEPTH the whole history is read)."""
    table = _kv_table(spark, tmp_path)
    ledger = Ledger(spark, "w")
    for batch in range(2):
        ledger.append(_kv(spark, (f"k{batch}", batch)), "t", table, batch)
    table.delta_table(spark).optimize().executeCompaction()
    for n in (8, 9):
        _kv(spark, ("manual", n)).write.format("delta").mode("append").save(table.path)
    newest = table.delta_table(spark).history(3).orderBy("version").collect()
    assert [(r["operation"], r["userMetadata"]) for r in newest] == [
        ("OPTIMIZE", None),
        ("WRITE", None),
        ("WRITE", None),
    ]
    monkeypatch.setattr(ledger_module, "HISTORY_DEPTH", 2)
    restarted = Ledger(spark, "w")
    assert restarted.last_batch("t", table) == 1
    assert restarted.append(_kv(spark, ("k1", 1)), "t", table, 1) is False
    assert restarted.append(_kv(spark, ("k2", 2)), "t", table, 2) is True
    assert [k for k, _ in _content(spark, table)] == ["k0", "k1", "k2", "manual", "manual"]


@pytest.mark.parametrize(
    ("metadata", "batch"),
    [
        (marker("w", 3), 3),
        (marker("other", 3), None),
        (None, None),
        ("", None),
        ("a note by hand", None),
        ('["ecomstream"]', None),
        ('{"ecomstream": "w"}', None),
        ('{"ecomstream": {"writer": "w", "batch": "3"}}', None),
        ('{"ecomstream": {"writer": "w"}}', None),
        ('{"note": 1, "ecomstream": {"batch": 4, "writer": "w"}}', 4),
    ],
)
def test_only_a_marker_of_this_writer_names_a_batch(metadata: str | None, batch: int | None):
    assert parse_marker(metadata, "w") == batch


def test_the_unsafe_switch_reads_table_keys(monkeypatch):
    monkeypatch.delenv(UNSAFE_NO_IDEMPOTENCE_ENV, raising=False)
    assert idempotence_enabled("silver/orders")
    monkeypatch.setenv(UNSAFE_NO_IDEMPOTENCE_ENV, " silver/orders , gold/category_sales")
    assert not idempotence_enabled("silver/orders")
    assert not idempotence_enabled("gold/category_sales")
    assert idempotence_enabled("gold/location_sales")
    assert idempotence_enabled("silver")
    monkeypatch.setenv(UNSAFE_NO_IDEMPOTENCE_ENV, "1")
    assert not any(idempotence_enabled(key) for key in TABLE_KEYS)


def test_the_unsafe_switch_drops_the_check_for_the_named_table_only(
    spark, tmp_path: Path, monkeypatch
):
    unsafe, safe = _kv_table(spark, tmp_path, "unsafe"), _kv_table(spark, tmp_path, "safe")
    monkeypatch.setenv(UNSAFE_NO_IDEMPOTENCE_ENV, "silver/quarantine")
    ledger = Ledger(spark, "w")
    rows = _kv(spark, ("a", 1))
    for _ in range(2):
        assert ledger.append(rows, "silver/quarantine", unsafe, 0) is True
        ledger.append(rows, "bronze/orders", safe, 0)
    assert (_content(spark, unsafe), _content(spark, safe)) == ([("a", 1)] * 2, [("a", 1)])
    monkeypatch.setenv(UNSAFE_NO_IDEMPOTENCE_ENV, "1")
    assert ledger.append(rows, "bronze/orders", safe, 0) is True
    assert _content(spark, safe) == [("a", 1)] * 2


HOUR = epoch_hour(dt.datetime(2026, 11, 25, 10, 0))


def _category_row(start: dt.datetime, category: str, n: int, revenue: str) -> list[object]:
    money = Decimal(revenue)
    average = (money / n).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    end = start + dt.timedelta(minutes=1)
    return [start, end, category, n, 2 * n, money, average, epoch_hour(start)]


def _json_key(row: dict[str, object]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


@pytest.mark.parametrize("route", ["delta-rs", "spark"])
def test_driver_rows_are_written_alike_by_delta_rs_and_by_spark(spark, tmp_path: Path, route):
    """append_rows/replace_rows: delta-rs for a local table, Spark for any other; the same
    rows, the same partition replacement, the same markers either way."""
    from ecomstream.jobs.pipeline import lenient

    ref = TableRef if route == "delta-rs" else _RemoteTable
    gold, metrics = ref(path=str(tmp_path / "gold")), ref(path=str(tmp_path / "metrics"))
    gold.create_if_missing(spark, lenient(CATEGORY_SALES_SCHEMA), None, (GOLD_PARTITION,))
    metrics.create_if_missing(spark, lenient(METRICS_SCHEMA))
    assert (gold.local_path() is None) == (route == "spark")
    ledger = Ledger(spark, "w")
    ten, eleven = dt.datetime(2026, 11, 25, 10, 0), dt.datetime(2026, 11, 25, 11, 30)

    def replace(rows: list[list[object]], batch: int, hours: list[int]) -> bool:
        touched = f"{GOLD_PARTITION} IN ({', '.join(map(str, hours))})"
        arrow = to_arrow(rows, CATEGORY_SALES_SCHEMA)
        return ledger.replace_rows(arrow, CATEGORY_SALES_SCHEMA, "gold", gold, batch, touched)

    hour_ten = [_category_row(ten, "Books", 1, "12.50"), _category_row(ten, "Toys", 2, "0.03")]
    hour_eleven = [_category_row(eleven, "Books", 3, "100.00")]
    assert replace(hour_ten + hour_eleven, 0, [HOUR, HOUR + 1]) is True
    # batch 1 rewrites hour ten whole; hour eleven keeps its rows
    new_ten = [_category_row(ten, "Books", 2, "25.01")]
    assert replace(new_ten, 1, [HOUR]) is True
    assert replace([_category_row(ten, "Books", 99, "1.00")], 1, [HOUR]) is False

    started = dt.datetime(2026, 11, 25, 12, 0, 0, 250000)
    figures = BatchMetrics(
        "silver", 1, started, input_rows=4, quarantine_reasons={"null_price": 2, "x": 1}
    )
    rows = [figures.row(), BatchMetrics("bronze", 1, started).row()]
    arrow = to_arrow(rows, METRICS_SCHEMA)
    assert ledger.append_rows(arrow, METRICS_SCHEMA, "metrics", metrics, 1) is True
    assert ledger.append_rows(arrow, METRICS_SCHEMA, "metrics", metrics, 1) is False

    def as_python(table: TableRef, schema: T.StructType) -> list[dict[str, object]]:
        got = [r.asDict() for r in table.read(spark).select(*schema.fieldNames()).collect()]
        return sorted(got, key=_json_key)

    expected_gold = [
        dict(zip(CATEGORY_SALES_SCHEMA.fieldNames(), r, strict=True)) for r in new_ten + hour_eleven
    ]
    assert as_python(gold, CATEGORY_SALES_SCHEMA) == sorted(expected_gold, key=_json_key)
    got_metrics = sorted(as_python(metrics, METRICS_SCHEMA), key=lambda m: str(m["query"]))
    assert [(m["query"], m["batch_id"], m["started_at"]) for m in got_metrics] == [
        ("bronze", 1, started),
        ("silver", 1, started),
    ]
    assert [m["quarantine_reasons"] for m in got_metrics] == [None, {"null_price": 2, "x": 1}]
    assert got_metrics[1]["input_rows"] == 4
    restarted = Ledger(spark, "w")
    assert (restarted.last_batch("gold", gold), restarted.last_batch("metrics", metrics)) == (1, 1)
    assert _markers(spark, gold) == [None, marker("w", 0), marker("w", 1)]
    assert _markers(spark, metrics) == [None, marker("w", 1)]


# --- Arrow rows for delta-rs ------------------------------------------------------------------


def test_metrics_rows_become_arrow_in_the_metrics_schema():
    started = dt.datetime(2026, 11, 25, 10, 0, 0, 123456)
    silver = BatchMetrics(
        "silver", 7, started, input_rows=5, quarantine_reasons={"null_price": 2, "a": 1}
    )
    table = to_arrow([silver.row(), BatchMetrics("gold", 7, started).row()], METRICS_SCHEMA)
    assert table.schema == arrow_schema(METRICS_SCHEMA)
    assert table.schema.names == METRICS_SCHEMA.fieldNames()
    types = {f.name: f.type for f in table.schema}
    assert types["batch_id"] == pa.int64() and types["query"] == pa.string()
    assert types["started_at"] == pa.timestamp("us", tz="UTC")
    assert types["quarantine_reasons"] == pa.map_(pa.string(), pa.int64())
    rows = table.to_pylist()
    # naive datetimes are UTC, to the microsecond
    assert rows[0]["started_at"] == started.replace(tzinfo=dt.UTC)
    assert sorted(rows[0]["quarantine_reasons"]) == [("a", 1), ("null_price", 2)]
    assert (rows[0]["input_rows"], rows[1]["input_rows"], rows[1]["quarantine_reasons"]) == (
        5,
        None,
        None,
    )
    assert [r["query"] for r in rows] == ["silver", "gold"]


@pytest.mark.parametrize("schema", [CATEGORY_SALES_SCHEMA, LOCATION_SALES_SCHEMA])
def test_gold_rows_become_arrow_in_the_gold_schema(schema: T.StructType):
    start = dt.datetime(2026, 11, 25, 10, 59)
    keys = ["Books"] if "category" in schema.names else ["FR", None]
    measures: list[object] = [3, 7, Decimal("99999999999999.99")]
    if "avg_order_value" in schema.names:
        measures.append(Decimal("33333333333333.33"))
    row = [start, start + dt.timedelta(minutes=1), *keys, *measures, HOUR]
    table = to_arrow([row], schema)
    assert table.schema == arrow_schema(schema)
    money = pa.decimal128(18, 2)
    assert [table.schema.field(n).type for n in ("revenue", "window_hour")] == [money, pa.int64()]
    (got,) = table.to_pylist()
    assert list(got) == schema.fieldNames()
    assert got["window_start"] == start.replace(tzinfo=dt.UTC)
    assert got["revenue"] == Decimal("99999999999999.99")  # exact: no float on the way
    assert [got[name] for name in schema.fieldNames()[2:]] == [*keys, *measures, HOUR]
    assert to_arrow([], schema).num_rows == 0
    assert to_arrow([], schema).schema == arrow_schema(schema)


def test_arrow_rows_must_match_the_schema_column_for_column():
    with pytest.raises(ValueError):  # a row short of a column is refused, not shifted
        to_arrow([["silver", 1]], METRICS_SCHEMA)
    with pytest.raises(ValueError):
        to_arrow([[1, 2], [1]], KV)
    with pytest.raises(TypeError, match="binary"):
        to_arrow([[b"x"]], T.StructType([T.StructField("b", T.BinaryType())]))


# --- in-memory state: silver's order ids, gold's hours ----------------------------------------


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every TableRef.read of the test, by table path."""
    seen: list[str] = []
    original, original_arrow = TableRef.read, TableRef.read_arrow

    def counting(self: TableRef, spark):  # type: ignore[no-untyped-def]
        seen.append(str(self))
        return original(self, spark)

    def counting_arrow(self: TableRef, spark, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(str(self))
        return original_arrow(self, spark, *args, **kwargs)

    monkeypatch.setattr(TableRef, "read", counting)
    monkeypatch.setattr(TableRef, "read_arrow", counting_arrow)
    return seen


def test_order_ids_are_read_once_then_kept_in_memory(spark, tmp_path: Path, reads: list[str]):
    silver = TableRef(path=str(tmp_path / "silver"))
    spark.createDataFrame([("a", 1), ("b", 2)], "order_id string, n int").write.format(
        "delta"
    ).save(silver.path)
    ids = OrderIds(spark, silver)
    assert reads == []  # nothing read before it is needed
    assert sorted(ids.held({"a", "c", "z"})) == ["a"]
    ids.add({"c"})
    assert sorted(ids.held(["a", "b", "c", "d"])) == ["a", "b", "c"]
    assert ids.held([]) == []
    assert len(ids) == 3
    assert reads == [silver.path]


@pytest.fixture
def gold_table(spark, tmp_path: Path) -> TableRef:  # type: ignore[no-untyped-def]
    from ecomstream.jobs.pipeline import lenient

    table = TableRef(path=str(tmp_path / "gold"))
    table.create_if_missing(spark, lenient(CATEGORY_SALES_SCHEMA), None, (GOLD_PARTITION,))
    return table


def _category_state(spark, table: TableRef, window_s: float = 60, **kw) -> GoldHours:  # type: ignore[no-untyped-def]
    return GoldHours(spark, table, ("category",), window_s, with_average=True, **kw)


def test_gold_increments_add_up_exactly_in_integer_cents(spark, gold_table: TableRef):
    state = _category_state(spark, gold_table)
    ten = dt.datetime(2026, 11, 25, 10, 0)
    for _ in range(10):  # ten orders of 0.10: 1.00 exactly (as floats: 0.9999999999999999)
        state.commit(state.updated({ten: {("Books",): [1, 2, 10]}}))
    big = {ten: {("Books",): [1, 1, 99_999_999_999_999]}}
    assert state.updated(big) == state.updated(big)  # updated() alone changes nothing
    hours = state.updated(big)
    assert hours == {HOUR: {(ten, ("Books",)): [11, 21, 100_000_000_000_099]}}
    (row,) = state.rows(hours)
    assert row[3:7] == [11, 21, Decimal("1000000000000.99"), Decimal("90909090909.18")]


@pytest.mark.parametrize(
    ("cents", "count", "average"),
    [
        (25, 2, "0.13"),  # 12.5 cents: half up
        (1, 2, "0.01"),
        (5, 2, "0.03"),
        (1, 3, "0.00"),
        (2, 3, "0.01"),
        (0, 1, "0.00"),
        (2 * 10**17 + 1, 2, "1000000000000000.01"),  # past a double's precision
        (2 * 10**17 - 1, 2, "1000000000000000.00"),
    ],
)
def test_average_order_value_is_half_up_exact_at_the_half_cent(
    spark, gold_table: TableRef, cents: int, count: int, average: str
):
    state = _category_state(spark, gold_table)
    state._hours[HOUR] = {}  # a held hour: no read of the table
    ten = dt.datetime(2026, 11, 25, 10, 0)
    (row,) = state.rows(state.updated({ten: {("Books",): [count, count, cents]}}))
    assert row[6] == Decimal(average)
    assert half_up_cents(cents, count) == int(Decimal(average) * 100)


@settings(max_examples=500)  # pure Python: cheap under any profile
@given(cents=st.integers(0, 10**18 - 1), count=st.integers(1, 10**7))
def test_half_up_cents_is_decimal_half_up(cents: int, count: int):
    exact = (Decimal(cents) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert half_up_cents(cents, count) == int(exact)


@pytest.mark.parametrize(
    ("schema", "keys", "key_values"),
    [
        (CATEGORY_SALES_SCHEMA, ("category",), [("Books",), ("Toys",)]),
        (LOCATION_SALES_SCHEMA, ("country", "city"), [("FR", "Lyon"), (None, None)]),
    ],
)
def test_gold_state_rows_follow_the_schema_column_order(
    spark, gold_table: TableRef, schema: T.StructType, keys: tuple[str, ...], key_values
):
    state = GoldHours(spark, gold_table, keys, 30, with_average="avg_order_value" in schema.names)
    state._hours.update({HOUR: {}, HOUR + 1: {}})  # held (empty) hours: no read of the table
    early, late = dt.datetime(2026, 11, 25, 10, 59, 30), dt.datetime(2026, 11, 25, 11, 0)
    increments = {
        late: {key_values[0]: [1, 4, 1001]},
        early: {key_values[1]: [2, 3, 250], key_values[0]: [1, 1, 5]},
    }
    rows = state.rows(state.updated(increments))
    got = [dict(zip(schema.fieldNames(), row, strict=True)) for row in rows]
    expected = []
    for start, key, (n, units, cents) in [
        (early, key_values[0], (1, 1, 5)),
        (early, key_values[1], (2, 3, 250)),
        (late, key_values[0], (1, 4, 1001)),
    ]:
        row = {
            "window_start": start,
            "window_end": start + dt.timedelta(seconds=30),
            **dict(zip(keys, key, strict=True)),
            "order_count": n,
            "units_sold": units,
            "revenue": Decimal(cents) / 100,
            "window_hour": epoch_hour(start),
        }
        if "avg_order_value" in schema.names:
            row["avg_order_value"] = Decimal(half_up_cents(cents, n)) / 100
        expected.append(row)
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert [r["window_hour"] for r in got] == [HOUR, HOUR, HOUR + 1]
    assert to_arrow(rows, schema).num_rows == 3  # every value fits its column's type


def test_gold_hours_are_loaded_from_the_table_on_a_miss(
    spark, gold_table: TableRef, reads: list[str]
):
    """The state starts empty (a restart); an hour a batch touches comes from the table with
    every window in it, so rewriting the hour keeps the windows this batch did not touch."""
    ten, ten_59, eleven = (dt.datetime(2026, 11, 25, h, m) for h, m in ((10, 0), (10, 59), (11, 0)))
    written = [
        _category_row(ten, "Books", 2, "5.00"),
        _category_row(ten_59, "Toys", 1, "0.99"),
        _category_row(eleven, "Books", 1, "1.00"),
    ]
    spark.createDataFrame(written, CATEGORY_SALES_SCHEMA).write.format("delta").mode("append").save(
        gold_table.path
    )
    state = _category_state(spark, gold_table, max_hours=1)
    hours = state.updated({ten: {("Books",): [1, 1, 100], ("Toys",): [1, 1, 1]}})
    assert hours == {
        HOUR: {
            (ten, ("Books",)): [3, 5, 600],
            (ten, ("Toys",)): [1, 1, 1],
            (ten_59, ("Toys",)): [1, 2, 99],
        }
    }
    assert len(reads) == 1
    state.commit(hours)
    state.updated({ten_59: {("Toys",): [1, 1, 1]}})
    assert len(reads) == 1  # held now
    state.commit(state.updated({eleven: {("Books",): [1, 1, 1]}}))
    assert len(reads) == 2
    # past max_hours the least recently touched hour is let go, and read again when touched
    state.updated({ten: {("Books",): [1, 1, 1]}})
    assert len(reads) == 3


class _FailedQuery:
    isActive = False

    def __init__(self, text: str) -> None:
        self._text = text

    def exception(self) -> Exception:
        return RuntimeError(self._text)


def test_records_lost_mid_run_are_one_line_naming_the_topic_and_the_way_on(tmp_path: Path):
    """Spark's KAFKA_DATA_LOSS while a query runs (retention overtook it) is the line that names
    the topic and --fail-on-data-loss, not 'the medallion query failed: ...Python Proxy...'."""
    from types import SimpleNamespace

    from ecomstream.errors import EcomstreamError
    from ecomstream.jobs import pipeline

    settings = PipelineSettings(topic="orders", data_dir=tmp_path, bootstrap_servers="b:1")
    env = SimpleNamespace(checkpoint=lambda name: str(tmp_path / "_checkpoints" / name))
    spark_text = (
        "[STREAM_FAILED] Query [id = 1] terminated with exception: [KAFKA_DATA_LOSS."
        "START_OFFSET_RESET] Some data may have been lost because they are not available in "
        "Kafka any more; either the data was aged out by Kafka or the topic may have been "
        "deleted before all the data in the topic was processed."
    )
    for text, expected in (
        (spark_text, "topic 'orders' lost records"),
        ("[STREAM_FAILED] something else broke", "the medallion query failed: [STREAM_FAILED]"),
    ):
        job = SimpleNamespace(
            name="medallion", query=_FailedQuery(text), env=env, settings=settings
        )
        with pytest.raises(EcomstreamError) as caught:
            pipeline._check(job)  # type: ignore[arg-type]
        assert str(caught.value).startswith(expected)
        assert ("--fail-on-data-loss false" in str(caught.value)) == (text is spark_text)
