"""Idempotent Delta writes for a table's only writer: the batch id travels in the commit itself.

Each write of a micro-batch puts ``{"ecomstream": {"writer": <query id>, "batch": <id>}}`` in
its commit's ``userMetadata``, in the same atomic commit as the data. The pipeline's query is the
only writer of its tables, so the newest marked commit of a table says which batch of that
query the table already holds: a batch replayed after a crash skips the tables that committed
it and writes the others. That is what Delta's ``txnAppId``/``txnVersion`` would give, without
its price here: in delta-spark 4.4 looking a transaction version up rebuilds the snapshot's
whole state, about 0.6 s per write (shared/PERF_NOTES.md). The marker is read from the log once
per table per process (``DeltaTable.history``), then kept in memory: within one process the
query runs its batches in order and is the only writer.

A commit without a marker (compaction, a manual fix) is passed over, so maintenance never hides
the last batch; a marker of another writer id (a new checkpoint) counts as nothing written.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ecomstream.adapters.base import TableRef
from ecomstream.errors import EcomstreamError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

MARKER = "ecomstream"
# Newest commits searched for a marker before the whole history is read (maintenance adds a few
# unmarked commits between two batches at most).
HISTORY_DEPTH = 100
# Test switch, never set in production: "1" drops the check for every table, or a comma list
# of table keys ("silver/orders,metrics/pipeline_batches") for those tables only.
UNSAFE_NO_IDEMPOTENCE_ENV = "ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE"


def marker(writer: str, batch: int) -> str:
    return json.dumps({MARKER: {"writer": writer, "batch": batch}}, sort_keys=True)


def parse_marker(user_metadata: str | None, writer: str) -> int | None:
    """The batch id of ``writer`` in a commit's userMetadata, None when it is not ours."""
    if not user_metadata:
        return None
    try:
        value = json.loads(user_metadata)
    except ValueError:
        return None
    mark = value.get(MARKER) if isinstance(value, dict) else None
    if not isinstance(mark, dict) or mark.get("writer") != writer:
        return None
    batch = mark.get("batch")
    return batch if isinstance(batch, int) else None


def idempotence_enabled(table_key: str) -> bool:
    raw = os.environ.get(UNSAFE_NO_IDEMPOTENCE_ENV, "").strip()
    if not raw:
        return True
    if raw == "1":
        return False
    return table_key not in {part.strip() for part in raw.split(",")}


class Ledger:
    """Which batch of one writer each table holds, and writes that skip what is already there."""

    def __init__(self, spark: SparkSession, writer: str) -> None:
        self.spark = spark
        self.writer = writer
        self._last: dict[str, int] = {}
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def last_batch(self, key: str, table: TableRef) -> int:
        """The newest batch of this writer committed to ``table`` (-1: none)."""
        with self._lock:
            if key not in self._last:
                self._last[key] = self._read_last(table)
            return self._last[key]

    def committed(self, key: str, table: TableRef, batch: int) -> bool:
        if not idempotence_enabled(key):
            return False
        return self.last_batch(key, table) >= batch

    def append(self, df: DataFrame, key: str, table: TableRef, batch: int) -> bool:
        """Append ``df`` unless ``batch`` is already in ``table``; True when it wrote."""
        return self._save(df.write.format("delta").mode("append"), key, table, batch)

    def replace(
        self, df: DataFrame, key: str, table: TableRef, batch: int, replace_where: str
    ) -> bool:
        """Replace the rows matching ``replace_where`` (partition columns only: a metadata
        operation) with ``df``, in one commit, unless ``batch`` is already in ``table``."""
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", replace_where)
        return self._save(writer, key, table, batch)

    def append_rows(
        self,
        rows: pa.Table,
        schema: StructType,
        key: str,
        table: TableRef,
        batch: int,
        row_group_rows: int | None = None,
    ) -> bool:
        """:meth:`append` for a small Arrow table built on the driver (see :mod:`.arrow`);
        ``row_group_rows`` caps the Parquet row groups of a local write."""
        return self._save_rows(rows, schema, key, table, batch, None, row_group_rows)

    def replace_rows(
        self,
        rows: pa.Table,
        schema: StructType,
        key: str,
        table: TableRef,
        batch: int,
        replace_where: str,
    ) -> bool:
        """:meth:`replace` for a small Arrow table built on the driver."""
        return self._save_rows(rows, schema, key, table, batch, replace_where)

    def _save_rows(
        self,
        rows: pa.Table,
        schema: StructType,
        key: str,
        table: TableRef,
        batch: int,
        replace_where: str | None,
        row_group_rows: int | None = None,
    ) -> bool:
        local = table.local_path()
        if local is None:  # a catalog table or remote storage: Spark writes it
            df = self.spark.createDataFrame(rows, schema)
            if replace_where is None:
                return self.append(df, key, table, batch)
            return self.replace(df, key, table, batch, replace_where)
        if self.committed(key, table, batch):
            return False
        from deltalake import CommitProperties, WriterProperties, write_deltalake

        delta = self._delta_rs(local)
        rows = _as_table_schema(rows, delta)
        properties = CommitProperties(custom_metadata={"userMetadata": marker(self.writer, batch)})
        if replace_where is None:
            groups = WriterProperties(max_row_group_size=row_group_rows)  # None: the default
            write_deltalake(
                delta,
                rows,
                mode="append",
                commit_properties=properties,
                writer_properties=groups,
            )
        else:
            write_deltalake(
                delta,
                rows,
                mode="overwrite",
                predicate=replace_where,
                partition_by=delta.metadata().partition_columns or None,
                commit_properties=properties,
            )
        with self._lock:
            self._last[key] = batch
        return True

    def _delta_rs(self, path: str) -> Any:
        """One delta-rs handle per table, brought up to date before each write."""
        from deltalake import DeltaTable

        with self._lock:
            handle = self._handles.get(path)
            if handle is None:
                handle = self._handles[path] = DeltaTable(path)
        handle.update_incremental()
        return handle

    def _read_last_local(self, path: str) -> int:
        """:meth:`_read_last` through delta-rs: the same commit infos, read from the log in
        milliseconds where Spark's ``history()`` is a job (seconds on a cold JVM, and a
        restart reads every table's)."""
        from deltalake import DeltaTable

        delta = DeltaTable(path)
        for depth in (HISTORY_DEPTH, None):
            commits = delta.history(depth)
            commits.sort(key=lambda c: int(c.get("version", -1)), reverse=True)
            for commit in commits:
                batch = parse_marker(commit.get("userMetadata"), self.writer)
                if batch is not None:
                    return batch
            if depth is not None and len(commits) < depth:
                break
        return -1

    def _save(self, writer: Any, key: str, table: TableRef, batch: int) -> bool:
        if self.committed(key, table, batch):
            return False
        table.save(writer.option("userMetadata", marker(self.writer, batch)))
        with self._lock:
            self._last[key] = batch
        return True

    def _read_last(self, table: TableRef) -> int:
        local = table.local_path()
        if local is not None:
            return self._read_last_local(local)
        delta = table.delta_table(self.spark)
        for depth in (HISTORY_DEPTH, None):
            history = delta.history(depth) if depth else delta.history()
            rows = history.select("version", "userMetadata").orderBy("version", ascending=False)
            found = 0
            for row in rows.collect():
                found += 1
                batch = parse_marker(row["userMetadata"], self.writer)
                if batch is not None:
                    return batch
            if depth is not None and found < depth:
                break
        return -1


def _as_table_schema(rows: pa.Table, delta: Any) -> pa.Table:
    """``rows`` in the table's own Arrow types, column order and nullability (Spark's Arrow
    export and pyarrow's defaults differ from delta-rs's in list field names and not-null
    flags only; a value that does not fit fails the cast, and so the write)."""
    target = pa.schema(delta.schema().to_arrow())
    if rows.schema == target:
        return rows
    missing = [name for name in rows.column_names if name not in target.names]
    if missing:  # never drop a column silently: a table from an older version lacks it
        raise EcomstreamError(
            f"table {delta.table_uri} has no column {', '.join(missing)}: it was created by an "
            "older ecomstream; add the column (ALTER TABLE ... ADD COLUMNS) or start a new data dir"
        )
    return rows.select(target.names).cast(target)
