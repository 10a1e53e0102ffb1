"""``ecomstream kafka start | status | stop``: the embedded single-node broker."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ecomstream.cli import add_option
from ecomstream.paths import DEFAULT_DATA_DIR

NOT_RUNNING_EXIT = 3  # as LSB init scripts' "status": program is not running


def register(subparsers: Any) -> None:
    kafka = subparsers.add_parser("kafka", help="embedded single-node Kafka broker (KRaft)")
    actions = kafka.add_subparsers(dest="kafka_action", required=True)

    start = actions.add_parser("start", help="start the broker and print its bootstrap address")
    add_option(start, "--port", type=int, default=9092, help="PLAINTEXT port on 127.0.0.1")
    _data_dir(start)
    add_option(
        start,
        "--foreground",
        action="store_true",
        default=False,
        help="stay attached; Ctrl-C stops the broker",
    )
    add_option(start, "--heap", default="768m", help="broker JVM max heap")
    add_option(
        start,
        "--sasl-ssl-port",
        type=int,
        default=None,
        help="also listen like Azure Event Hubs: SASL_SSL + PLAIN on localhost:PORT, user "
        "$ConnectionString, password from ECOMSTREAM_EVENTHUB_CONNECTION_STRING, "
        "self-signed certificate in <data-dir>/kafka/tls/ca.pem",
    )
    add_option(
        start,
        "--event-hubs",
        action="store_true",
        default=False,
        help="enforce what Event Hubs enforces: requests over 1,046,528 bytes closed, records "
        "over 1 MB refused, no topic auto-creation (see create-topic), idle connections closed "
        "after ECOMSTREAM_EVENTHUBS_IDLE_MS (default Azure's 240000), which clients also read",
    )
    start.set_defaults(func=_start)

    create = actions.add_parser(
        "create-topic", help="create a topic (an event hub) on the broker of this data dir"
    )
    add_option(create, "--topic", required=True, help="topic name")
    add_option(create, "--partitions", type=int, default=2, help="partition count (default 2)")
    _data_dir(create)
    create.set_defaults(func=_create_topic)

    for name, func, text in (
        ("status", _status, "is the broker of this data dir running? exit 0 yes, 3 no"),
        ("stop", _stop, "stop the broker of this data dir (clean shutdown)"),
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
        help="where the broker keeps its state (under <data-dir>/kafka)",
    )


def _start(args: argparse.Namespace) -> int:
    from ecomstream import broker

    # the password is read from the environment only, so it never shows in `ps`
    sasl = (
        {
            "sasl_ssl_port": args.sasl_ssl_port,
            "sasl_password": os.environ.get("ECOMSTREAM_EVENTHUB_CONNECTION_STRING"),
        }
        if args.sasl_ssl_port is not None
        else {}
    )
    options: dict[str, Any] = {"heap": args.heap, "event_hubs": args.event_hubs, **sasl}
    if args.foreground:
        broker.run_foreground(args.data_dir, args.port, **options)
        return 0
    info = broker.start(args.data_dir, args.port, **options)
    print(info.bootstrap)
    if info.event_hubs:
        from ecomstream import eventhubs

        print(
            "enforcing Event Hubs' limits: requests <= "
            f"{eventhubs.SERVICE_MAX_REQUEST_BYTES:,} bytes, record batches <= "
            f"{eventhubs.MAX_REQUEST_BYTES:,} bytes, idle connections closed after "
            f"{eventhubs.service_idle_ms():,} ms, no topic auto-creation",
            file=sys.stderr,
        )
    if info.sasl_ssl_bootstrap is not None:
        print(
            f"SASL_SSL listener {info.sasl_ssl_bootstrap} (PLAIN, user $ConnectionString); "
            f"clients trust {info.ca_file}",
            file=sys.stderr,
        )
    print(
        f"broker pid {info.pid}, data dir {info.data_dir}; stop it with "
        f"'ecomstream kafka stop --data-dir {args.data_dir}'",
        file=sys.stderr,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ecomstream import broker

    info = broker.running(args.data_dir)
    if info is None:
        print(f"not running (data dir {Path(args.data_dir).resolve()})")
        return NOT_RUNNING_EXIT
    sasl = f" sasl_ssl {info.sasl_ssl_bootstrap}" if info.sasl_ssl_bootstrap else ""
    shaped = " (Event Hubs limits)" if info.event_hubs else ""
    print(f"running {info.bootstrap}{sasl}{shaped} pid {info.pid} data dir {info.data_dir}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from ecomstream import broker

    info = broker.stop(args.data_dir)
    if info is None:
        print(f"no broker running for data dir {Path(args.data_dir).resolve()}")
    else:
        print(f"stopped broker pid {info.pid} ({info.bootstrap})")
    return 0


def _create_topic(args: argparse.Namespace) -> int:
    from ecomstream import broker

    info = broker.create_topic(args.data_dir, args.topic, args.partitions)
    print(f"topic {args.topic} with {args.partitions} partitions on {info.bootstrap}")
    return 0
