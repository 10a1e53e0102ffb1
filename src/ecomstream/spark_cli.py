"""``ecomstream spark start | status | stop``: a standalone Spark cluster on this machine; and
the Spark options every command that runs the pipeline takes (``--master``, ``--spark-conf``,
``--shared-data-dir``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecomstream.cli import add_option
from ecomstream.paths import DEFAULT_DATA_DIR

NOT_RUNNING_EXIT = 3  # as LSB init scripts' "status": program is not running
# ``--master``'s variable: ECOMSTREAM_MASTER would not say which master
MASTER_ENV = "ECOMSTREAM_SPARK_MASTER"


# -- the pipeline's Spark options ---------------------------------------------------------------
def master_url(text: str) -> str:
    from ecomstream.spark import parse_master

    try:
        return parse_master(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def conf_pair(text: str) -> tuple[str, str]:
    """``key=value`` -> (key, value); the value may hold '=' and spaces, the key neither."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (e.g. spark.executor.memory=2g), got {text!r}"
        )
    if key == "spark.master":
        raise argparse.ArgumentTypeError("set the master with --master, not spark.master")
    return key, value


def add_spark_options(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--master",
        env=MASTER_ENV,
        type=master_url,
        default=None,
        help="Spark master: local[*] (default: every core of this machine), local[N], "
        "spark://host:port (e.g. 'ecomstream spark start'), k8s://https://host:port or yarn",
    )
    add_option(
        parser,
        "--spark-conf",
        action="append",
        type=conf_pair,
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, e.g. spark.executor.memory=2g (repeatable; the environment "
        "variable holds several, space-separated)",
    )
    add_option(
        parser,
        "--shared-data-dir",
        action="store_true",
        default=False,
        help="the data dir is mounted at the same path on every node of a remote cluster "
        "(NFS, a ReadWriteMany volume): needed with a master whose executors run elsewhere",
    )


def spark_conf(args: argparse.Namespace) -> dict[str, str]:
    """``--spark-conf`` pairs as a dict: a key given twice keeps its last value, so the command
    line's beat the environment variable's."""
    return dict(args.spark_conf or [])


# -- ecomstream spark ---------------------------------------------------------------------------
def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, at least 1")
    return int(text)


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} must be a TCP port, 0-65535 (0 = any free)")
    return int(text)


def _memory(text: str) -> str:
    from ecomstream.cluster import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    from ecomstream import cluster

    spark = subparsers.add_parser(
        "spark", help="a Spark standalone cluster on 127.0.0.1 (master and workers)"
    )
    actions = spark.add_subparsers(dest="spark_action", required=True)

    start = actions.add_parser(
        "start", help="start a master and N workers and print the master URL"
    )
    _data_dir(start)
    add_option(
        start,
        "--workers",
        env="ECOMSTREAM_SPARK_WORKERS",
        type=_count,
        default=cluster.DEFAULT_WORKERS,
        help=f"worker JVMs (default {cluster.DEFAULT_WORKERS})",
    )
    add_option(
        start,
        "--worker-cores",
        env="ECOMSTREAM_SPARK_WORKER_CORES",
        type=_count,
        default=cluster.DEFAULT_WORKER_CORES,
        help=f"cores each worker offers (default {cluster.DEFAULT_WORKER_CORES})",
    )
    add_option(
        start,
        "--worker-memory",
        env="ECOMSTREAM_SPARK_WORKER_MEMORY",
        type=_memory,
        default=cluster.DEFAULT_WORKER_MEMORY,
        help=f"memory each worker offers its executors (default {cluster.DEFAULT_WORKER_MEMORY}; "
        "an executor takes spark.executor.memory, 1g unless --spark-conf says otherwise)",
    )
    add_option(
        start,
        "--daemon-memory",
        env="ECOMSTREAM_SPARK_DAEMON_MEMORY",
        type=_memory,
        default=cluster.DEFAULT_DAEMON_MEMORY,
        help=f"heap of the master and of each worker daemon (default "
        f"{cluster.DEFAULT_DAEMON_MEMORY})",
    )
    add_option(
        start,
        "--port",
        env="ECOMSTREAM_SPARK_PORT",
        type=_port,
        default=cluster.DEFAULT_PORT,
        help=f"the master's port on 127.0.0.1 (default {cluster.DEFAULT_PORT}; 0 = any free)",
    )
    add_option(
        start,
        "--webui-port",
        env="ECOMSTREAM_SPARK_WEBUI_PORT",
        type=_port,
        default=cluster.DEFAULT_WEBUI_PORT,
        help=f"the master's web UI and JSON status page (default {cluster.DEFAULT_WEBUI_PORT}; "
        "0 = any free)",
    )
    start.set_defaults(func=_start)

    for name, func, text in (
        ("status", _status, "is the cluster of this data dir running? exit 0 yes, 3 no"),
        ("stop", _stop, "stop the workers and the master of this data dir"),
    ):
        action = actions.add_parser(name, help=text)
        _data_dir(action)
        action.set_defaults(func=func)


def _data_dir(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the cluster keeps its pid file, logs and work dirs (under <data-dir>/spark)",
    )


def _start(args: argparse.Namespace) -> int:
    from ecomstream import cluster

    info = cluster.start(
        args.data_dir,
        workers=args.workers,
        port=args.port,
        webui_port=args.webui_port,
        worker_cores=args.worker_cores,
        worker_memory=args.worker_memory,
        daemon_memory=args.daemon_memory,
    )
    print(info.master_url)
    print(
        f"master pid {info.master.pid}, web UI {info.webui_url}, {len(info.workers)} workers "
        f"({args.worker_cores} core(s), {args.worker_memory} each), logs in {info.spark_dir}; "
        f"run 'ecomstream pipeline --master {info.master_url} ...', stop with "
        f"'ecomstream spark stop --data-dir {args.data_dir}'",
        file=sys.stderr,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ecomstream import cluster

    info = cluster.running(args.data_dir)
    if info is None:
        print(f"not running (data dir {Path(args.data_dir).resolve()})")
        return NOT_RUNNING_EXIT
    state = cluster.master_state(info.master.webui_port)
    registered = len(cluster.alive_worker_ports(state))
    apps = len((state or {}).get("activeapps") or [])
    print(
        f"running {info.master_url} web UI {info.webui_url} pid {info.master.pid}; "
        f"workers: {len(info.alive_workers())} of {len(info.workers)} running, {registered} "
        f"registered ALIVE; {apps} active application(s); data dir {info.data_dir}"
    )
    return 0


def _stop(args: argparse.Namespace) -> int:
    from ecomstream import cluster

    info = cluster.stop(args.data_dir)
    if info is None:
        print(f"no Spark cluster running for data dir {Path(args.data_dir).resolve()}")
    else:
        workers = len(info.workers)
        print(f"stopped {info.master_url} (master pid {info.master.pid}, {workers} workers)")
    return 0
