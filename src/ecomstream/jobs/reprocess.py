"""``ecomstream reprocess``: rebuild silver, quarantine and gold from bronze, exactly.

Bronze keeps every record as received (payload, raw bytes, Kafka coordinates), so everything
downstream can be rebuilt from it without Kafka, under the rules and settings (window,
catalogue) of now. The rebuild is the stream's own batch (:class:`MedallionBatch`: the same
parse, checks, first-wins dedup and gold sums; no second implementation of any rule), fed the
records bronze holds, turned back into Kafka records, in (partition, offset) order, a chunk of
at most ``--chunk-rows`` records at a time (what bounds the driver's memory, as
``--max-offsets-per-trigger`` does for the stream). Its tables are built in the staging area
(:mod:`ecomstream.jobs.staging`), each chunk a marked batch there, so a rerun after a crash
continues where the last one stopped; then each real table switches in one commit.

Afterwards every switched table is marked as holding the batch bronze holds, by bronze's
writer: the pipeline's checkpoint still points after bronze's last offsets, and its next batch
appends to the new tables. The binding file records the new window and catalogue, which the
pipeline's start-up check compares with its own settings. The dedup state of the stream is
read from silver at each start, so a re-send arriving afterwards is still a duplicate.

Refused, with one line: a data dir without bronze, a running pipeline (the data dir's lock,
:meth:`LocalEnvironment.lock`), a pipeline stopped between the writes of a batch or in the
middle of a checkpoint reset (finish those with ``ecomstream pipeline --once`` first).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import operator
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment, TableRef, hook
from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import staging
from ecomstream.jobs.settings import DEFAULT_MAX_OFFSETS_PER_TRIGGER, PROFILES, PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("ecomstream.pipeline")
BRONZE = "bronze/orders"
METRICS = "metrics/pipeline_batches"
# the tables a reprocess rebuilds, in the order they switch (metrics last, then the binding)
REBUILT: tuple[str, ...] = (
    "silver/quarantine",
    "silver/orders",
    "gold/category_sales",
    "gold/location_sales",
)
BINDING_FILE = "_ecomstream.json"
# what a reprocess never contacts; the local adapter wants a broker address all the same
NO_BROKER = "reprocess-reads-no-kafka:0"


@dataclass(frozen=True)
class ReprocessSettings:
    data_dir: Path
    window: str = "1 minute"
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    profile: str = "local"
    dry_run: bool = False
    chunk_rows: int = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    master: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # what the databricks adapter needs beyond the above (catalog, schema, ...)
    adapter_extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        from ecomstream.transforms.gold import parse_window

        if self.profile not in PROFILES:
            raise EcomstreamError(
                f"unknown --profile {self.profile!r}: choose one of {', '.join(PROFILES)}"
            )
        object.__setattr__(self, "window", parse_window(self.window))
        if not self.categories:
            raise EcomstreamError("--categories names no category")
        if self.chunk_rows <= 0:
            raise EcomstreamError("--chunk-rows must be a positive number of records")

    def pipeline_settings(self, topic: str) -> PipelineSettings:
        """The settings the stream runs the rebuilt tables with (no Kafka is read)."""
        return PipelineSettings(
            topic=topic or "-",
            data_dir=self.data_dir,
            bootstrap_servers=NO_BROKER,
            profile=self.profile,
            window=self.window,
            categories=self.categories,
            master=self.master,
            spark_conf=self.spark_conf,
        )


def run(settings: ReprocessSettings) -> int:
    """Rebuild (or, with ``dry_run``, compare); returns the exit code."""
    os.environ["TZ"] = "UTC"  # collect() gives naive datetimes in the local zone
    time.tzset()
    _refuse_missing_local(settings)
    from ecomstream import adapters

    pipeline_settings = settings.pipeline_settings("-")
    env = adapters.get(
        settings.profile, **{**pipeline_settings.adapter_settings(), **settings.adapter_extra}
    )
    try:
        binding = read_binding(env)
        if settings.dry_run:
            from ecomstream.jobs.reprocess_report import dry_run

            return dry_run(env, settings, binding)
        hook(env, "lock")("reprocess")
        return Rebuild(env, settings, binding).run()
    finally:
        hook(env, "close")()


def _refuse_missing_local(settings: ReprocessSettings) -> None:
    """Bad input on a laptop is one line before any JVM starts."""
    if settings.profile != "local":
        return
    data_dir = Path(settings.data_dir).expanduser()
    if not data_dir.is_dir():
        raise EcomstreamError(f"data dir {data_dir} does not exist")
    if not any((data_dir / BRONZE / "_delta_log").glob("*.json")):
        raise EcomstreamError(
            f"data dir {data_dir} holds no {BRONZE} table: nothing to reprocess (run "
            "'ecomstream pipeline' first)"
        )


def read_binding(env: Environment) -> dict[str, Any]:
    from ecomstream.jobs.checkpoint_state import Files

    text = Files(staging.state_root(env), env.spark).read(BINDING_FILE)
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or not value.get("topic"):
        raise EcomstreamError(
            f"{staging.state_root(env)}/{BINDING_FILE} is missing or unreadable: not a data dir "
            "the pipeline wrote"
        )
    return value


def write_binding(env: Environment, binding: dict[str, Any]) -> None:
    from ecomstream.jobs.checkpoint_state import Files

    Files(staging.state_root(env), env.spark).write(BINDING_FILE, json.dumps(binding, indent=2))


def bronze_at(table: TableRef, spark: SparkSession, version: int) -> DataFrame:
    reader = spark.read.format("delta").option("versionAsOf", version)
    return reader.load(table.path) if table.path is not None else reader.table(str(table.name))


def bronze_version(table: TableRef, spark: SparkSession) -> int:
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        return int(DeltaTable(local).version())
    rows = table.delta_table(spark).history(1).select("version").collect()
    return int(rows[0]["version"])


def plan_chunks(
    table: TableRef, spark: SparkSession, version: int, chunk_rows: int
) -> tuple[list[list[list[int]]], int]:
    """Chunks covering bronze at ``version``, in (partition, offset) order: each a list of
    Kafka offset ranges ``[partition, first, end)`` spanning ``chunk_rows`` offsets at most
    (the tail of one partition and the head of the next share a chunk: as few Spark jobs as
    the stream's batches); and bronze's row count."""
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        rows = DeltaTable(local, version=version).to_pyarrow_table(
            columns=["kafka_partition", "kafka_offset"]
        )
        spans = rows.group_by("kafka_partition").aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max")]
        )
        found = [
            (int(r["kafka_partition"]), int(r["kafka_offset_min"]), int(r["kafka_offset_max"]))
            for r in spans.to_pylist()
        ]
        total = rows.num_rows
    else:
        from pyspark.sql import functions as F

        df = bronze_at(table, spark, version)
        agg = df.groupBy("kafka_partition").agg(
            F.min("kafka_offset").alias("lo"), F.max("kafka_offset").alias("hi"), F.count("*")
        )
        collected = agg.collect()
        found = [(int(r[0]), int(r[1]), int(r[2])) for r in collected]
        total = sum(int(r[3]) for r in collected)
    return pack(sorted(found), chunk_rows), total


def pack(spans: list[tuple[int, int, int]], chunk_rows: int) -> list[list[list[int]]]:
    """``(partition, first, last)`` offset spans, in order, cut into chunks of ranges."""
    chunks: list[list[list[int]]] = []
    current: list[list[int]] = []
    room = chunk_rows
    for partition, first, last in spans:
        start = first
        while start <= last:
            end = min(start + room, last + 1)
            current.append([partition, start, end])
            room -= end - start
            start = end
            if room == 0:
                chunks.append(current)
                current, room = [], chunk_rows
    if current:
        chunks.append(current)
    return chunks


def kafka_records(bronze: DataFrame) -> DataFrame:
    """Bronze rows as the Kafka source gives records: the payload byte for byte (``raw_bytes``
    when it was not UTF-8, else ``raw_value``'s bytes), key, coordinates, time; plus when the
    record was first ingested, which bronze keeps."""
    from pyspark.sql import functions as F

    return bronze.select(
        F.col("kafka_key").cast("binary").alias("key"),
        F.coalesce(F.col("raw_bytes"), F.col("raw_value").cast("binary")).alias("value"),
        F.col("kafka_topic").alias("topic"),
        F.col("kafka_partition").alias("partition"),
        F.col("kafka_offset").alias("offset"),
        F.col("kafka_timestamp").alias("timestamp"),
        F.lit(0).alias("timestampType"),
        F.col("ingested_at"),
    )


def stage(
    env: Environment,
    settings: ReprocessSettings,
    topic: str,
    root: str,
    state: dict[str, Any],
    save: Any = None,
) -> staging.StagingEnvironment:
    """Build the rebuilt tables under ``root``: each chunk of bronze through the stream's batch,
    in order; chunks ``state["done"]`` lists are skipped (a rerun), each new one is added."""
    from pyspark.sql import functions as F

    from ecomstream.jobs.batch import MedallionBatch
    from ecomstream.jobs.pipeline import (
        PARTITION_COLUMNS,
        TABLE_PROPERTIES,
        declared_schemas,
        lenient,
    )

    spark = env.spark()
    staged = staging.StagingEnvironment(env, root)
    schemas = declared_schemas()
    for key in REBUILT:
        staged.table(key).create_if_missing(
            spark, lenient(schemas[key]), TABLE_PROPERTIES.get(key), PARTITION_COLUMNS.get(key, ())
        )
    pipeline_settings = settings.pipeline_settings(topic)
    batch = MedallionBatch(staged, pipeline_settings, f"reprocess-{state['id']}", REBUILT)
    bronze = bronze_at(env.table(BRONZE), spark, int(state["bronze_version"]))
    done: dict[str, Any] = state.setdefault("done", {})
    try:
        for i, ranges in enumerate(state["chunks"]):
            if str(i) in done:
                continue
            within = [
                (F.col("kafka_partition") == partition)
                & (F.col("kafka_offset") >= start)
                & (F.col("kafka_offset") < end)
                for partition, start, end in ranges
            ]
            rows = bronze.where(functools.reduce(operator.or_, within))
            figures = batch.process(kafka_records(rows), i)
            newest = figures.newest_event
            done[str(i)] = {
                "rows": figures.rows,
                "quarantined": figures.quarantined,
                "inserted": figures.inserted,
                "reasons": figures.reasons,
                "newest_event": newest.isoformat() if newest is not None else None,
            }
            if save is not None:
                save()
    finally:
        batch.close()
    return staged


class Rebuild:
    """One reprocess of a data dir: plan, stage, switch, record; resumable at every step."""

    def __init__(self, env: Environment, settings: ReprocessSettings, binding: dict[str, Any]):
        self.env = env
        self.settings = settings
        self.binding = binding
        self.began = time.monotonic()

    def run(self) -> int:
        from ecomstream.jobs.batch import crash_point

        if self._nothing_to_rebuild():
            return 0
        state = self._state()
        root = f"{staging.files(self.env).root}/run-{state['id']}"
        from ecomstream.jobs.reprocess_report import metrics_rows, summary

        spark = self.env.spark()
        if state["phase"] == "staging":
            staged = stage(
                self.env, self.settings, self.binding["topic"], root, state, self._saver(state)
            )
            # counted now: a switch moves the staged files into the tables
            state["figures"] = summary(staged, spark, state)
            crash_point("staged", 0)
            state["phase"] = "switching"
            self._save(state)
        staged = staging.StagingEnvironment(self.env, root)
        note = staging.commit_note(state["writer"], state["batch"], self._run_note(state))
        for key in REBUILT:
            table = self.env.table(key)
            if not staging.switched_by(table, spark, state["id"]):
                since = time.monotonic()
                staging.overwrite(table, staged.table(key), spark, note, key)
                ms = int((time.monotonic() - since) * 1000)
                log.info(json.dumps({"event": "reprocess_switch", "table": key, "ms": ms}))
                crash_point(f"switch/{key}", 0)
        self._save(state)  # the seconds spent so far, all runs of this reprocess together
        figures = {**state["figures"], "seconds": state["seconds"]}
        metrics = self.env.table(METRICS)
        if not staging.switched_by(metrics, spark, state["id"]):
            rows = metrics_rows(metrics, spark, state, figures)
            staging.overwrite_rows(metrics, rows, spark, note)
            crash_point(f"switch/{METRICS}", 0)
        self._rebind()
        crash_point("binding", 0)
        staging.remove_tree(staging.files(self.env).root, spark)
        self._report(state, figures)
        return 0

    def _nothing_to_rebuild(self) -> bool:
        """Bronze holds no record (a pipeline that started on an empty topic): the tables are
        empty under any settings, so only the binding changes."""
        from ecomstream.jobs.checkpoint_state import table_state

        if staging.read_state(self.env) is not None:
            return False
        bronze = table_state(self.env, BRONZE, self.env.spark)
        if bronze.mark is not None or bronze.version > 0:
            return False
        self._rebind()
        print(
            f"bronze holds no records: nothing to rebuild; the data dir now records window "
            f"{self.settings.window} and {len(self.settings.categories)} categories",
            flush=True,
        )
        return True

    def _rebind(self) -> None:
        binding = {
            **self.binding,
            "window": self.settings.window,
            "categories": list(self.settings.categories),
            "reprocessed_at": time.time(),
        }
        write_binding(self.env, binding)

    # -- the state file ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """The unfinished reprocess's state if it asked for the same settings, else a new one
        (an unfinished one that had not switched a table yet is dropped)."""
        wanted = {"window": self.settings.window, "categories": sorted(self.settings.categories)}
        state = staging.read_state(self.env)
        if state is not None:
            held = {"window": state.get("window"), "categories": state.get("categories")}
            if held == wanted:
                log.info(json.dumps({"event": "reprocess_resumed", "phase": state["phase"]}))
                return state
            if state.get("phase") != "staging":
                raise EcomstreamError(
                    f"an earlier reprocess (window {held['window']!r}, catalogue "
                    f"{','.join(held['categories'] or [])}) was switching tables when it "
                    "stopped: run 'ecomstream reprocess' with those settings to finish it first"
                )
            staging.remove_tree(staging.files(self.env).root, self.env.spark())
        self._refuse_unsettled()
        spark = self.env.spark()
        bronze = self.env.table(BRONZE)
        version = bronze_version(bronze, spark)
        chunks, rows = plan_chunks(bronze, spark, version, self.settings.chunk_rows)
        mark = self._bronze_mark()
        state = {
            **wanted,
            "id": uuid.uuid4().hex[:12],
            "phase": "staging",
            "bronze_version": version,
            "bronze_rows": rows,
            "writer": mark[0],
            "batch": mark[1],
            "chunks": chunks,
            "done": {},
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "seconds": 0.0,
            "previous": {"window": self.binding.get("window"),
                         "categories": self.binding.get("categories")},
        }  # fmt: skip
        self._save(state)
        return state

    def _saver(self, state: dict[str, Any]) -> Any:
        return lambda: self._save(state)

    def _save(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        state["seconds"] = round(float(state.get("seconds", 0.0)) + now - self.began, 3)
        self.began = now
        staging.write_state(self.env, state)

    def _bronze_mark(self) -> tuple[str, int]:
        from ecomstream.jobs.checkpoint_state import table_state

        bronze, metrics = (table_state(self.env, k, self.env.spark) for k in (BRONZE, METRICS))
        if bronze.mark is None:
            raise EcomstreamError(
                f"{BRONZE} holds no batch of the pipeline yet: nothing to reprocess"
            )
        held = (bronze.mark.writer, bronze.mark.batch)
        if metrics.mark is None or (metrics.mark.writer, metrics.mark.batch) != held:
            raise EcomstreamError(
                f"the pipeline stopped in the middle of batch {bronze.mark.batch} (bronze holds "
                f"it, {METRICS} does not): run 'ecomstream pipeline ... --once' to finish it, "
                "then reprocess"
            )
        return held

    def _refuse_unsettled(self) -> None:
        """A checkpoint reset that has not run its first batch rolls tables back at the next
        start: it must not find rebuilt tables."""
        from ecomstream.jobs.checkpoint_state import Files, read_checkpoint
        from ecomstream.jobs.checkpoints import QUERY

        ckpt = read_checkpoint(Files(self.env.checkpoint(QUERY), self.env.spark))
        if ckpt.marker and ckpt.marker.get("start") is not None and ckpt.next_offsets is None:
            raise EcomstreamError(
                "a checkpoint reset of this data dir has not run its first batch: run "
                "'ecomstream pipeline ... --once' first, then reprocess"
            )

    def _run_note(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": state["id"],
            "window": state["window"],
            "categories": state["categories"],
            "bronze_version": state["bronze_version"],
        }

    def _report(self, state: dict[str, Any], figures: dict[str, Any]) -> None:
        line = {"event": "reprocess", "id": state["id"], **figures}
        log.info(json.dumps(line, default=str))
        previous = state.get("previous") or {}
        print(
            f"reprocessed {state['bronze_rows']} bronze rows in {figures['seconds']:.1f} s: "
            f"window {previous.get('window')} -> {state['window']}; "
            + ", ".join(f"{k} {figures['rows'][k]} rows" for k in REBUILT)
            + f"; duplicates dropped {figures['duplicates_dropped']}",
            file=sys.stdout,
            flush=True,
        )
