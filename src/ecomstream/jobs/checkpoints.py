"""The checkpoint and the tables must tell the same story: checked at every start.

The medallion query's checkpoint holds where it is on the topic; the tables hold what it wrote,
each commit marked with the query's id (its *writer*) and batch (:mod:`ecomstream.jobs.ledger`).
Before the query starts, :func:`guard` checks the two against each other and against the topic:

* **lost checkpoint** (deleted, or a data dir copied without it) while the tables hold data: a
  new query would read the topic again and duplicate bronze. Refused, unless asked with
  ``--reset-checkpoints``: then the start position is rebuilt from the tables (below).
* **foreign checkpoint**: written for another topic, by another set of tables (its query id is
  not the tables' writer), or by another layout (the three-query layout of ecomstream <= 0.1, a
  marker of an unknown layout). Refused; ``--reset-checkpoints`` replaces it (moved aside, never
  deleted) as for a lost one, except under tables of the three-query layout, which carry no
  markers to rebuild from.
* **offsets gone**: the topic no longer holds what the checkpoint points to. Records removed
  before they were read (retention, delete-records: the checkpoint's next offset is below the
  partition's first) is refused unless ``--fail-on-data-loss false``; a topic deleted and
  recreated (its topic id changed, or the checkpoint is past the partition's end) is always
  refused: its offsets restarted, so no position in the new topic follows what the tables hold.

Two small files carry what Spark's checkpoint does not: ``_ecomstream_checkpoint.json`` in the
checkpoint (the layout, the topic, its Kafka topic id and, after a reset, the writer whose
tables the new query continues, where it starts and which batch it rolls back), and
``_ecomstream_source.json`` beside the ``_checkpoints`` folder (the topic id the tables were
read from: it outlives a lost checkpoint).

The reset. Within one writer, a batch starts only after every write of the one before it
returned, so the tables hold every batch of the newest writer but its last, N, and some subset
of N (the writes of a batch run side by side: any of them may be in when the process died). The
reset rolls N back in each table that holds it (a Delta RESTORE to the version before, whose
commit is marked as batch N-1 of that writer), after which every table holds exactly the records
up to bronze's newest offset per partition; the new query starts at bronze's newest offset + 1
per partition. Nothing of the topic is read twice into a table, nothing skipped, and metrics
count each record once. A reset that dies half way is finished by the next start (the marker
file is written before the first roll-back).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import OLD_LAYOUT_QUERIES, TABLE_KEYS, Environment, hook
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.checkpoint_state import (
    MARKER_FILE,
    Checkpoint,
    Files,
    SourceState,
    TableState,
    newest_writer,
    read_checkpoint,
    table_state,
)
from ecomstream.jobs.ledger import marker
from ecomstream.jobs.settings import PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("ecomstream.pipeline")
QUERY = "medallion"
SOURCE_FILE = "_ecomstream_source.json"
LAYOUT = 1
RESET_HINT = "--reset-checkpoints (or ECOMSTREAM_RESET_CHECKPOINTS=1)"


# -- the guard ---------------------------------------------------------------------------------
def guard(env: Environment, settings: PipelineSettings) -> dict[int, int] | None:
    """Check checkpoint, tables and topic before the query starts (one clear line when they
    disagree). Returns the start offsets per partition when the query must start at a position
    of its own (a reset), else None (the checkpoint, or ``--starting-offsets``, decides)."""
    topic = settings.topic
    files = Files(env.checkpoint(QUERY), env.spark)
    _refuse_three_query_layout(env, files)
    ckpt = read_checkpoint(files)
    states = [table_state(env, key, env.spark) for key in TABLE_KEYS]
    writer = newest_writer(states)
    written = [s.key for s in states if s.version > 0]
    source: SourceState | None = hook(env, "kafka_source_state")()
    _check_topic_id(files, topic, source)

    if written and writer is None:
        raise EcomstreamError(
            f"the tables ({', '.join(written)}) were written without ecomstream's batch markers "
            "(the three-query layout of ecomstream <= 0.1, or another writer): they cannot be "
            "continued; use a new --data-dir"
        )
    problem = None if ckpt.empty else _foreign(ckpt, topic, writer)
    if problem is None and ckpt.next_offsets is not None:  # Spark resumes from the checkpoint
        _check_offsets(topic, ckpt, source, fail_on_data_loss(env, settings))
        if ckpt.marker is None:  # written before markers existed, and it is ours: adopt it
            _write_marker(files, topic, source)
        return None
    if problem is None:  # no checkpoint, or one that has not planned a batch
        resumed = _resumed_reset(env, ckpt, states, writer)
        if resumed is not None:
            return resumed
        if writer is None:
            if ckpt.marker is None:
                _write_marker(files, topic, source)
            return None
        problem = (
            f"checkpoint {files.root} is missing but the tables already hold topic {topic!r} "
            f"(written by query {writer}): a new checkpoint would read the topic again and "
            "duplicate them"
        )
    if not settings.reset_checkpoints:
        raise EcomstreamError(
            f"{problem}; to continue from what the tables hold, run again with {RESET_HINT}"
        )
    return reset(env, settings, files, ckpt, states, source)


def fail_on_data_loss(env: Environment, settings: PipelineSettings) -> bool:
    """The source's failOnDataLoss as the query will run it (an adapter's own setting wins)."""
    value = env.kafka_source_options().get("failOnDataLoss")
    return settings.fail_on_data_loss if value is None else str(value).lower() == "true"


def _foreign(ckpt: Checkpoint, topic: str, writer: str | None) -> str | None:
    """Why the checkpoint is not this data dir's, or None."""
    mark = ckpt.marker
    if mark is not None and mark.get("layout") != LAYOUT:
        return (
            f"checkpoint {ckpt.path} has layout {mark.get('layout')!r}, not {LAYOUT} "
            "(another ecomstream version's layout)"
        )
    topics = set((ckpt.next_offsets or {}).keys()) | set((ckpt.planned or {}).keys())
    if mark is not None and mark.get("topic"):
        topics.add(str(mark["topic"]))
    if topics - {topic}:
        return (
            f"checkpoint {ckpt.path} was written for topic {sorted(topics - {topic})[0]!r}, "
            f"not {topic!r}"
        )
    allowed = {ckpt.query_id, (mark or {}).get("continues")}
    if writer is not None and writer not in allowed:
        return (
            f"checkpoint {ckpt.path} belongs to other tables (its query {ckpt.query_id} did not "
            f"write these; query {writer} did)"
        )
    return None


def _resumed_reset(
    env: Environment, ckpt: Checkpoint, states: list[TableState], writer: str | None
) -> dict[int, int] | None:
    """A reset whose query has not planned a batch yet (it may have died rolling back): finish
    the roll-back and start where the reset said."""
    mark = ckpt.marker or {}
    start, undo = mark.get("start"), mark.get("undo")
    if start is None or writer != mark.get("continues"):
        return None
    if writer is not None and isinstance(undo, int):
        _roll_back_all(env, states, writer, undo)
    return {int(p): int(o) for p, o in start.items()}


def _refuse_three_query_layout(env: Environment, files: Files) -> None:
    parent = files.root.rsplit("/", 1)[0]
    siblings = set(Files(parent, env.spark).names(""))
    old = [q for q in OLD_LAYOUT_QUERIES if q in siblings]
    if old and QUERY not in siblings:
        raise EcomstreamError(
            f"{parent} holds checkpoints of the older three-query layout ({', '.join(old)}): "
            "its tables cannot be continued by the medallion query; use a new --data-dir"
        )


def _check_offsets(
    topic: str, ckpt: Checkpoint, source: SourceState | None, fail_on_data_loss: bool
) -> None:
    """The records the checkpoint reads next are still on the topic (case 3 of issue 11)."""
    if source is None:
        return
    recorded = (ckpt.marker or {}).get("topic_id")
    if recorded and source.topic_id and recorded != source.topic_id:
        raise _recreated(topic, f"its topic id is {source.topic_id}, not {recorded}")
    nxt = (ckpt.next_offsets or {}).get(topic, {})
    ends = {**nxt, **(ckpt.planned or {}).get(topic, {})}
    past = [
        f"partition {p} at {o} but the topic ends at {source.offsets[p][1]}"
        for p, o in sorted(ends.items())
        if p in source.offsets and o > source.offsets[p][1]
    ]
    gone = [p for p in nxt if p not in source.offsets]
    if gone:
        past.append(f"partition {gone[0]} no longer exists")
    if past:
        raise _recreated(topic, "checkpoint " + "; ".join(past))
    lost = {
        p: (o, source.offsets[p][0]) for p, o in sorted(nxt.items()) if o < source.offsets[p][0]
    }
    if not lost:
        return
    detail = "; ".join(
        f"partition {p}: next offset {o}, first available {first}" for p, (o, first) in lost.items()
    )
    count = sum(first - o for o, first in lost.values())
    if not fail_on_data_loss:
        log.warning(
            json.dumps(
                {"event": "data_loss_accepted", "topic": topic, "records": count, "detail": detail}
            )
        )
        return
    raise EcomstreamError(
        f"topic {topic!r} no longer holds {count} records the pipeline has not read ({detail}): "
        "they were removed (retention or delete-records); nothing was written. To go on "
        "without them, run once with --fail-on-data-loss false"
    )


def _recreated(topic: str, why: str) -> EcomstreamError:
    return EcomstreamError(
        f"topic {topic!r} was deleted and recreated since these tables read it ({why}): its "
        "offsets restarted, so no position in it follows what the tables hold; read the new "
        "topic into a new --data-dir (these tables stay as they are)"
    )


def _check_topic_id(files: Files, topic: str, source: SourceState | None) -> None:
    """The topic is the one the tables were read from: its Kafka topic id, recorded at the
    first start in ``<data dir>/_ecomstream_source.json`` (beside the checkpoints, so a lost
    checkpoint does not lose it), changes when the topic is deleted and recreated, even when
    the new topic has grown past the old offsets, which no offset check can see."""
    if source is None or source.topic_id is None:
        return
    store = Files(files.root.rsplit("/", 2)[0], files.spark)
    text = store.read(SOURCE_FILE)
    try:
        recorded = json.loads(text).get("topic_id") if text else None
    except (ValueError, AttributeError):
        recorded = None
    if recorded is None:
        store.write(SOURCE_FILE, json.dumps({"topic": topic, "topic_id": source.topic_id}) + "\n")
    elif recorded != source.topic_id:
        raise _recreated(topic, f"its topic id is {source.topic_id}, the tables' is {recorded}")


def _write_marker(
    files: Files,
    topic: str,
    source: SourceState | None,
    continues: str | None = None,
    start: dict[int, int] | None = None,
    undo: int | None = None,
) -> None:
    value: dict[str, Any] = {
        "layout": LAYOUT,
        "query": QUERY,
        "topic": topic,
        "topic_id": source.topic_id if source else None,
    }
    if continues is not None:
        value["continues"] = continues
    if start is not None:
        value["start"] = {str(p): o for p, o in sorted(start.items())}
    if undo is not None:
        value["undo"] = undo
    files.write(MARKER_FILE, json.dumps(value, indent=2) + "\n")


# -- the reset ---------------------------------------------------------------------------------
def reset(
    env: Environment,
    settings: PipelineSettings,
    files: Files,
    ckpt: Checkpoint,
    states: list[TableState],
    source: SourceState | None,
) -> dict[int, int]:
    """Roll the newest writer's last batch back where it is, move the checkpoint aside and
    return the start offsets (bronze's newest offset + 1 per partition of the topic)."""
    topic = settings.topic
    if source is None:
        raise EcomstreamError(
            f"{RESET_HINT.split(' ')[0]} needs the offsets of topic {topic!r}, which this "
            "environment does not report"
        )
    writer = newest_writer(states)
    last = max((s.mark.batch for s in states if s.mark and s.mark.writer == writer), default=-1)
    undo = [s for s in states if s.mark and s.mark.writer == writer and s.mark.batch == last >= 0]
    bronze = next(s for s in states if s.key == "bronze/orders")
    at = next((s.mark.version - 1 for s in undo if s.key == "bronze/orders" and s.mark), None)
    held = _bronze_offsets(env, topic, at if at is not None else bronze.version, env.spark)
    start = {p: held.get(p, -1) + 1 for p in source.offsets}
    if set(held) - set(source.offsets) or any(o > source.offsets[p][1] for p, o in start.items()):
        past = "; ".join(
            f"partition {p}: the tables hold up to offset {held[p]}, the topic ends at "
            f"{source.offsets[p][1] if p in source.offsets else 'nothing'}"
            for p in sorted(held)
            if p not in source.offsets or held[p] + 1 > source.offsets[p][1]
        )
        raise _recreated(topic, past)
    lost = {p: (o, source.offsets[p][0]) for p, o in start.items() if o < source.offsets[p][0]}
    if lost and settings.fail_on_data_loss:
        detail = "; ".join(f"partition {p}: next {o}, first {f}" for p, (o, f) in lost.items())
        raise EcomstreamError(
            f"topic {topic!r} no longer holds records the tables have not got ({detail}): "
            "the reset would skip them; to go on without them add --fail-on-data-loss false"
        )
    start = {p: max(o, source.offsets[p][0]) for p, o in start.items()}
    # the marker first: a reset that dies rolling back is finished by the next start
    moved = files.move_aside() if ckpt.files else None
    _write_marker(files, topic, source, writer, start, last if undo else None)
    if writer is not None and undo:
        _roll_back_all(env, states, writer, last)
    log.warning(
        json.dumps(
            {
                "event": "checkpoint_reset",
                "topic": topic,
                "continues": writer,
                "rolled_back": {s.key: last for s in undo},
                "start": {str(p): o for p, o in sorted(start.items())},
                "old_checkpoint": moved,
            }
        )
    )
    return start


def _bronze_offsets(
    env: Environment, topic: str, version: int, spark: Callable[[], SparkSession]
) -> dict[int, int]:
    """The newest Kafka offset per partition of ``topic`` in bronze as of ``version``."""
    if version <= 0:
        return {}
    table = env.table("bronze/orders")
    local = table.local_path()
    if local is not None:
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        rows = DeltaTable(local, version=version).to_pyarrow_table(
            columns=["kafka_topic", "kafka_partition", "kafka_offset"]
        )
        rows = rows.filter(pc.equal(rows.column("kafka_topic"), topic))
        maxima = rows.group_by("kafka_partition").aggregate([("kafka_offset", "max")])
        return dict(
            zip(
                (int(p) for p in maxima.column("kafka_partition").to_pylist()),
                (int(o) for o in maxima.column("kafka_offset_max").to_pylist()),
                strict=True,
            )
        )
    from pyspark.sql import functions as F

    reader = spark().read.format("delta").option("versionAsOf", version)
    df = reader.load(table.path) if table.path is not None else reader.table(str(table.name))
    rows = (
        df.where(F.col("kafka_topic") == topic)
        .groupBy("kafka_partition")
        .agg(F.max("kafka_offset").alias("o"))
        .collect()
    )
    return {int(r["kafka_partition"]): int(r["o"]) for r in rows}


def _roll_back_all(env: Environment, states: list[TableState], writer: str, batch: int) -> None:
    for state in states:
        if state.mark is not None and (state.mark.writer, state.mark.batch) == (writer, batch):
            try:
                _roll_back(env, state, writer, env.spark)
            except EcomstreamError:
                raise
            except Exception as exc:
                raise EcomstreamError(
                    f"could not roll {state.key} back to version {state.mark.version - 1} "
                    f"({type(exc).__name__}); run the pipeline again to finish the reset"
                ) from None


def _roll_back(
    env: Environment, state: TableState, writer: str, spark: Callable[[], SparkSession]
) -> None:
    """RESTORE the table to the version before its newest batch, in a commit marked as the
    batch before (so the ledger and a later guard read what the table now holds)."""
    assert state.mark is not None
    target, note = state.mark.version - 1, marker(writer, state.mark.batch - 1)
    table = env.table(state.key)
    local = table.local_path()
    if local is not None:
        from deltalake import CommitProperties, DeltaTable

        DeltaTable(local).restore(
            target, commit_properties=CommitProperties(custom_metadata={"userMetadata": note})
        )
        return
    session = spark()
    key = "spark.databricks.delta.commitInfo.userMetadata"
    session.conf.set(key, note)
    try:
        table.delta_table(session).restoreToVersion(target)
    finally:
        session.conf.unset(key)
