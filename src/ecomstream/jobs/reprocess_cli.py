"""``ecomstream reprocess``: rebuild silver, quarantine and gold from bronze (jobs/reprocess.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecomstream.cli import add_option
from ecomstream.jobs.settings import DEFAULT_MAX_OFFSETS_PER_TRIGGER
from ecomstream.paths import DEFAULT_DATA_DIR
from ecomstream.spark_cli import add_spark_options, spark_conf


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reprocess",
        help="rebuild silver, quarantine and gold from bronze under the current rules and "
        "the given window and catalogue",
    )
    add_option(
        parser,
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the pipeline's data dir (local profile)",
    )
    add_option(parser, "--window", default="1 minute", help="gold tumbling window size")
    add_option(
        parser,
        "--categories",
        default="",
        help="comma-separated category catalogue (default: the contract's eight)",
    )
    add_option(parser, "--profile", default="local", help="environment: local | databricks")
    add_option(
        parser,
        "--dry-run",
        action="store_true",
        default=False,
        help="print the rows per table now and after, and the windows that would change; "
        "write nothing",
    )
    add_option(
        parser,
        "--chunk-rows",
        type=int,
        default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="bronze records per rebuilt batch at most (bounds the driver's memory)",
    )
    add_spark_options(parser)
    parser.set_defaults(func=_reprocess)


def categories(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    return {"categories": tuple(c.strip() for c in text.split(",") if c.strip())}


def _reprocess(args: argparse.Namespace) -> int:
    from ecomstream.jobs import pipeline, reprocess
    from ecomstream.native_output import native_stderr_to
    from ecomstream.paths import cache_dir

    settings = reprocess.ReprocessSettings(
        data_dir=args.data_dir,
        window=args.window,
        profile=args.profile,
        dry_run=args.dry_run,
        chunk_rows=args.chunk_rows,
        master=args.master,
        spark_conf=spark_conf(args),
        shared_data_dir=args.shared_data_dir,
        **categories(args.categories),
    )
    with native_stderr_to(cache_dir() / "native.log"):
        pipeline.configure_logging()
        return reprocess.run(settings)
