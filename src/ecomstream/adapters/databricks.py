"""The databricks profile: Azure Event Hubs' Kafka endpoint in, ADLS Gen2 or Unity Catalog out.

Source
    Event Hubs speaks Kafka on ``<namespace>.servicebus.windows.net:9093``: SASL_SSL, PLAIN, user
    ``$ConnectionString``, password the connection string. The string comes from the environment
    (``ECOMSTREAM_EVENTHUB_CONNECTION_STRING``) or, on a cluster, from a Databricks secret scope
    (``--secret-scope`` / ``--secret-key``). On Databricks runtimes the Kafka client is shaded,
    so the JAAS login module is ``kafkashaded.org.apache.kafka...``.

Storage, one of
    * Unity Catalog (``--catalog`` and ``--schema``): tables ``<catalog>.<schema>.<layer>_<name>``
      (``bronze_orders``, ``silver_orders``, ``silver_quarantine``, ``gold_category_sales``,
      ``gold_location_sales``, ``metrics_pipeline_batches``), checkpoints in the UC volume
      ``/Volumes/<catalog>/<schema>/<volume>/_checkpoints/<query>``;
    * a path root (``--storage-root``): ``abfss://<container>@<account>.dfs.core.windows.net/<base>``
      on Azure (service-principal OAuth settings read from the secret scope), with the same
      layout as the local profile under it.

Off Databricks the profile refuses to run, except in the local-proof mode
(``ECOMSTREAM_DATABRICKS_LOCAL_PROOF=1``): the same source options against the embedded
broker's SASL_SSL listener, with the unshaded JAAS class, a local SparkSession and tables under
``--data-dir``. That is how the tests prove this code path on a laptop.

The connection string and the service principal's secret are secrets: never in a repr, a log
line, an exception message, a table, a checkpoint or a file written here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecomstream import eventhubs
from ecomstream.adapters.base import QUERIES, TABLE_KEYS, BaseEnvironment, TableRef
from ecomstream.errors import EcomstreamError, register_secret

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CONNECTION_STRING_ENV = "ECOMSTREAM_EVENTHUB_CONNECTION_STRING"
LOCAL_PROOF_ENV = "ECOMSTREAM_DATABRICKS_LOCAL_PROOF"
RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"

DEFAULT_SECRET_SCOPE = "ecomstream"
DEFAULT_SECRET_KEY = "eventhubs-connection-string"
DEFAULT_VOLUME = "checkpoints"
# Service principal for abfss:// paths: keys in the same secret scope.
SP_CLIENT_ID_KEY = "sp-client-id"
SP_CLIENT_SECRET_KEY = "sp-client-secret"
SP_TENANT_ID_KEY = "sp-tenant-id"

# Source defaults, chosen for Event Hubs (see docs/databricks.md, "Source settings"):
# - earliest: a new pipeline takes everything the hub still retains (1-7 days on Standard);
#   after that the checkpoint decides and this setting is ignored.
# - 100,000 records per micro-batch bound a catch-up batch to ~35 MB (orders are ~350 bytes),
#   which a 2-worker cluster merges in seconds; egress is capped at 4,096 events/s per TU anyway.
# - failOnDataLoss=true: if retention expired events the pipeline never saw, stop and say so
#   rather than skip them silently (bronze promises none dropped).
DEFAULT_STARTING_OFFSETS = "earliest"
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 100_000
DEFAULT_FAIL_ON_DATA_LOSS = True
PREFLIGHT_TIMEOUT_MS = 15_000

_IDENT = re.compile(r"^[A-Za-z0-9_]+$")
_ABFSS = re.compile(
    r"^abfss://(?P<container>[a-z0-9-]+)@(?P<account>[a-z0-9]+)\.dfs\.core\.windows\.net(/.*)?$"
)


def on_databricks() -> bool:
    return bool(os.environ.get(RUNTIME_ENV))


def local_proof() -> bool:
    return os.environ.get(LOCAL_PROOF_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DatabricksSettings:
    """Everything the databricks profile needs, validated once in :func:`create`."""

    topic: str
    catalog: str | None = None
    schema: str | None = None
    checkpoint_volume: str = DEFAULT_VOLUME
    storage_root: str | None = None
    secret_scope: str = DEFAULT_SECRET_SCOPE
    secret_key: str = DEFAULT_SECRET_KEY
    starting_offsets: str = DEFAULT_STARTING_OFFSETS
    max_offsets_per_trigger: int = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    fail_on_data_loss: bool = DEFAULT_FAIL_ON_DATA_LOSS
    spark_conf: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def unity_catalog(self) -> bool:
        return self.storage_root is None


SecretGetter = Callable[[str, str], str]


class DatabricksEnvironment(BaseEnvironment):
    """Event Hubs + ADLS / Unity Catalog. Built by :func:`create`."""

    name = "databricks"

    def __init__(
        self,
        settings: DatabricksSettings,
        connection: eventhubs.EventHubsConnection,
        *,
        shaded: bool,
        secrets: SecretGetter | None = None,
        session: Callable[[], SparkSession] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        self._connection = connection
        self._shaded = shaded
        self._secrets = secrets
        self._session = session
        self._spark: SparkSession | None = None
        self._consumer: Any = None

    def __repr__(self) -> str:
        return f"DatabricksEnvironment({self.settings!r}, bootstrap={self.bootstrap!r})"

    @property
    def bootstrap(self) -> str:
        return self._connection.bootstrap

    # -- the Environment protocol -------------------------------------------------------------
    def spark(self) -> SparkSession:
        if self._spark is None:
            if self._session is not None:
                self._spark = self._session()
            else:
                self._spark = _cluster_session()
            self._configure_storage(self._spark)
        return self._spark

    def kafka_source_options(self) -> dict[str, str]:
        s = self.settings
        return {
            # every client setting, inside Event Hubs' limits, comes from eventhubs.py
            **eventhubs.spark_kafka_options(self._connection, shaded=self._shaded),
            "subscribe": s.topic,
            "startingOffsets": s.starting_offsets,
            "maxOffsetsPerTrigger": str(s.max_offsets_per_trigger),
            "failOnDataLoss": "true" if s.fail_on_data_loss else "false",
        }

    def table(self, key: str) -> TableRef:
        if key not in TABLE_KEYS:
            raise KeyError(f"unknown table {key!r}")
        s = self.settings
        if s.unity_catalog:
            return TableRef(name=f"{s.catalog}.{s.schema}.{key.replace('/', '_')}")
        return TableRef(path=_join(str(s.storage_root), key))

    def checkpoint(self, query: str) -> str:
        if query not in QUERIES and not query.startswith("bench-"):
            raise KeyError(f"unknown query {query!r}")
        return _join(self._state_root(), "_checkpoints", query)

    # -- optional hooks -----------------------------------------------------------------------
    def preflight(self) -> None:
        """The endpoint answers, accepts the credentials and has the event hub; before Spark."""
        eventhubs.require_hub(
            eventhubs.kafka_python_config(self._connection),
            self.topic,
            namespace=self._connection.namespace,
            timeout_ms=PREFLIGHT_TIMEOUT_MS,
        )

    def bind(self, topic: str, window: str, categories: tuple[str, ...] | None = None) -> None:
        """``_ecomstream.json`` beside the checkpoints names the hub (and gold window) the tables
        hold (and the catalogue); a different one is refused (the ecomstream-reprocess job
        rebuilds the tables for another window or catalogue and records it). It names the
        namespace host, never the secret."""
        wanted: dict[str, Any] = {
            "topic": topic, "window": window, "endpoint": self._connection.host
        }  # fmt: skip
        if categories is not None:
            wanted["categories"] = list(categories)
        location = _join(self._state_root(), "_ecomstream.json")
        text = self._read_text(location)
        if text is None:
            self._write_text(location, json.dumps({**wanted, "created_at": time.time()}) + "\n")
            return
        try:
            bound = json.loads(text)
        except ValueError:
            raise EcomstreamError(f"{location} is unreadable; fix or remove it") from None
        for what, option in (("topic", "--topic"), ("window", "--window")):
            if bound.get(what) != wanted[what]:
                fix = "run the ecomstream-reprocess job first, or " if what == "window" else ""
                raise EcomstreamError(
                    f"{self._state_root()} holds {what} {bound.get(what)!r}, not "
                    f"{wanted[what]!r}: {fix}use another storage location for another {option}"
                )
        held = bound.get("categories")
        if categories is not None and held is not None and set(held) != set(categories):
            raise EcomstreamError(
                f"{self._state_root()} holds tables checked against the catalogue "
                f"{','.join(held)}, not {','.join(categories)}: run the ecomstream-reprocess "
                "job first, or use another storage location"
            )
        if categories is not None and held is None:
            self._write_text(location, json.dumps({**bound, "categories": list(categories)}) + "\n")

    def kafka_end_offsets(self) -> dict[int, int] | None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(
                    **eventhubs.kafka_python_config(self._connection),
                    enable_auto_commit=False,
                    bootstrap_timeout_ms=PREFLIGHT_TIMEOUT_MS,
                )
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            ends = self._consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        except Exception:  # lag is informative only: never fail a batch for it
            return None

    def kafka_source_state(self) -> Any:
        from ecomstream.jobs.checkpoint_state import source_state

        config = {
            **eventhubs.kafka_python_config(self._connection),
            "bootstrap_timeout_ms": PREFLIGHT_TIMEOUT_MS,
        }
        return source_state(config, self.topic)

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None

    # -- helpers ------------------------------------------------------------------------------
    def _state_root(self) -> str:
        s = self.settings
        if s.unity_catalog:
            return f"/Volumes/{s.catalog}/{s.schema}/{s.checkpoint_volume}"
        return str(s.storage_root)

    def _configure_storage(self, spark: SparkSession) -> None:
        """Service-principal OAuth for an ``abfss://`` root, from the secret scope."""
        root = self.settings.storage_root
        match = _ABFSS.match(root or "")
        if match is None or self._secrets is None:
            return  # Unity Catalog, a local path, or the cluster's own credentials
        scope = self.settings.secret_scope
        found: dict[str, str] = {}
        for key in (SP_CLIENT_ID_KEY, SP_CLIENT_SECRET_KEY, SP_TENANT_ID_KEY):
            with contextlib.suppress(EcomstreamError):
                found[key] = self._secret(scope, key)
        if not found:
            return  # no service principal in the scope: an external location / cluster creds
        missing = [
            k for k in (SP_CLIENT_ID_KEY, SP_CLIENT_SECRET_KEY, SP_TENANT_ID_KEY) if k not in found
        ]
        if missing:
            raise EcomstreamError(
                f"secret scope {scope!r} holds part of a service principal for "
                f"{match['account']}: add {', '.join(missing)} (or remove the others)"
            )
        client_id, client_secret = found[SP_CLIENT_ID_KEY], found[SP_CLIENT_SECRET_KEY]
        tenant = found[SP_TENANT_ID_KEY]
        suffix = f"{match['account']}.dfs.core.windows.net"
        for key, value in {
            "fs.azure.account.auth.type": "OAuth",
            "fs.azure.account.oauth.provider.type": (
                "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider"
            ),
            "fs.azure.account.oauth2.client.id": client_id,
            "fs.azure.account.oauth2.client.secret": client_secret,
            "fs.azure.account.oauth2.client.endpoint": (
                f"https://login.microsoftonline.com/{tenant}/oauth2/token"
            ),
        }.items():
            spark.conf.set(f"{key}.{suffix}", value)

    def _secret(self, scope: str, key: str) -> str:
        assert self._secrets is not None
        value = _get_secret(self._secrets, scope, key)
        register_secret(value)
        return value

    def _read_text(self, location: str) -> str | None:
        if _is_local(location):
            path = Path(location)
            return path.read_text() if path.exists() else None
        fs = _dbutils_fs(self.spark())
        try:
            return str(fs.head(location, 65536))
        except Exception:
            return None

    def _write_text(self, location: str, text: str) -> None:
        if _is_local(location):
            path = Path(location)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(path)
            except OSError as exc:
                hint = ""
                if location.startswith("/Volumes/"):
                    c, sch, vol = location.split("/")[2:5]
                    hint = f" (does the volume exist? CREATE VOLUME IF NOT EXISTS {c}.{sch}.{vol})"
                raise EcomstreamError(
                    f"{path.parent} is not writable: {exc.strerror or type(exc).__name__}{hint}"
                ) from None
            return
        _dbutils_fs(self.spark()).put(location, text, True)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _is_local(location: str) -> bool:
    # /Volumes/... is FUSE-mounted on Databricks clusters: plain file I/O works there too
    return "://" not in location


def _dbutils(spark: SparkSession | None) -> Any:
    try:
        from pyspark.dbutils import DBUtils

        return DBUtils(spark)
    except ImportError:
        pass
    try:
        import IPython

        return IPython.get_ipython().user_ns["dbutils"]
    except Exception:
        raise EcomstreamError(
            "dbutils is not available: the databricks profile reads its secret scope on a "
            "Databricks cluster"
        ) from None


def _dbutils_fs(spark: SparkSession) -> Any:
    return _dbutils(spark).fs


def _cluster_session() -> SparkSession:
    """The cluster's session. A wheel task's process may have none marked active yet; the
    builder then attaches to the driver's (it never starts a second Spark on a cluster)."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def _cluster_secrets() -> SecretGetter:
    def get(scope: str, key: str) -> str:
        return str(_dbutils(_cluster_session()).secrets.get(scope=scope, key=key))

    return get


def _get_secret(secrets: SecretGetter, scope: str, key: str) -> str:
    try:
        value = secrets(scope, key)
    except EcomstreamError:
        raise
    except Exception as exc:
        # the message of a failed lookup names scope and key, never a value
        raise EcomstreamError(
            f"could not read secret {key!r} from Databricks secret scope {scope!r} "
            f"({type(exc).__name__}): create it with 'databricks secrets put-secret {scope} {key}'"
        ) from None
    if not value:
        raise EcomstreamError(f"secret {key!r} in Databricks secret scope {scope!r} is empty")
    register_secret(value)
    return value


def _env(option: str) -> str | None:
    from ecomstream.cli import env_name

    return os.environ.get(env_name(option)) or None


def _identifier(value: str | None, option: str) -> str:
    if not value or not _IDENT.match(value):
        raise EcomstreamError(
            f"{option} {value!r} is not a Unity Catalog identifier (letters, digits, _)"
        )
    return value


def _starting_offsets(value: str) -> str:
    text = value.strip()
    if text in {"earliest", "latest"}:
        return text
    try:
        json.loads(text)
    except ValueError:
        raise EcomstreamError(
            f"--starting-offsets {value!r} must be earliest, latest or Spark's per-partition JSON"
        ) from None
    return text


def create(
    *,
    topic: str | None = None,
    catalog: str | None = None,
    schema: str | None = None,
    checkpoint_volume: str | None = None,
    storage_root: str | None = None,
    data_dir: str | Path | None = None,
    secret_scope: str | None = None,
    secret_key: str | None = None,
    starting_offsets: str | None = None,
    max_offsets_per_trigger: int | str | None = None,
    fail_on_data_loss: bool | str | None = None,
    spark_conf: dict[str, str] | None = None,
    secrets: SecretGetter | None = None,
    **_ignored: Any,
) -> DatabricksEnvironment:
    """The databricks environment, or one clear :class:`EcomstreamError`.

    ``bootstrap_servers`` and other local-profile settings are ignored: the connection string
    names the endpoint. ``secrets`` replaces the cluster's ``dbutils.secrets.get`` (tests).
    """
    # ``ecomstream pipeline --profile databricks`` passes only the generic settings: the
    # databricks ones then come from ECOMSTREAM_<OPTION>, as every option does
    catalog = catalog or _env("--catalog")
    schema = schema or _env("--schema")
    checkpoint_volume = checkpoint_volume or _env("--checkpoint-volume")
    storage_root = storage_root or _env("--storage-root")
    secret_scope = secret_scope or _env("--secret-scope")
    secret_key = secret_key or _env("--secret-key")
    if fail_on_data_loss is None:
        fail_on_data_loss = _env("--fail-on-data-loss")
    proof = local_proof()
    if not on_databricks() and not proof:
        raise EcomstreamError(
            f"the databricks profile runs on a Databricks cluster ({RUNTIME_ENV} is not set); "
            f"use --profile local here, or set {LOCAL_PROOF_ENV}=1 to rehearse it against the "
            "embedded broker's SASL_SSL listener"
        )
    scope = secret_scope or DEFAULT_SECRET_SCOPE
    key = secret_key or DEFAULT_SECRET_KEY
    if secrets is None and on_databricks():
        secrets = _cluster_secrets()

    raw = os.environ.get(CONNECTION_STRING_ENV, "").strip()
    register_secret(raw)
    if not raw:
        if secrets is None:
            raise EcomstreamError(
                f"no Event Hubs connection string: set {CONNECTION_STRING_ENV} "
                f"(or, on Databricks, put it in secret scope {scope!r} under key {key!r})"
            )
        raw = _get_secret(secrets, scope, key)
    connection = eventhubs.parse_connection_string(raw)

    topic = (topic or connection.entity_path or "").strip()
    if not topic:
        raise EcomstreamError(
            "--topic is required (the event hub name), or an EntityPath in the connection string"
        )
    if connection.entity_path and connection.entity_path != topic:
        raise EcomstreamError(
            f"the connection string is scoped to event hub {connection.entity_path!r}, "
            f"not --topic {topic!r}"
        )

    root = storage_root or None
    if root is None and catalog is None and proof:
        root = str(Path(data_dir or "ecomstream-data").expanduser().resolve())
    if root is not None and catalog is not None:
        raise EcomstreamError("give either --catalog/--schema (Unity Catalog) or --storage-root")
    if root is None:
        catalog = _identifier(catalog, "--catalog")
        schema = _identifier(schema, "--schema")
        volume = _identifier(checkpoint_volume or DEFAULT_VOLUME, "--checkpoint-volume")
    else:
        if "://" in root and not root.startswith(("abfss://", "dbfs:/", "file:/")):
            raise EcomstreamError(
                f"--storage-root {root!r} must be abfss://<container>@<account>"
                ".dfs.core.windows.net/<base> (or a local path in local-proof mode)"
            )
        if root.startswith("abfss://") and not _ABFSS.match(root):
            raise EcomstreamError(
                f"--storage-root {root!r} is not abfss://<container>@<account>"
                ".dfs.core.windows.net/<base>"
            )
        volume = DEFAULT_VOLUME

    try:
        max_offsets = int(
            DEFAULT_MAX_OFFSETS_PER_TRIGGER
            if max_offsets_per_trigger in (None, "")
            else max_offsets_per_trigger
        )
    except ValueError:
        raise EcomstreamError(
            f"--max-offsets-per-trigger {max_offsets_per_trigger!r} is not a whole number"
        ) from None
    if max_offsets <= 0:
        raise EcomstreamError("--max-offsets-per-trigger must be positive")
    if isinstance(fail_on_data_loss, str):
        fail_on_data_loss = fail_on_data_loss.strip().lower() in {"1", "true", "yes", "on"}

    settings = DatabricksSettings(
        topic=topic,
        catalog=catalog if root is None else None,
        schema=schema if root is None else None,
        checkpoint_volume=volume,
        storage_root=root,
        secret_scope=scope,
        secret_key=key,
        starting_offsets=_starting_offsets(starting_offsets or DEFAULT_STARTING_OFFSETS),
        max_offsets_per_trigger=max_offsets,
        fail_on_data_loss=(
            DEFAULT_FAIL_ON_DATA_LOSS if fail_on_data_loss is None else bool(fail_on_data_loss)
        ),
        spark_conf=dict(spark_conf or {}),
    )
    session: Callable[[], SparkSession] | None = None
    if proof and not on_databricks():
        session = _local_proof_session(settings)
    return DatabricksEnvironment(
        settings, connection, shaded=on_databricks(), secrets=secrets, session=session
    )


def _local_proof_session(settings: DatabricksSettings) -> Callable[[], SparkSession]:
    def make() -> SparkSession:
        from ecomstream.spark import local_session

        log = Path(str(settings.storage_root)) / "_logs" / "spark.log"
        # what the bundle's job clusters set for Event Hubs (resources/), unless overridden
        conf = {**eventhubs.spark_session_conf(), **settings.spark_conf}
        return local_session("ecomstream-databricks-proof", extra_conf=conf, log_file=log)

    return make
