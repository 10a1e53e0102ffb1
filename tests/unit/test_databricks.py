"""The databricks profile without a cluster: its settings, options, table mapping, entry points
and bad input (one clear line, non-zero exit, the secret never echoed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ecomstream import adapters
from ecomstream.adapters import databricks
from ecomstream.adapters.base import TABLE_KEYS
from ecomstream.errors import EcomstreamError, redact

KEY = "Zm9vYmFyU2VjcmV0S2V5MTIzNDU2Nzg5MGFiY2RlZg=="
CONN = (
    "Endpoint=sb://ecomstream-ns.servicebus.windows.net/;"
    f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
)
SP_SECRET = "sp-s3cret-value-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ECOMSTREAM_") or name == "DATABRICKS_RUNTIME_VERSION":
            monkeypatch.delenv(name)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], str]:
    """Pretend to be a Databricks cluster whose secret scope ``ecomstream`` holds these."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    return {
        ("ecomstream", "eventhubs-connection-string"): CONN,
        ("ecomstream", "sp-client-id"): "00000000-1111-2222-3333-444444444444",
        ("ecomstream", "sp-client-secret"): SP_SECRET,
        ("ecomstream", "sp-tenant-id"): "tenant-guid",
    }


def _getter(store: dict[tuple[str, str], str]) -> Any:
    def get(scope: str, key: str) -> str:
        if (scope, key) not in store:
            raise RuntimeError(f"Secret does not exist with scope: {scope} and key: {key}")
        return store[(scope, key)]

    return get


def test_source_options_on_a_cluster_are_event_hubs_with_the_shaded_class(cluster: Any) -> None:
    env = adapters.get(
        "databricks", topic="orders", catalog="main", schema="shop", secrets=_getter(cluster)
    )
    options = env.kafka_source_options()
    assert options["kafka.bootstrap.servers"] == "ecomstream-ns.servicebus.windows.net:9093"
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "PLAIN"
    assert options["kafka.sasl.jaas.config"] == (
        "kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="$ConnectionString" password="{CONN}";'
    )
    assert options["subscribe"] == "orders"
    assert options["startingOffsets"] == "earliest"
    assert options["maxOffsetsPerTrigger"] == str(databricks.DEFAULT_MAX_OFFSETS_PER_TRIGGER)
    assert options["failOnDataLoss"] == "true"
    assert options["kafka.request.timeout.ms"] == "60000"
    assert options["kafka.session.timeout.ms"] == "60000"
    assert int(options["kafka.connections.max.idle.ms"]) < 240_000
    assert int(options["kafka.metadata.max.age.ms"]) < 240_000
    # Azure's certificate is publicly trusted: production names no truststore
    assert not any("truststore" in k for k in options)
    assert KEY not in repr(env) and KEY not in str(env.__dict__.get("settings"))
    assert redact(f"boom {CONN}") == "boom ***"


def test_unity_catalog_names_for_every_table_and_checkpoints_in_a_volume(cluster: Any) -> None:
    env = adapters.get(
        "databricks", topic="orders", catalog="main", schema="shop", secrets=_getter(cluster)
    )
    names = {key: env.table(key).name for key in TABLE_KEYS}
    assert names == {
        "bronze/orders": "main.shop.bronze_orders",
        "silver/orders": "main.shop.silver_orders",
        "silver/quarantine": "main.shop.silver_quarantine",
        "gold/category_sales": "main.shop.gold_category_sales",
        "gold/location_sales": "main.shop.gold_location_sales",
        "metrics/pipeline_batches": "main.shop.metrics_pipeline_batches",
    }
    assert all(env.table(key).path is None for key in TABLE_KEYS)
    assert env.checkpoint("medallion") == "/Volumes/main/shop/checkpoints/_checkpoints/medallion"
    with pytest.raises(KeyError):
        env.table("bronze/other")


class _FakeConf:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


class _FakeSpark:
    def __init__(self) -> None:
        self.conf = _FakeConf()


def test_abfss_paths_and_service_principal_oauth_from_the_secret_scope(cluster: Any) -> None:
    root = "abfss://lake@ecomstreamacct.dfs.core.windows.net/ecomstream"
    spark = _FakeSpark()
    env = databricks.create(topic="orders", storage_root=root, secrets=_getter(cluster))
    env._session = lambda: spark  # type: ignore[assignment,return-value]
    assert env.table("gold/location_sales").path == f"{root}/gold/location_sales"
    assert env.checkpoint("medallion") == f"{root}/_checkpoints/medallion"
    assert env.spark() is spark
    suffix = "ecomstreamacct.dfs.core.windows.net"
    conf = spark.conf.values
    assert conf[f"fs.azure.account.auth.type.{suffix}"] == "OAuth"
    assert conf[f"fs.azure.account.oauth2.client.secret.{suffix}"] == SP_SECRET
    assert conf[f"fs.azure.account.oauth2.client.endpoint.{suffix}"] == (
        "https://login.microsoftonline.com/tenant-guid/oauth2/token"
    )
    assert redact(f"x {SP_SECRET} y") == "x *** y"  # the SP secret is redacted from now on


def test_secret_scope_and_key_are_configurable(cluster: Any) -> None:
    store = {("kv-scope", "eh"): CONN}
    env = databricks.create(
        topic="orders",
        catalog="c",
        schema="s",
        secret_scope="kv-scope",
        secret_key="eh",
        secrets=_getter(store),
    )
    assert env.settings.secret_scope == "kv-scope"
    assert "password=" in env.kafka_source_options()["kafka.sasl.jaas.config"]


def test_the_environment_wins_over_the_secret_scope(cluster: Any, monkeypatch: Any) -> None:
    other = CONN.replace("ecomstream-ns", "other-ns")
    monkeypatch.setenv("ECOMSTREAM_EVENTHUB_CONNECTION_STRING", other)
    env = databricks.create(topic="orders", catalog="c", schema="s", secrets=_getter({}))
    assert env.bootstrap == "other-ns.servicebus.windows.net:9093"


def test_uc_settings_come_from_the_environment_for_the_pipeline_command(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOMSTREAM_CATALOG", "prod")
    monkeypatch.setenv("ECOMSTREAM_SCHEMA", "orders")
    monkeypatch.setenv("ECOMSTREAM_FAIL_ON_DATA_LOSS", "false")
    env = adapters.get("databricks", topic="orders", data_dir="ignored", secrets=_getter(cluster))
    assert env.table("silver/orders").name == "prod.orders.silver_orders"
    assert env.kafka_source_options()["failOnDataLoss"] == "false"


@pytest.mark.parametrize(
    ("settings", "store", "message"),
    [
        ({}, {}, "could not read secret 'eventhubs-connection-string' from Databricks secret"),
        ({"catalog": "main"}, None, "--schema None is not a Unity Catalog identifier"),
        ({"catalog": "ma-in", "schema": "s"}, None, "--catalog 'ma-in' is not a Unity Catalog"),
        ({"storage_root": "s3://bucket/x"}, None, "--storage-root 's3://bucket/x' must be abfss"),
        ({"storage_root": "abfss://UPPER@acct.blob.core.windows.net/x"}, None, "is not abfss://"),
        (
            {"catalog": "c", "schema": "s", "storage_root": "abfss://a@b.dfs.core.windows.net/"},
            None,
            "either --catalog/--schema",
        ),
        (
            {"catalog": "c", "schema": "s", "starting_offsets": "yesterday"},
            None,
            "--starting-offsets 'yesterday'",
        ),
        ({"catalog": "c", "schema": "s", "max_offsets_per_trigger": 0}, None, "must be positive"),
    ],
)
def test_bad_settings_are_one_clear_error(
    cluster: Any, settings: dict[str, Any], store: Any, message: str
) -> None:
    getter = _getter(cluster if store is None else store)
    with pytest.raises(EcomstreamError) as caught:
        databricks.create(topic="orders", secrets=getter, **settings)
    assert message in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_hub_scoped_string_names_the_topic_and_refuses_another(cluster: Any) -> None:
    scoped = {("ecomstream", "eventhubs-connection-string"): CONN + ";EntityPath=orders"}
    env = databricks.create(catalog="c", schema="s", secrets=_getter(scoped))
    assert env.topic == "orders"
    with pytest.raises(EcomstreamError, match="scoped to event hub 'orders', not --topic 'x'"):
        databricks.create(topic="x", catalog="c", schema="s", secrets=_getter(scoped))


def test_bind_refuses_another_topic_and_writes_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOMSTREAM_DATABRICKS_LOCAL_PROOF", "1")
    monkeypatch.setenv("ECOMSTREAM_EVENTHUB_CONNECTION_STRING", CONN)
    env = databricks.create(topic="orders", data_dir=str(tmp_path))
    env.bind("orders", "1 minute")
    env.bind("orders", "1 minute")
    with pytest.raises(EcomstreamError, match="holds topic 'orders', not 'other'"):
        env.bind("other", "1 minute")
    written = (tmp_path / "_ecomstream.json").read_text()
    assert '"topic": "orders"' in written and KEY not in written
    # local proof: unshaded class, same layout as the local profile under the data dir
    assert env.table("bronze/orders").path == str(tmp_path / "bronze" / "orders")
    assert env.kafka_source_options()["kafka.sasl.jaas.config"].startswith("org.apache.kafka")


# -- the command line: one clear line, non-zero exit, the secret never echoed ----------------


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ECOMSTREAM_")}
    base.pop("DATABRICKS_RUNTIME_VERSION", None)
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=120, env={**base, **(env or {})}
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


PIPELINE = (sys.executable, "-m", "ecomstream", "pipeline", "--profile", "databricks")
BRONZE = (str(Path(sys.executable).parent / "ecomstream-bronze"),)


@pytest.mark.parametrize("command", [PIPELINE, BRONZE], ids=["pipeline", "entry-point"])
def test_off_databricks_is_refused(command: tuple[str, ...]) -> None:
    line = _one_line(
        _run(*command, "--topic", "orders", env={"ECOMSTREAM_EVENTHUB_CONNECTION_STRING": CONN})
    )
    assert "runs on a Databricks cluster (DATABRICKS_RUNTIME_VERSION is not set)" in line
    assert KEY not in line


@pytest.mark.parametrize("command", [PIPELINE, BRONZE], ids=["pipeline", "entry-point"])
def test_without_a_connection_string(command: tuple[str, ...]) -> None:
    line = _one_line(
        _run(*command, "--topic", "orders", env={"ECOMSTREAM_DATABRICKS_LOCAL_PROOF": "1"})
    )
    assert "no Event Hubs connection string: set ECOMSTREAM_EVENTHUB_CONNECTION_STRING" in line


@pytest.mark.parametrize(
    "malformed",
    [
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey={KEY}",
        f"Endpoint=https://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey={KEY}",
        f"just-the-key-{KEY}",
    ],
    ids=["missing-key-name", "not-sb-endpoint", "no-pairs"],
)
@pytest.mark.parametrize("command", [PIPELINE, BRONZE], ids=["pipeline", "entry-point"])
def test_a_malformed_connection_string_is_never_echoed(
    command: tuple[str, ...], malformed: str
) -> None:
    done = _run(
        *command,
        "--topic",
        "orders",
        env={
            "ECOMSTREAM_DATABRICKS_LOCAL_PROOF": "1",
            "ECOMSTREAM_EVENTHUB_CONNECTION_STRING": malformed,
        },
    )
    line = _one_line(done)
    assert "connection string is malformed" in line
    assert KEY not in done.stderr + done.stdout


def test_an_unknown_profile_is_one_line() -> None:
    line = _one_line(_run(*BRONZE, "--profile", "azure", "--topic", "orders"))
    assert "unknown --profile 'azure'" in line
    line = _one_line(_run(*BRONZE, "--trigger", "sometimes"))
    assert "invalid choice: 'sometimes'" in line


# -- the entry points take the bundle's task parameters ---------------------------------------


def test_every_bundle_task_parameter_list_parses() -> None:
    from ecomstream import entrypoints
    from tests.unit.test_bundle import load_bundle, resolve

    bundle = resolve(load_bundle(), "prod")
    checked = 0
    for job in bundle["resources"]["jobs"].values():
        for task in job["tasks"]:
            wheel = task["python_wheel_task"]
            if wheel["entry_point"] == "ecomstream-produce":
                _check_producer_parameters(job, wheel["parameters"])
                continue
            if wheel["entry_point"] == "ecomstream-reprocess":
                _check_reprocess_parameters(job, wheel["parameters"])
                continue
            args = entrypoints.build_parser(wheel["entry_point"]).parse_args(wheel["parameters"])
            assert args.catalog == "ecomstream" and args.schema == "orders"
            assert args.secret_scope == "ecomstream"
            assert args.secret_key == "eventhubs-connection-string"
            assert args.topic == "orders" and args.window == "1 minute"
            assert args.trigger in entrypoints.TRIGGERS
            assert args.max_offsets_per_trigger == 500_000
            checked += 1
    assert checked == 2  # the scheduled and the continuous pipeline job


def _check_producer_parameters(job: dict[str, Any], parameters: list[str]) -> None:
    """Job parameters as Databricks fills them in, then ``ecomstream produce``'s own parser."""
    from ecomstream.cli import build_parser

    defaults = {p["name"]: p["default"] for p in job["parameters"]}
    filled = [
        p.replace("{{job.parameters.rate}}", defaults["rate"]).replace(
            "{{job.parameters.duration}}", defaults["duration"]
        )
        for p in parameters
    ]
    args = build_parser().parse_args(["produce", *filled])
    assert args.rate == 1000 and args.duration == 300 and args.topic == "orders"


def _check_reprocess_parameters(job: dict[str, Any], parameters: list[str]) -> None:
    """The reprocess job's parameters, filled in as Databricks does, parse; its storage and
    secret settings are the pipeline jobs'."""
    from ecomstream import entrypoints

    defaults = {p["name"]: p["default"] for p in job["parameters"]}
    filled = []
    for parameter in parameters:
        for name, value in defaults.items():
            parameter = parameter.replace(f"{{{{job.parameters.{name}}}}}", value)
        filled.append(parameter)
    args = entrypoints.reprocess_parser().parse_args(filled)
    assert args.catalog == "ecomstream" and args.schema == "orders"
    assert args.secret_scope == "ecomstream" and args.topic == "orders"
    assert args.window == "1 minute" and args.categories == "" and not args.dry_run


def test_the_entry_points_run_layers_of_the_same_pipeline() -> None:
    from ecomstream import entrypoints
    from ecomstream.jobs import pipeline

    assert entrypoints.run_layers.__doc__ and "jobs.pipeline.run" in entrypoints.run_layers.__doc__
    for name in ("make_jobs", "ensure_tables", "run_once", "run_continuous", "_stop_on_sigterm"):
        assert callable(getattr(pipeline, name)), name
    with pytest.raises(EcomstreamError, match="unknown layer 'platinum'"):
        entrypoints.run_layers(None, ("platinum",), {})


def test_abfss_without_a_service_principal_uses_the_cluster_and_half_of_one_is_an_error(
    cluster: Any,
) -> None:
    root = "abfss://lake@ecomstreamacct.dfs.core.windows.net/ecomstream"
    only_eh = {k: v for k, v in cluster.items() if k[1] == "eventhubs-connection-string"}
    spark = _FakeSpark()
    env = databricks.create(topic="orders", storage_root=root, secrets=_getter(only_eh))
    env._session = lambda: spark  # type: ignore[assignment,return-value]
    env.spark()
    assert spark.conf.values == {}

    half = {k: v for k, v in cluster.items() if k[1] != "sp-tenant-id"}
    env = databricks.create(topic="orders", storage_root=root, secrets=_getter(half))
    env._session = lambda: _FakeSpark()  # type: ignore[assignment,return-value]
    with pytest.raises(EcomstreamError, match="add sp-tenant-id") as caught:
        env.spark()
    assert SP_SECRET not in str(caught.value)


def test_the_producer_entry_point_takes_the_scope_options_off_before_produce() -> None:
    produce = str(Path(sys.executable).parent / "ecomstream-produce")
    line = _one_line(_run(produce, "--secret-scope=s", "--secret-key", "k", "--count", "1"))
    assert "no broker" in line  # produce's own message: the scope options did not reach it
    from ecomstream.entrypoints import _take

    args = ["--topic=t", "--secret-scope", "s", "--secret-key=k", "--rate=5"]
    assert (_take(args, "--secret-scope"), _take(args, "--secret-key")) == ("s", "k")
    assert args == ["--topic=t", "--rate=5"]
