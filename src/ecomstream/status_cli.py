"""``ecomstream status --data-dir D``: the pipeline's figures from its metrics table.

Works for a running or a finished pipeline, and without Spark: the metrics table is read with
delta-rs, so the answer comes in well under a second.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ecomstream.cli import add_option
from ecomstream.errors import EcomstreamError
from ecomstream.paths import DEFAULT_DATA_DIR

NO_METRICS_EXIT = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="per-layer throughput, lag, totals and freshness of a pipeline's data dir"
    )
    add_option(
        parser,
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the pipeline's data dir (holds metrics/pipeline_batches)",
    )
    add_option(
        parser,
        "--json",
        action="store_true",
        default=False,
        help="print one JSON object instead of the table",
    )
    add_option(
        parser,
        "--watch",
        type=_positive_float,
        default=None,
        help="reprint every WATCH seconds until Ctrl-C",
    )
    parser.set_defaults(func=_status)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def read_binding(data_dir: Path) -> dict[str, Any]:
    """``<data-dir>/_ecomstream.json`` (topic and window the tables hold), or {} if absent."""
    from ecomstream.demo.tables import BINDING_FILE

    path = Path(data_dir) / BINDING_FILE
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EcomstreamError(f"{path} is unreadable ({exc}); fix or remove it") from None
    return value if isinstance(value, dict) else {}


def current(data_dir: Path) -> tuple[Any, dict[str, Any]]:
    """(PipelineStatus, binding) for ``data_dir``; raises when it holds no metrics table."""
    from ecomstream.demo.status import summarize
    from ecomstream.demo.tables import METRICS, TableReader

    reader = TableReader(data_dir)
    if not reader.data_dir.is_dir():
        raise EcomstreamError(
            f"data dir {reader.data_dir} does not exist", exit_code=NO_METRICS_EXIT
        )
    snap = reader.read(METRICS)
    if snap.table is None:
        raise EcomstreamError(
            f"no pipeline metrics in {reader.path(METRICS)}: has 'ecomstream pipeline "
            f"--data-dir {data_dir}' run yet?",
            exit_code=NO_METRICS_EXIT,
        )
    status = summarize(snap.table.to_pylist(), metrics_version=snap.version)
    return status, read_binding(reader.data_dir)


def _status(args: argparse.Namespace) -> int:
    from ecomstream.demo.status import render_text

    while True:
        status, binding = current(args.data_dir)
        if args.json:
            print(json.dumps({**status.to_json(), "binding": binding}), flush=True)
        else:
            where = Path(args.data_dir).expanduser().resolve()
            topic = binding.get("topic", "?")
            window = binding.get("window", "?")
            print(
                f"data dir {where}  topic {topic}  window {window}  "
                f"metrics version {status.metrics_version}"
            )
            print(render_text(status), flush=True)
        if args.watch is None:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
        print()
