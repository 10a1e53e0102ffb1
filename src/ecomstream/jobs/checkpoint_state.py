"""What the start-up guard (:mod:`ecomstream.jobs.checkpoints`) reads: the topic's offsets and
id, a streaming checkpoint's files, and each table's newest ecomstream commit marker.

Read-only, except :class:`Files`, which also writes the guard's small marker files and moves a
replaced checkpoint aside. A local path is read with plain file I/O and delta-rs (no Spark: the
guard runs before the JVM starts, so a refusal costs a second); a remote one (abfss://, a Unity
Catalog table) through Spark.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment, TableRef
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.ledger import HISTORY_DEPTH, MARKER

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MARKER_FILE = "_ecomstream_checkpoint.json"


# -- what the topic holds ----------------------------------------------------------------------
@dataclass(frozen=True)
class SourceState:
    """The topic now: its id (None where the endpoint does not say) and, per partition, the
    first offset it still holds and its end offset."""

    topic_id: str | None
    offsets: dict[int, tuple[int, int]]


def source_state(config: dict[str, Any], topic: str) -> SourceState:
    """:class:`SourceState` through kafka-python with the adapter's ``config``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    try:
        admin = KafkaAdminClient(**config)
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
        consumer = KafkaConsumer(**config, enable_auto_commit=False)
        try:
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            tps = [TopicPartition(topic, p) for p in partitions]
            first, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        finally:
            consumer.close()
    except Exception as exc:
        raise EcomstreamError(
            f"could not read the offsets of topic {topic!r} ({type(exc).__name__})"
        ) from None
    topic_id = None
    for entry in described or ():
        value = entry.get("topic_id") if isinstance(entry, dict) else None
        if value and set(str(value)) - {"0", "-"}:
            topic_id = str(value)
    return SourceState(topic_id, {tp.partition: (int(first[tp]), int(end[tp])) for tp in tps})


# -- the checkpoint's files --------------------------------------------------------------------
class Files:
    """The few small files of a checkpoint: plain file I/O for a local path, Hadoop's
    FileSystem through Spark for a remote one (abfss://, dbfs:/)."""

    def __init__(self, root: str, spark: Callable[[], SparkSession]) -> None:
        self.root = root.rstrip("/")
        self.spark = spark
        self.local = TableRef(path=self.root).local_path()

    def _path(self, rel: str) -> str:
        return f"{self.local or self.root}/{rel}" if rel else (self.local or self.root)

    def _fs(self, path: str) -> tuple[Any, Any]:
        spark: Any = self.spark()
        p = spark._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(spark._jsc.hadoopConfiguration()), p

    def read(self, rel: str) -> str | None:
        path = self._path(rel)
        if self.local is not None:
            from pathlib import Path

            file = Path(path)
            return file.read_bytes().decode("utf-8", "replace") if file.is_file() else None
        fs, p = self._fs(path)
        if not fs.exists(p):
            return None
        stream = fs.open(p)
        try:
            jvm: Any = self.spark()._jvm
            return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def names(self, rel: str) -> list[str]:
        path = self._path(rel)
        if self.local is not None:
            from pathlib import Path

            folder = Path(path)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        fs, p = self._fs(path)
        if not fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def write(self, rel: str, text: str) -> None:
        path = self._path(rel)
        if self.local is not None:
            from pathlib import Path

            file = Path(path)
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(file.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(file)
            return
        fs, p = self._fs(path)
        out = fs.create(p, True)
        try:
            out.write(text.encode())
        finally:
            out.close()

    def move_aside(self) -> str:
        """Rename the checkpoint to ``<name>.replaced-<UTC time>``; returns the new path."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = f"{self._path('')}.replaced-{stamp}"
        if self.local is not None:
            from pathlib import Path

            Path(self._path("")).rename(target)
            return target
        fs, p = self._fs(self._path(""))
        fs.rename(p, self._fs(target)[1])
        return target


@dataclass
class Checkpoint:
    """What the guard reads of a checkpoint."""

    path: str
    query_id: str | None = None
    marker: dict[str, Any] | None = None
    # source offsets (topic -> partition -> offset) the next batch starts at, and, when a batch
    # was planned but not committed, where that batch ends
    next_offsets: dict[str, dict[int, int]] | None = None
    planned: dict[str, dict[int, int]] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing Spark would resume from (no query id, no batch)."""
        return self.query_id is None and self.next_offsets is None


def read_checkpoint(files: Files) -> Checkpoint:
    ckpt = Checkpoint(path=files.root, files=files.names(""))
    meta = files.read("metadata")
    if meta:
        try:
            ckpt.query_id = str(json.loads(meta)["id"])
        except (ValueError, KeyError, TypeError):
            ckpt.query_id = None
    text = files.read(MARKER_FILE)
    if text is not None:
        try:
            value = json.loads(text)
            ckpt.marker = value if isinstance(value, dict) else {}
        except ValueError:
            ckpt.marker = {}
    committed = _batches(files.names("commits"))
    planned = _batches(files.names("offsets"))
    if committed:
        ckpt.next_offsets = _source_offsets(files.read(f"offsets/{committed[-1]}"))
    else:
        ckpt.next_offsets = _source_offsets(files.read("sources/0/0"))
    if planned and (not committed or planned[-1] > committed[-1]):
        ckpt.planned = _source_offsets(files.read(f"offsets/{planned[-1]}"))
    return ckpt


def _batches(names: list[str]) -> list[int]:
    return sorted(int(n) for n in names if n.isdigit())


def _source_offsets(text: str | None) -> dict[str, dict[int, int]] | None:
    """The Kafka source's offsets in an offsets-log or initial-offsets file (its last JSON
    line of the form ``{"topic": {"0": 12}}``)."""
    if not text:
        return None
    for line in reversed(text.replace("\x00", "").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in value.items()}
    return None


# -- what the tables hold ----------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """A table's newest ecomstream commit: its writer, batch and version."""

    writer: str
    batch: int
    version: int
    timestamp: int


@dataclass
class TableState:
    key: str
    version: int  # -1: no table
    mark: Mark | None


def table_state(env: Environment, key: str, spark: Callable[[], SparkSession]) -> TableState:
    table = env.table(key)
    local = table.local_path()
    if local is not None:
        from pathlib import Path

        if not any(Path(local, "_delta_log").glob("*.json")):
            return TableState(key, -1, None)
        from deltalake import DeltaTable

        delta = DeltaTable(local)
        version = int(delta.version())
        history: Callable[[int | None], list[dict[str, Any]]] = delta.history
    else:
        if not table.exists(spark()):
            return TableState(key, -1, None)
        handle = table.delta_table(spark())

        def history(depth: int | None) -> list[dict[str, Any]]:
            df = handle.history(depth) if depth else handle.history()
            return [
                {
                    "version": r["version"],
                    "timestamp": int(r["timestamp"].timestamp() * 1000),
                    "userMetadata": r["userMetadata"],
                }
                for r in df.select("version", "timestamp", "userMetadata").collect()
            ]

        version = -2
    # the newest commits first: a long-running stream has tens of thousands of them
    for depth in (HISTORY_DEPTH, None):
        commits = sorted(history(depth), key=lambda c: int(c.get("version", -1)), reverse=True)
        if version == -2:
            version = max((int(c["version"]) for c in commits), default=0)
        for commit in commits:
            mark = _mark(commit)
            if mark is not None:
                return TableState(key, version, mark)
        if len(commits) < HISTORY_DEPTH:
            break
    return TableState(key, version, None)


def _mark(commit: dict[str, Any]) -> Mark | None:
    try:
        value = json.loads(commit.get("userMetadata") or "")
        mark = value[MARKER]
        writer, batch = str(mark["writer"]), mark["batch"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(batch, int):
        return None
    return Mark(writer, batch, int(commit["version"]), int(commit.get("timestamp") or 0))


def newest_writer(states: list[TableState]) -> str | None:
    marks = [s.mark for s in states if s.mark is not None]
    return max(marks, key=lambda m: (m.timestamp, m.batch)).writer if marks else None
