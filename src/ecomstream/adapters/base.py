"""What the streaming jobs need from an environment, and nothing about which one it is.

An environment (a profile) knows where the events come from (Spark Kafka source options), where
each table lives (a Delta path or a Unity Catalog name) and where each query keeps its checkpoint.
The jobs above this module never test which profile runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa
    from delta.tables import DeltaTable
    from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery
    from pyspark.sql.types import StructType

# The tables every environment maps: the contract's five plus the per-batch metrics table.
TABLE_KEYS: tuple[str, ...] = (
    "bronze/orders",
    "silver/orders",
    "silver/quarantine",
    "gold/category_sales",
    "gold/location_sales",
    "metrics/pipeline_batches",
)

QUERIES: tuple[str, ...] = ("medallion",)
# Checkpoints of the three queries of ecomstream <= 0.1 (one per layer): a data dir that has
# them holds tables written by that layout, which the medallion query must not adopt.
OLD_LAYOUT_QUERIES: tuple[str, ...] = ("bronze", "silver", "gold")


@dataclass(frozen=True)
class TableRef:
    """A Delta table: by ``path`` (local, abfss://...) or by Unity Catalog ``name``; exactly one."""

    path: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.name is None):
            raise ValueError("a TableRef has exactly one of path or name")

    def __str__(self) -> str:
        return self.path if self.path is not None else str(self.name)

    def local_path(self) -> str | None:
        """The table's directory when it is on this machine's filesystem (delta-rs can write it
        directly), else None."""
        if self.path is None or ("://" in self.path and not self.path.startswith("file:")):
            return None
        return self.path.removeprefix("file://").removeprefix("file:")

    # The few I/O helpers every job uses, so no job branches on path-vs-name.
    def read(self, spark: SparkSession) -> DataFrame:
        reader = spark.read.format("delta")
        return reader.load(self.path) if self.path is not None else reader.table(str(self.name))

    def read_arrow(
        self,
        spark: SparkSession,
        columns: list[str],
        where_in: tuple[str, list[int]] | None = None,
    ) -> pa.Table:
        """``columns`` of the rows (whose partition column ``where_in[0]`` is one of
        ``where_in[1]``) as Arrow: read by delta-rs when the table is local (no Spark job: this
        is on a restart's critical path), else by Spark."""
        local = self.local_path()
        if local is not None:
            from deltalake import DeltaTable

            partitions = None
            if where_in is not None:
                partitions = [(where_in[0], "in", [str(v) for v in where_in[1]])]
            return DeltaTable(local).to_pyarrow_table(partitions=partitions, columns=columns)
        df = self.read(spark)
        if where_in is not None:
            from pyspark.sql import functions as F

            df = df.where(F.col(where_in[0]).isin(where_in[1]))
        return df.select(*columns).toArrow()

    def read_stream(self, spark: SparkSession, **options: str) -> DataFrame:
        reader = spark.readStream.format("delta").options(**options)
        return reader.load(self.path) if self.path is not None else reader.table(str(self.name))

    def save(self, writer: DataFrameWriter) -> None:
        if self.path is not None:
            writer.save(self.path)
        else:
            writer.saveAsTable(str(self.name))

    def write_stream(self, writer: DataStreamWriter) -> StreamingQuery:
        if self.path is not None:
            return writer.start(self.path)
        return writer.toTable(str(self.name))

    def create_if_missing(
        self,
        spark: SparkSession,
        schema: StructType,
        properties: Mapping[str, str] | None = None,
        partition_columns: tuple[str, ...] = (),
    ) -> None:
        local = self.local_path()
        if local is not None:
            # exists: CREATE IF NOT EXISTS would be a no-op that still loads the table's
            # snapshot through Spark (a second or more per table at every start)
            if not _has_log(local):
                _create_with_delta_rs(local, schema, properties or {}, partition_columns)
            return
        self.create_with_spark(spark, schema, properties, partition_columns)

    def create_with_spark(
        self,
        spark: SparkSession,
        schema: StructType,
        properties: Mapping[str, str] | None = None,
        partition_columns: tuple[str, ...] = (),
    ) -> None:
        """Spark's CREATE TABLE IF NOT EXISTS: how a table by name, or on remote storage, is
        created (a local one: ``create_if_missing`` has delta-rs write the same table)."""
        from delta.tables import DeltaTable

        builder = DeltaTable.createIfNotExists(spark).addColumns(schema)
        for key, value in (properties or {}).items():
            builder = builder.property(key, value)
        if partition_columns:
            builder = builder.partitionedBy(*partition_columns)
        if self.path is not None:
            builder = builder.location(self.path)
        else:
            builder = builder.tableName(str(self.name))
        builder.execute()

    def delta_table(self, spark: SparkSession) -> DeltaTable:
        from delta.tables import DeltaTable

        if self.path is not None:
            return DeltaTable.forPath(spark, self.path)
        return DeltaTable.forName(spark, str(self.name))

    def exists(self, spark: SparkSession) -> bool:
        from delta.tables import DeltaTable

        if self.path is not None:
            return bool(DeltaTable.isDeltaTable(spark, self.path))
        return bool(spark.catalog.tableExists(str(self.name)))


def _has_log(path: str) -> bool:
    return any(Path(path, "_delta_log").glob("*.json"))


def _create_with_delta_rs(
    path: str, schema: StructType, properties: Mapping[str, str], partition_columns: tuple[str, ...]
) -> None:
    """Version 0 of a table on this machine's filesystem, written by delta-rs: 0.24 s for the
    six tables of a first start, against 8.6 s through Spark (each CREATE is a Spark transaction
    that loads its snapshot). The same table as Spark's CREATE writes: Delta stores the schema as
    Spark's own StructType JSON, protocol (1, 2), the same partition columns, and the properties
    given plus those Spark adds from the session's table defaults (spark.LOCAL_CONF)."""
    from deltalake import DeltaTable, Schema

    from ecomstream.spark import table_property_defaults

    try:
        DeltaTable.create(
            path,
            Schema.from_json(schema.json()),
            mode="ignore",
            partition_by=list(partition_columns) or None,
            configuration={**table_property_defaults(), **properties},
            raise_if_key_not_exists=False,
        )
    except Exception:
        if not _has_log(path):  # else another process created it meanwhile: the same table
            raise


@runtime_checkable
class Environment(Protocol):
    """The interface the jobs are written against (local and databricks implement it)."""

    name: str

    def spark(self) -> SparkSession: ...

    def kafka_source_options(self) -> dict[str, str]:
        """Everything for ``spark.readStream.format("kafka").options(...)``: bootstrap servers,
        ``subscribe``, security settings (and, if the environment wants, startingOffsets etc.)."""
        ...

    def table(self, key: str) -> TableRef: ...

    def checkpoint(self, query: str) -> str: ...


class BaseEnvironment:
    """Optional hooks with safe defaults; an adapter subclasses this and overrides what it can.

    The jobs call these through :func:`hook` so an adapter that only implements the protocol
    above still works.
    """

    def preflight(self) -> None:
        """Check the outside world (broker reachable, topic exists, storage writable) *before*
        Spark starts or any table is touched; raise ``EcomstreamError`` with one clear line."""

    def bind(self, topic: str, window: str, categories: tuple[str, ...] | None = None) -> None:
        """Record which topic (and gold window, and catalogue) this storage holds; refuse a
        different one (``ecomstream reprocess`` rebuilds the tables for another window or
        catalogue and records it)."""

    def lock(self, holder: str) -> None:
        """Hold this storage for ``holder`` (``pipeline``, ``reprocess``) until :meth:`close`
        or the process ends; raise ``EcomstreamError`` with one line when another run holds it.
        A no-op
        where the environment cannot tell (a Databricks job: ``max_concurrent_runs: 1``)."""

    def kafka_end_offsets(self) -> dict[int, int] | None:
        """The topic's end offset per partition right now, or None where not cheaply known
        (used only for the lag column of the metrics table)."""
        return None

    def kafka_reachable(self) -> bool | None:
        """Whether the broker answers right now, or None where the adapter cannot tell cheaply
        (then a continuous run has no outage limit of its own; see jobs/outage.py)."""
        return None

    def kafka_source_state(self) -> Any:
        """The topic's id and first and end offsets per partition
        (:class:`ecomstream.jobs.checkpoints.SourceState`), or None where the endpoint cannot
        say: the start-up checks of the checkpoint against the topic are then skipped."""
        return None

    def close(self) -> None:
        """Release clients the adapter opened (not the SparkSession)."""


def hook(env: Environment, name: str) -> Callable[..., Any]:
    """``env.<name>`` if the adapter has it, else :class:`BaseEnvironment`'s default."""
    method = getattr(env, name, None)
    if method is None:
        return getattr(BaseEnvironment(), name)
    return method
