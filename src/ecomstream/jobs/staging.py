"""Where ``ecomstream reprocess`` builds the new tables, and how it switches them in.

The staging area is ``<state root>/_reprocess`` (the data dir on a laptop: beside the tables,
never inside one): ``state.json`` says which reprocess runs and how far it got, and
``run-<id>/<table key>`` holds the tables it builds. A reader of the real tables never looks
there, so a reprocess that dies while it builds leaves the old tables whole and readable.

The switch replaces each real table by its staged one in ONE Delta commit (an overwrite: every
old file removed, every new one added, atomically), marked like a pipeline batch
(:mod:`ecomstream.jobs.ledger`) plus the reprocess's run id. A reprocess that dies between two
switches is finished by the next run, which skips the tables whose newest commit carries its
run id; until then ``state.json`` exists and the pipeline refuses to start
(:func:`refuse_unfinished`), so no batch lands on a half-switched data dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ecomstream.adapters.base import BaseEnvironment, Environment, TableRef
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.checkpoint_state import Files
from ecomstream.jobs.checkpoints import QUERY

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

STATE_FILE = "state.json"
FOLDER = "_reprocess"
# reprocess metadata beside the batch marker in a switch commit's userMetadata
RUN_KEY = "reprocess"


def state_root(env: Environment) -> str:
    """The folder holding the checkpoints folder: the data dir of the local profile."""
    return env.checkpoint(QUERY).rstrip("/").rsplit("/", 2)[0]


def files(env: Environment) -> Files:
    return Files(f"{state_root(env)}/{FOLDER}", env.spark)


def read_state(env: Environment) -> dict[str, Any] | None:
    text = files(env).read(STATE_FILE)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise EcomstreamError(
            f"{files(env).root}/{STATE_FILE} is unreadable: run 'ecomstream reprocess' again "
            "after removing the _reprocess folder (the tables are whole either way)"
        )
    return value


def write_state(env: Environment, state: dict[str, Any]) -> None:
    files(env).write(STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")


def refuse_unfinished(env: Environment) -> None:
    """The pipeline's start-up check: a reprocess that has not finished owns the tables."""
    state = read_state(env)
    if state is None:
        return
    raise EcomstreamError(
        f"a reprocess of {state_root(env)} (to window {state.get('window')!r}) has not "
        "finished: run 'ecomstream reprocess' with the same settings again to finish it, then "
        "start the pipeline"
    )


class StagingEnvironment(BaseEnvironment):
    """The tables of one reprocess run under ``root``, on the real environment's Spark. No
    Kafka: the batch the stream runs reads the records bronze holds."""

    name = "staging"

    def __init__(self, env: Environment, root: str) -> None:
        self.env = env
        self.root = root.rstrip("/")

    def spark(self) -> SparkSession:
        return self.env.spark()

    def kafka_source_options(self) -> dict[str, str]:
        return {}

    def table(self, key: str) -> TableRef:
        return TableRef(path=f"{self.root}/{key}")

    def checkpoint(self, query: str) -> str:
        return f"{self.root}/_checkpoints/{query}"


def commit_note(writer: str, batch: int, run: dict[str, Any]) -> str:
    """A switch commit's userMetadata: the pipeline's batch marker (the table holds everything
    up to ``batch`` of ``writer``, as bronze does) and the reprocess run."""
    from ecomstream.jobs.ledger import MARKER

    value = {MARKER: {"writer": writer, "batch": batch}, RUN_KEY: run}
    return json.dumps(value, sort_keys=True)


def switched_by(table: TableRef, spark: SparkSession, run_id: str) -> bool:
    """Whether the newest commit of ``table`` is the switch of reprocess ``run_id``."""
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        commits = DeltaTable(local).history(1)
        note = commits[0].get("userMetadata") if commits else None
    else:
        rows = table.delta_table(spark).history(1).select("userMetadata").collect()
        note = rows[0]["userMetadata"] if rows else None
    try:
        value = json.loads(note) if isinstance(note, str) else None
    except ValueError:
        return False
    run = value.get(RUN_KEY) if isinstance(value, dict) else None
    return isinstance(run, dict) and run.get("id") == run_id


def overwrite(
    table: TableRef, source: TableRef, spark: SparkSession, note: str, key: str = ""
) -> None:
    """Replace every row of ``table`` by the rows of ``source`` in one commit.

    Two local tables on one filesystem: the staged table's data files move into the table's
    folder (a rename each: no row is read or written again) and one commit removes every old
    file and adds them, with the staged commits' own statistics. A file a commit does not name
    is no part of a Delta table, so until that commit readers see the old rows only; a rerun
    after a death between the renames and the commit finds the files moved and commits them.
    Elsewhere Spark copies the rows in an overwrite (also one commit)."""
    local, staged = table.local_path(), source.local_path()
    if local is not None and staged is not None:
        adopt(Path(local), Path(staged), note, key)
        return
    df = source.read(spark)
    table.save(df.write.format("delta").mode("overwrite").option("userMetadata", note))


def adopt(target: Path, staged: Path, note: str, key: str = "") -> None:
    from deltalake import CommitProperties, DeltaTable
    from deltalake.transaction import AddAction, RemoveAction

    from ecomstream.jobs.batch import crash_point

    actions: list[AddAction | RemoveAction] = []
    for add in live_files(staged):
        relative = unquote(add["path"])
        source, moved = staged / relative, target / relative
        if source.exists():
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, moved)
        elif not moved.exists():
            raise EcomstreamError(
                f"staged file {source} is gone: remove {staged.parent.parent} and reprocess again"
            )
        actions.append(
            AddAction(
                path=add["path"],
                size=int(add["size"]),
                partition_values=add.get("partitionValues") or {},
                modification_time=int(add["modificationTime"]),
                data_change=True,
                stats=add.get("stats") or "{}",
            )
        )
    crash_point(f"moved/{key}", 0)  # test hook: the files moved, not yet committed
    delta = DeltaTable(str(target))
    delta.create_write_transaction(
        actions,
        mode="overwrite",
        schema=delta.schema(),
        partition_by=delta.metadata().partition_columns or None,
        commit_properties=CommitProperties(custom_metadata={"userMetadata": note}),
    )


def live_files(table: Path) -> list[dict[str, Any]]:
    """The add actions of a staged table's files, from its JSON commits (a staged table is
    new: every commit is still there)."""
    live: dict[str, dict[str, Any]] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return list(live.values())


def overwrite_rows(table: TableRef, rows: pa.Table, spark: SparkSession, note: str) -> None:
    """Replace every row of ``table`` by ``rows`` (a small Arrow table) in one commit."""
    local = table.local_path()
    if local is not None:
        from deltalake import CommitProperties, DeltaTable, write_deltalake

        target = DeltaTable(local)
        schema = _arrow_schema(target)
        write_deltalake(
            target,
            rows.select(schema.names).cast(schema),
            mode="overwrite",
            commit_properties=CommitProperties(custom_metadata={"userMetadata": note}),
        )
        return
    df = spark.createDataFrame(rows)
    table.save(df.write.format("delta").mode("overwrite").option("userMetadata", note))


def _arrow_schema(delta: Any) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(delta.schema().to_arrow())


def remove_tree(root: str, spark: SparkSession | None = None) -> None:
    """Delete a staging folder and everything in it (absent: nothing to do)."""
    local = TableRef(path=root).local_path()
    if local is not None:
        import shutil

        shutil.rmtree(local, ignore_errors=True)
        return
    assert spark is not None
    jvm: Any = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(root)
    path.getFileSystem(spark._jsc.hadoopConfiguration()).delete(path, True)
