"""``ecomstream produce``: realistic, seeded e-commerce orders onto a Kafka topic."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecomstream import eventhubs
from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.cli import add_option
from ecomstream.errors import EcomstreamError, redact

DEFAULT_DELIVERY_TIMEOUT_S = 120.0  # sender.DEFAULT_DELIVERY_TIMEOUT_S (no client import here)
DEFAULT_RATE = 200.0  # events/s: lively on a dashboard, light on a laptop
CONNECTION_ENV = "ECOMSTREAM_EVENTHUB_CONNECTION_STRING"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "produce",
        help="send realistic e-commerce orders (with optional faults) to a Kafka topic",
        description=(
            "Send seeded, realistic orders keyed by order_id. Stops after --count records or "
            "--duration seconds, or on Ctrl-C; always flushes and prints a summary."
        ),
    )
    add_option(p, "--bootstrap-servers", help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    add_option(p, "--topic", help="topic to send to (default with Event Hubs: its EntityPath)")
    add_option(p, "--count", type=int, help="send this many records, then stop")
    add_option(p, "--duration", type=float, help="send for this many seconds, then stop")
    add_option(
        p,
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"events per second; 0 = as fast as possible (default {DEFAULT_RATE:g})",
    )
    add_option(p, "--seed", type=int, help="same seed, same orders (default: random, printed)")
    add_option(
        p,
        "--fault-rate",
        type=float,
        default=0.0,
        help="fraction 0..1 of records that carry exactly one fault (default 0)",
    )
    add_option(
        p,
        "--start-time",
        help="event time of the first order (ISO-8601); then +1/rate s per order, "
        "so the whole run is reproducible (default: now, following the clock)",
    )
    add_option(
        p, "--categories", help="comma-separated category catalogue (default: the contract's eight)"
    )
    add_option(
        p,
        "--eventhub-connection-string",
        help="Azure Event Hubs connection string: bootstrap, topic and SASL_SSL from it",
    )
    add_option(
        p,
        "--client",
        choices=("kafka-python", "confluent"),
        help="Kafka client (default: confluent when installed, else kafka-python)",
    )
    add_option(
        p,
        "--compression",
        choices=("none", "gzip", "snappy", "lz4", "zstd"),
        help="batch compression (default none; with Event Hubs gzip, the one codec it takes)",
    )
    add_option(p, "--linger-ms", type=int, default=20, help="batching delay (default 20)")
    add_option(
        p,
        "--flush-timeout",
        type=float,
        default=60.0,
        help="seconds the final flush waits; records still unconfirmed then count as failed",
    )
    add_option(
        p,
        "--delivery-timeout",
        type=float,
        default=DEFAULT_DELIVERY_TIMEOUT_S,
        help="seconds each order is retried while the broker is away; once one goes "
        "unacknowledged that long the run stops and exits 1 "
        f"(default {DEFAULT_DELIVERY_TIMEOUT_S:g})",
    )
    add_option(p, "--summary-json", type=Path, help="also write the summary as JSON here")
    add_option(
        p,
        "--client-log",
        type=Path,
        help="where the Kafka client's newest log lines go when records failed or stalled "
        "(default: ecomstream-produce-<pid>-client.log in the temp dir)",
    )
    add_option(
        p,
        "--progress",
        choices=("auto", "live", "log", "off"),
        default="auto",
        help="live line on a terminal, log lines otherwise (auto), or off",
    )
    p.set_defaults(func=_produce)


@dataclass(frozen=True)
class ProduceSettings:
    """Every produce option, validated once."""

    bootstrap_servers: str
    topic: str
    count: int | None
    duration: float | None
    rate: float
    seed: int
    fault_rate: float
    start_time: dt.datetime | None
    categories: tuple[str, ...]
    client: str
    compression: str
    linger_ms: int
    flush_timeout: float
    delivery_timeout: float
    summary_json: Path | None
    security: dict[str, Any] = field(default_factory=dict, repr=False)  # the Event Hubs secret


def settings_from_args(args: argparse.Namespace) -> ProduceSettings:
    from ecomstream.producer.sender import default_client

    if args.count is not None and args.duration is not None:
        raise EcomstreamError("give --count or --duration, not both")
    if args.count is not None and args.count < 1:
        raise EcomstreamError(f"--count must be at least 1, not {args.count}")
    if args.duration is not None and not args.duration > 0:
        raise EcomstreamError(
            f"--duration must be a positive number of seconds, not {args.duration}"
        )
    if not args.rate >= 0 or args.rate == float("inf"):
        raise EcomstreamError(
            f"--rate must be 0 (as fast as possible) or a positive number, not {args.rate}"
        )
    if not 0.0 <= args.fault_rate <= 1.0:
        raise EcomstreamError(f"--fault-rate must be between 0 and 1, not {args.fault_rate}")
    if args.linger_ms < 0:
        raise EcomstreamError(f"--linger-ms must be 0 or more, not {args.linger_ms}")

    start_time = None
    if args.start_time:
        try:
            start_time = dt.datetime.fromisoformat(args.start_time)
        except ValueError:
            raise EcomstreamError(
                f"--start-time {args.start_time!r} is not an ISO-8601 time "
                "(e.g. 2026-11-25T10:00:00Z)"
            ) from None
        if start_time.tzinfo is None:
            start_time = start_time.replace(tzinfo=dt.UTC)

    categories = DEFAULT_CATEGORIES
    if args.categories:
        categories = tuple(
            dict.fromkeys(c.strip() for c in args.categories.split(",") if c.strip())
        )
        if not categories:
            raise EcomstreamError("--categories names no category")

    bootstrap, topic = args.bootstrap_servers, args.topic
    security: dict[str, Any] = {}
    compression = args.compression
    connection = args.eventhub_connection_string or os.environ.get(CONNECTION_ENV)
    if connection:
        conn = eventhubs.parse_connection_string(connection)  # registers it for redaction
        security = eventhubs.kafka_python_config(conn)
        bootstrap = str(security.pop("bootstrap_servers"))
        topic = topic or conn.entity_path
        if not topic:
            raise EcomstreamError(
                "no topic: give --topic or use a connection string with EntityPath=<event hub>"
            )
        compression = compression or "gzip"  # the codec Event Hubs' Kafka endpoint accepts
        if compression not in eventhubs.COMPRESSIONS:
            raise EcomstreamError(
                f"--compression {compression}: Event Hubs' Kafka endpoint accepts only "
                f"{' or '.join(eventhubs.COMPRESSIONS)}"
            )
    if not bootstrap:
        raise EcomstreamError(
            "no broker: give --bootstrap-servers (or ECOMSTREAM_BOOTSTRAP_SERVERS) or an "
            "Event Hubs connection string"
        )
    if not topic:
        raise EcomstreamError("no topic: give --topic (or ECOMSTREAM_TOPIC)")
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise EcomstreamError(
            f"topic {topic!r} is not a legal Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
        )
    if not args.flush_timeout > 0:
        raise EcomstreamError(f"--flush-timeout must be positive, not {args.flush_timeout}")
    if not 1 <= args.delivery_timeout < float("inf"):
        raise EcomstreamError(
            f"--delivery-timeout must be at least 1 second, not {args.delivery_timeout}"
        )

    client = args.client or default_client()
    if security and client == "kafka-python":
        # kafka-python refuses delivery_timeout_ms < linger_ms + request_timeout_ms, and Event
        # Hubs wants a 60 s request timeout: say so rather than fail to build the client
        least = (args.linger_ms + int(security["request_timeout_ms"])) / 1000
        if args.delivery_timeout < least:
            raise EcomstreamError(
                f"--delivery-timeout {args.delivery_timeout:g} is shorter than kafka-python "
                f"allows with Event Hubs' request timeout: at least {least:g}s (or --client "
                "confluent)"
            )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    return ProduceSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        count=args.count,
        duration=args.duration,
        rate=args.rate,
        seed=seed,
        fault_rate=args.fault_rate,
        start_time=start_time,
        categories=categories,
        client=client,
        # none: on loopback it measured fastest (CPU is the limit, not bytes), and any consumer
        # reads it; kafka-python cannot read lz4/zstd without extra codec packages
        compression=compression or "none",
        linger_ms=args.linger_ms,
        flush_timeout=args.flush_timeout,
        delivery_timeout=args.delivery_timeout,
        security=security,
        summary_json=args.summary_json,
    )


def _progress(mode: str) -> Any:
    from ecomstream.producer.progress import Progress

    if mode == "off":
        return None
    return Progress(sys.stderr, live=None if mode == "auto" else mode == "live")


def open_for(s: ProduceSettings) -> Any:
    """The sender for ``s``. With Event Hubs, the hub must exist (open_sender checks: Event
    Hubs creates none on first use), and an event over its limit is refused before it is
    sent."""
    from ecomstream.producer.sender import SenderSettings, open_sender

    sender = open_sender(
        SenderSettings(
            bootstrap_servers=s.bootstrap_servers,
            topic=s.topic,
            client=s.client,
            linger_ms=s.linger_ms,
            compression=s.compression,
            delivery_timeout_s=s.delivery_timeout,
            security=s.security,
        )
    )
    if not s.security:
        return sender
    from ecomstream.producer.oversize import OversizeGuard

    return OversizeGuard(sender, eventhubs.MAX_EVENT_BYTES)


def _produce(args: argparse.Namespace) -> int:
    from ecomstream.producer.generator import OrderGenerator
    from ecomstream.producer.runner import run

    s = settings_from_args(args)
    if s.summary_json is not None:
        try:
            s.summary_json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EcomstreamError(f"--summary-json {s.summary_json}: {exc.strerror}") from None
    generator = OrderGenerator(
        s.seed,
        fault_rate=s.fault_rate,
        categories=s.categories,
        start_time=s.start_time,
        rate=s.rate,
    )
    sender = open_for(s)
    try:
        summary = run(
            generator,
            sender,
            count=s.count,
            duration_s=s.duration,
            rate=s.rate,
            progress=_progress(args.progress),
            flush_timeout_s=s.flush_timeout,
        )
    finally:
        sender.close()
    summary.topic, summary.client = s.topic, s.client
    if summary.failed or summary.stalled_s:
        summary.client_log = _write_client_log(sender, args.client_log)
    # the error counts quote the clients' messages: redacted where they are printed and written
    print(redact(summary.text()), flush=True)
    if s.summary_json is not None:
        try:
            s.summary_json.write_text(redact(json.dumps(summary.to_json(), indent=2)) + "\n")
        except OSError as exc:
            raise EcomstreamError(f"--summary-json {s.summary_json}: {exc.strerror}") from None
    if summary.gave_up:
        raise _gave_up(s, summary)
    if summary.failed:
        return 1
    if summary.interrupted and (s.count is not None or s.duration is not None):
        return 130  # stopped before the work asked for was done
    return 0


def _write_client_log(sender: Any, path: Path | None) -> str | None:
    """The client's newest lines into ``path``: the evidence of a run that went wrong. A log
    that cannot be written is said in the summary, never an error of the run."""
    path = path or Path(tempfile.gettempdir()) / f"ecomstream-produce-{os.getpid()}-client.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sender.client_log.write(path)
    except OSError as exc:
        return f"not written ({path}: {exc.strerror})"
    return str(path)


def _gave_up(s: ProduceSettings, summary: Any) -> EcomstreamError:
    """The one line for a broker that stayed away longer than --delivery-timeout."""
    return EcomstreamError(
        f"Kafka at {s.bootstrap_servers} left orders unacknowledged for the whole "
        f"--delivery-timeout of {s.delivery_timeout:g}s, so the producer stopped: "
        f"{summary.acknowledged:,} of {summary.sent:,} sent acknowledged, {summary.failed:,} "
        "failed (a failed order may or may not be on the topic); is the broker running? "
        "(ecomstream kafka status)",
        exit_code=1,
    )
