"""``ecomstream pipeline``: Kafka -> bronze -> silver (+ quarantine) -> gold."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecomstream.cli import add_option
from ecomstream.jobs.settings import DEFAULT_MAX_BYTES_PER_TRIGGER, DEFAULT_MAX_OFFSETS_PER_TRIGGER
from ecomstream.paths import DEFAULT_DATA_DIR
from ecomstream.spark_cli import add_spark_options, spark_conf


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="run the streaming pipeline (bronze, silver, quarantine, gold)"
    )
    add_option(parser, "--bootstrap-servers", default="", help="Kafka bootstrap servers")
    add_option(parser, "--topic", default="", help="the topic the orders arrive on")
    add_option(
        parser,
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the tables and checkpoints live (local profile)",
    )
    add_option(
        parser,
        "--once",
        action="store_true",
        default=False,
        help="process everything on the topic now, update all tables, exit",
    )
    add_option(parser, "--window", default="1 minute", help="gold tumbling window size")
    add_option(parser, "--profile", default="local", help="environment: local | databricks")
    add_option(
        parser,
        "--trigger-interval",
        default="1 second",
        help="processing-time trigger of the continuous queries ('0' = back to back)",
    )
    add_option(
        parser,
        "--max-offsets-per-trigger",
        type=int,
        default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="records per micro-batch at most",
    )
    add_option(
        parser,
        "--max-bytes-per-trigger",
        default=DEFAULT_MAX_BYTES_PER_TRIGGER,
        help="no effect since one query writes every layer (kept so older command lines run)",
    )
    add_option(
        parser,
        "--starting-offsets",
        default="earliest",
        help="where a new bronze checkpoint starts on the topic: earliest | latest",
    )
    add_option(
        parser,
        "--wait-for-topic",
        type=float,
        default=0.0,
        help="seconds to wait for the topic to appear before failing",
    )
    add_option(
        parser,
        "--maintenance-interval",
        default="5 minutes",
        help="compact the appended tables this often in a continuous run ('0': never)",
    )
    add_option(
        parser,
        "--broker-outage-limit",
        type=float,
        default=60.0,
        help="seconds a continuous run waits for an unreachable broker before it stops "
        "with exit 1 (default 60)",
    )
    add_option(
        parser,
        "--categories",
        default="",
        help="comma-separated category catalogue (default: the contract's eight)",
    )
    add_option(
        parser,
        "--reset-checkpoints",
        action="store_true",
        default=False,
        help="replace a lost or foreign checkpoint by one rebuilt from the tables",
    )
    add_option(
        parser,
        "--fail-on-data-loss",
        type=_boolean,
        default=True,
        help="stop when the topic lost records not yet read (false: skip them)",
    )
    add_spark_options(parser)
    parser.set_defaults(func=_pipeline)


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _pipeline(args: argparse.Namespace) -> int:
    from ecomstream.jobs import pipeline
    from ecomstream.jobs.settings import PipelineSettings
    from ecomstream.native_output import native_stderr_to
    from ecomstream.paths import cache_dir

    extra: dict[str, Any] = {}
    if args.categories.strip():
        extra["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    settings = PipelineSettings(
        topic=args.topic,
        data_dir=args.data_dir,
        bootstrap_servers=args.bootstrap_servers,
        profile=args.profile,
        once=args.once,
        window=args.window,
        trigger_interval=args.trigger_interval,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        max_bytes_per_trigger=args.max_bytes_per_trigger,
        starting_offsets=args.starting_offsets,
        wait_for_topic_s=args.wait_for_topic,
        maintenance_interval=args.maintenance_interval,
        master=args.master,
        spark_conf=spark_conf(args),
        shared_data_dir=args.shared_data_dir,
        broker_outage_limit_s=args.broker_outage_limit,
        reset_checkpoints=args.reset_checkpoints,
        fail_on_data_loss=args.fail_on_data_loss,
        **extra,
    )
    # a full disk makes delta-rs print a Rust panic beside its error (native_output says why)
    with native_stderr_to(cache_dir() / "native.log"):
        pipeline.configure_logging()
        return pipeline.run(settings)
