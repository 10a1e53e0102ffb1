"""Idempotent Delta writes for foreachBatch: a replayed batch changes nothing.

Every write carries Delta's transaction identifier ``(txnAppId, txnVersion)`` = (the streaming
query's id + a per-table suffix, the batch id). Delta records it in the same commit as the data
and skips a later write whose version is not above the one recorded for that app id, so a batch
replayed after a crash (its writes committed, the checkpoint's commit file not yet written)
writes nothing twice. Appends take the writer options; MERGE takes the session confs
``spark.databricks.delta.write.txnAppId`` / ``txnVersion`` (Delta >= 2.4, delta-io/delta#1555),
set on the batch's own session (each streaming query runs on a clone of the session, so queries
running side by side do not see each other's confs) and unset right after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from ecomstream.adapters.base import TableRef
from ecomstream.jobs.settings import idempotence_enabled

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
_KEY = "_ecomstream_key"


def append(df: DataFrame, table: TableRef, app_id: str, version: int) -> None:
    writer = df.write.format("delta").mode("append")
    if idempotence_enabled():
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(version))
    table.save(writer)


@contextlib.contextmanager
def txn_confs(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    if not idempotence_enabled():
        yield
        return
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def insert_new(
    source: DataFrame,
    table: TableRef,
    key: str,
    app_id: str,
    version: int,
    candidate_keys: DataFrame | None = None,
) -> int | None:
    """Append the rows of ``source`` whose ``key`` is not in ``table`` yet; nothing else.

    The result of an insert-only MERGE on ``key``, planned for a batch that is small beside the
    table: the batch's keys are broadcast and the table's ``key`` column is scanned once against
    them, which leaves the (few) keys the table already holds; those are broadcast in turn and
    anti-joined out of ``source``. Memory stays bounded by the batch, however large the table
    grows, and ``source`` is not shuffled again. ``candidate_keys`` (a frame whose ``key`` column
    has the same set of values as ``source``'s, e.g. before an expensive dedup) spares computing
    ``source`` twice. The append carries the transaction id, so a replayed batch writes nothing.

    Returns the number of rows inserted, or None when Delta skipped the append because this
    (app id, version) was already committed (a replay). ``source`` must be unique on ``key``.
    """
    spark = source.sparkSession
    keys = (source if candidate_keys is None else candidate_keys).select(F.col(key).alias(_KEY))
    held = (
        table.read(spark)
        .select(F.col(key).alias(_KEY))
        .join(F.broadcast(keys), _KEY, "left_semi")
        .distinct()
    )
    new_rows = source.join(F.broadcast(held), source[key] == held[_KEY], "left_anti").select(
        *source.columns
    )
    before = _latest_commit(spark, table)
    append(new_rows, table, app_id, version)
    after = _latest_commit(spark, table)
    # one writer per table (the query that owns it): a new commit is this append's
    if after is None or (before is not None and after["version"] <= before["version"]):
        return None
    return int((after["operationMetrics"] or {}).get("numOutputRows", 0))


def _latest_commit(spark: SparkSession, table: TableRef) -> Row | None:
    """The table's newest history entry (version, operationMetrics), None before any."""
    return table.delta_table(spark).history(1).select("version", "operationMetrics").first()


def merge_upsert(
    source: DataFrame, table: TableRef, keys: Sequence[str], app_id: str, version: int
) -> int | None:
    """Replace the rows of ``table`` matching ``source`` on ``keys`` (null-safe); insert others."""
    spark = source.sparkSession
    target = table.delta_table(spark)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    with txn_confs(spark, app_id, version):
        result = (
            target.alias("t")
            .merge(source.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
    return _affected(result)


def _affected(result: DataFrame | None) -> int | None:
    rows = result.collect() if result is not None else []
    if not rows:
        return None
    return int(rows[0]["num_affected_rows"])
