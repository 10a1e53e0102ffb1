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
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment, hook
from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import staging
from ecomstream.jobs.rebuild import BRONZE, REBUILT, bronze_version, plan_chunks, stage
from ecomstream.jobs.settings import DEFAULT_MAX_OFFSETS_PER_TRIGGER, PROFILES, PipelineSettings

if TYPE_CHECKING:
    pass

log = logging.getLogger("ecomstream.pipeline")
METRICS = "metrics/pipeline_batches"
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
    shared_data_dir: bool = False
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
            shared_data_dir=self.shared_data_dir,
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
            settings = self.settings.pipeline_settings(self.binding["topic"])
            staged = stage(self.env, settings, root, state, self._saver(state))
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
        # a new reprocess: an unfinished one with other settings that had switched nothing,
        # or what a finished one could not remove any more, goes
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
