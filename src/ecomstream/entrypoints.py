"""Databricks ``python_wheel_task`` entry points: the pipeline and the producer.

Registered as console scripts of the wheel (``ecomstream-all``, ``ecomstream-produce``; the
older per-layer ``ecomstream-bronze``, ``-silver`` and ``-gold`` run the whole pipeline too),
which is where a wheel task looks its ``entry_point`` up. A task's ``parameters`` arrive as
``sys.argv[1:]``, e.g.::

    --trigger=available-now --topic=orders --catalog=main --schema=ecomstream
    --secret-scope=ecomstream --secret-key=eventhubs-connection-string

Every option also reads ``ECOMSTREAM_<OPTION>``. ``--trigger available-now`` drains what is on
the hub through every layer and returns. ``--trigger continuous`` keeps the query running on a
processing-time trigger until the run is cancelled.

The code below is the pipeline's own (``ecomstream.jobs``): the same query the laptop runs
with ``ecomstream pipeline``, against the databricks adapter.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ecomstream.cli import OneLineParser, add_option
from ecomstream.errors import EcomstreamError, redact

LAYERS = ("bronze", "silver", "gold")
TRIGGERS = ("available-now", "continuous")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    add_option(parser, "--profile", default="databricks", help="local | databricks")
    add_option(parser, "--topic", default="", help="the event hub (default: EntityPath)")
    add_option(
        parser,
        "--trigger",
        choices=TRIGGERS,
        default="available-now",
        help="available-now: drain and return; continuous: run until cancelled",
    )
    add_option(
        parser,
        "--trigger-interval",
        default="5 seconds",
        help="processing-time trigger of --trigger continuous",
    )
    add_option(parser, "--catalog", default=None, help="Unity Catalog catalog of the tables")
    add_option(parser, "--schema", default=None, help="Unity Catalog schema of the tables")
    add_option(
        parser,
        "--checkpoint-volume",
        default=None,
        help="UC volume in catalog.schema for the checkpoints (default checkpoints)",
    )
    add_option(
        parser,
        "--storage-root",
        default=None,
        help="abfss://<container>@<account>.dfs.core.windows.net/<base> instead of UC",
    )
    add_option(
        parser,
        "--data-dir",
        default="ecomstream-data",
        help="tables and checkpoints of the local profile / local-proof mode",
    )
    add_option(parser, "--bootstrap-servers", default="", help="Kafka (local profile only)")
    add_option(
        parser,
        "--secret-scope",
        default=None,
        help="Databricks secret scope of the connection string (default ecomstream)",
    )
    add_option(
        parser, "--secret-key", default=None, help="its key (default eventhubs-connection-string)"
    )
    add_option(parser, "--window", default="1 minute", help="gold tumbling window size")
    add_option(
        parser,
        "--max-offsets-per-trigger",
        type=int,
        default=100_000,
        help="records per bronze micro-batch at most",
    )
    add_option(
        parser,
        "--starting-offsets",
        default="earliest",
        help="where a new bronze checkpoint starts: earliest | latest",
    )
    add_option(
        parser,
        "--fail-on-data-loss",
        default="true",
        help="stop when retention removed events not yet read (true | false)",
    )
    add_option(parser, "--categories", default="", help="comma-separated category catalogue")
    return parser


def run(layers: Sequence[str], argv: Sequence[str], prog: str = "ecomstream-all") -> int:
    """Parse the task parameters and run ``layers`` of the pipeline; returns the exit code."""
    args = build_parser(prog).parse_args(list(argv))
    settings = _settings(args)
    extra = {
        "catalog": args.catalog,
        "schema": args.schema,
        "checkpoint_volume": args.checkpoint_volume,
        "storage_root": args.storage_root,
        "secret_scope": args.secret_scope,
        "secret_key": args.secret_key,
        "fail_on_data_loss": args.fail_on_data_loss,
    }
    return run_layers(settings, layers, {k: v for k, v in extra.items() if v is not None})


def _settings(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from ecomstream.jobs.settings import PipelineSettings

    extra: dict[str, Any] = {}
    if args.categories.strip():
        extra["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    topic = args.topic.strip() or _entity_path_topic()
    return PipelineSettings(
        topic=topic,
        data_dir=Path(args.data_dir),
        bootstrap_servers=args.bootstrap_servers,
        profile=args.profile,
        once=args.trigger == "available-now",
        window=args.window,
        trigger_interval=args.trigger_interval,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        starting_offsets=args.starting_offsets,
        **extra,
    )


def _entity_path_topic() -> str:
    """No --topic: the event hub a hub-scoped connection string in the environment names."""
    raw = os.environ.get("ECOMSTREAM_EVENTHUB_CONNECTION_STRING", "")
    if not raw:
        return ""
    from ecomstream.eventhubs import parse_connection_string

    return parse_connection_string(raw).entity_path or ""


def run_layers(settings: Any, layers: Sequence[str], adapter_extra: dict[str, Any]) -> int:
    """:func:`ecomstream.jobs.pipeline.run` on the cluster: one query writes every layer.

    ``layers`` only survives for the entry points of older bundles (``ecomstream-bronze`` ...):
    each of them now runs the whole pipeline, which a chained bronze -> silver -> gold job
    turns into one run that does the work and two that find nothing new.
    """
    import time

    from ecomstream import adapters
    from ecomstream.adapters.base import hook
    from ecomstream.jobs import checkpoints, pipeline, staging

    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise EcomstreamError(f"unknown layer {unknown[0]!r}: choose from {', '.join(LAYERS)}")
    os.environ["TZ"] = "UTC"
    time.tzset()
    pipeline.configure_logging()
    env = adapters.get(settings.profile, **{**settings.adapter_settings(), **adapter_extra})
    try:
        hook(env, "preflight")()
        staging.refuse_unfinished(env)
        hook(env, "bind")(settings.topic, settings.window, settings.categories)
        start = checkpoints.guard(env, settings)
        spark = env.spark()
        pipeline.ensure_tables(spark, env, settings)
        jobs = pipeline.make_jobs(env, settings, start)
        with pipeline._stop_on_sigterm():
            if settings.once:
                pipeline.run_once(jobs)
            else:
                pipeline.run_continuous(jobs)
        return 0
    finally:
        hook(env, "close")()


def _guarded(layers: Sequence[str], prog: str, argv: Sequence[str] | None = None) -> None:
    """Run, and turn failure into one redacted line and a non-zero exit (a failed task)."""
    code = _call(lambda: run(layers, sys.argv[1:] if argv is None else argv, prog))
    if code:
        raise SystemExit(code)


def _call(fn: Any) -> int:
    try:
        return int(fn() or 0)
    except EcomstreamError as exc:
        print(redact(f"ecomstream: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ecomstream: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("ECOMSTREAM_DEBUG"):  # asked for: the traceback, redacted too
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
            return 1
        first = (str(exc).splitlines() or [""])[0]
        print(redact(f"ecomstream: error: {type(exc).__name__}: {first}"), file=sys.stderr)
        return 1


def bronze(argv: Sequence[str] | None = None) -> None:
    """Kept for older bundles: the whole pipeline (see :func:`run_layers`)."""
    _guarded(("bronze",), "ecomstream-bronze", argv)


def silver(argv: Sequence[str] | None = None) -> None:
    """Kept for older bundles: the whole pipeline (see :func:`run_layers`)."""
    _guarded(("silver",), "ecomstream-silver", argv)


def gold(argv: Sequence[str] | None = None) -> None:
    """Kept for older bundles: the whole pipeline (see :func:`run_layers`)."""
    _guarded(("gold",), "ecomstream-gold", argv)


def all_layers(argv: Sequence[str] | None = None) -> None:
    """Event Hubs -> bronze, quarantine, silver and gold, one query."""
    _guarded(LAYERS, "ecomstream-all", argv)


def produce(argv: Sequence[str] | None = None) -> None:
    """``ecomstream produce`` for a load-test job; on a cluster without the connection string
    in the environment, it is read from the secret scope (``--secret-scope``/``--secret-key``
    are taken out of the parameters first)."""
    args = list(sys.argv[1:] if argv is None else argv)
    scope, key, rest = _take(args, "--secret-scope"), _take(args, "--secret-key"), args

    def go() -> int:
        from ecomstream.adapters import databricks
        from ecomstream.cli import main

        name = databricks.CONNECTION_STRING_ENV
        if not os.environ.get(name) and databricks.on_databricks():
            getter = databricks._cluster_secrets()
            os.environ[name] = databricks._get_secret(
                getter,
                scope or databricks.DEFAULT_SECRET_SCOPE,
                key or databricks.DEFAULT_SECRET_KEY,
            )
        return main(["produce", *rest])

    code = _call(go)
    if code:
        raise SystemExit(code)


def _take(args: list[str], option: str) -> str | None:
    """Remove ``option VALUE`` or ``option=VALUE`` from ``args``; its value, or None."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(option + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None


def reprocess(argv: Sequence[str] | None = None) -> None:
    """``ecomstream reprocess`` as a job: rebuild silver, quarantine and gold from bronze for
    the task's ``--window`` and ``--categories`` (docs/operations.md, "Change a rule and
    rebuild"). Pause the pipeline jobs first: a job has no lock to detect them by."""
    code = _call(lambda: run_reprocess(sys.argv[1:] if argv is None else argv))
    if code:
        raise SystemExit(code)


def reprocess_parser(prog: str = "ecomstream-reprocess") -> argparse.ArgumentParser:
    """The pipeline job's options (the same storage and secret settings), plus the dry run
    and the chunk size; ``--trigger`` and the source options are accepted and unused."""
    parser = build_parser(prog)
    add_option(
        parser, "--dry-run", action="store_true", default=False, help="compare, write nothing"
    )
    add_option(parser, "--chunk-rows", type=int, default=200_000, help="records per batch")
    return parser


def run_reprocess(argv: Sequence[str]) -> int:
    from ecomstream.jobs import pipeline
    from ecomstream.jobs import reprocess as job
    from ecomstream.jobs.reprocess_cli import categories

    args = reprocess_parser().parse_args(list(argv))
    extra = {
        "topic": args.topic.strip() or _entity_path_topic(),
        "catalog": args.catalog,
        "schema": args.schema,
        "checkpoint_volume": args.checkpoint_volume,
        "storage_root": args.storage_root,
        "secret_scope": args.secret_scope,
        "secret_key": args.secret_key,
    }
    settings = job.ReprocessSettings(
        data_dir=args.data_dir,
        window=args.window,
        profile=args.profile,
        dry_run=args.dry_run,
        chunk_rows=args.chunk_rows,
        adapter_extra={k: v for k, v in extra.items() if v},
        **categories(args.categories),
    )
    os.environ["TZ"] = "UTC"
    pipeline.configure_logging()
    return job.run(settings)
