"""Azure Event Hubs' Kafka endpoint: from a connection string to client settings inside the
service's limits, and the limits the rehearsal broker enforces.

The connection string is a secret: it is registered with :func:`ecomstream.errors.redact` the
moment it is parsed, never part of a repr, and never quoted in an error.

Azure's endpoint presents a publicly trusted certificate, so production sets no CA file. The
local SASL_SSL proof (the embedded broker's ``--sasl-ssl-port``) presents a self-signed one:
``ECOMSTREAM_KAFKA_SSL_CAFILE`` (a PEM file) makes both kafka-python and Spark's Kafka source
trust it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecomstream.errors import EcomstreamError, register_secret

USERNAME = "$ConnectionString"
PORT = 9093

# -- Event Hubs' limits and the client settings that stay inside them ---------------------------
# One place for every Event Hubs client the project makes (producer on both clients, Spark's
# Kafka source, the pipeline's topic and offset probes) and for the rehearsal broker that
# enforces them (broker.start(event_hubs=True)). Microsoft's table, row by row, with the value
# used here: docs/databricks.md, "Event Hubs' client limits". The local endpoint keeps its own
# (producer/sender.py, broker.py).

# The service closes the connection of a request larger than this (it never answers it).
SERVICE_MAX_REQUEST_BYTES = 1_046_528
# Microsoft's recommended max.request.size (librdkafka: message.max.bytes, which bounds a whole
# ProduceRequest): a request of batches for several partitions stays under the service's limit.
MAX_REQUEST_BYTES = 1_000_000
# The largest event (key + value) the producer hands over: one event alone in a record batch
# (a 61-byte batch header and at most ~40 bytes of record framing, rounded up) in one request
# of at most MAX_REQUEST_BYTES. A larger one is refused before it is sent.
MAX_EVENT_BYTES = MAX_REQUEST_BYTES - 512
# Azure closes inbound connections idle for longer than this (240 s). A rehearsal can shorten
# it through IDLE_ENV: the rehearsal broker's connections.max.idle.ms and every client's derive
# from the same value, so the client side is always the shorter one.
SERVICE_IDLE_MS = 240_000
IDLE_ENV = "ECOMSTREAM_EVENTHUBS_IDLE_MS"
MIN_IDLE_MS = 2_000
# Clients close their idle connections and refresh metadata at 3/4 of the service's idle limit:
# 180,000 ms against Azure's 240,000 (Microsoft's recommended value for both).
CLIENT_IDLE_FRACTION = 0.75
# Microsoft: request.timeout.ms > 20,000 (Event Hubs' own minimum), 60,000 recommended.
REQUEST_TIMEOUT_MS = 60_000
# Microsoft: session.timeout.ms 6,000-300,000 (30,000 recommended). Spark's Kafka source assigns
# partitions itself and joins no group, so this bounds nothing there; 60,000 matches Event Hubs'
# Spark templates.
SESSION_TIMEOUT_MS = 60_000
# How long the producer's hub check may take (its client has just connected)
HUB_CHECK_TIMEOUT_MS = 10_000
# The only codec Event Hubs' Kafka endpoint accepts besides none
COMPRESSIONS = ("none", "gzip")

CA_FILE_ENV = "ECOMSTREAM_KAFKA_SSL_CAFILE"


def service_idle_ms() -> int:
    """Azure's idle limit (240,000 ms), or a rehearsal's shorter one from
    ``$ECOMSTREAM_EVENTHUBS_IDLE_MS``."""
    value = os.environ.get(IDLE_ENV, "").strip()
    if not value:
        return SERVICE_IDLE_MS
    try:
        idle = int(value)
    except ValueError:
        idle = -1
    if not MIN_IDLE_MS <= idle <= SERVICE_IDLE_MS:
        raise EcomstreamError(
            f"{IDLE_ENV}={value} must be a whole number of milliseconds from {MIN_IDLE_MS:,} to "
            f"{SERVICE_IDLE_MS:,} (Azure's own idle limit)"
        )
    return idle


def client_idle_ms(service_ms: int | None = None) -> int:
    """connections.max.idle.ms and metadata.max.age.ms of every Event Hubs client: under the
    service's idle limit, so a client closes an idle connection (and refreshes metadata on a
    live one) before the service drops it under a request."""
    return int((service_idle_ms() if service_ms is None else service_ms) * CLIENT_IDLE_FRACTION)


# Azure's endpoints carry no port (the Kafka endpoint is always 9093); one that does, e.g. the
# embedded broker's SASL_SSL listener ``sb://localhost:<port>/``, is honoured.
_ENDPOINT = re.compile(r"^sb://(?P<host>[A-Za-z0-9.-]+?)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class EventHubsConnection:
    """What a Kafka client needs. ``host`` is ``<namespace>.servicebus.windows.net`` (or, for the
    local SASL_SSL proof, whatever host the endpoint names); ``entity_path`` is the event hub."""

    host: str
    entity_path: str | None
    connection_string: str = field(repr=False)
    port: int = PORT

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def namespace(self) -> str:
        return self.host.split(".", 1)[0]


def parse_connection_string(value: str, *, port: int = PORT) -> EventHubsConnection:
    """Parse ``Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..]``."""
    register_secret(value)
    if not value or not value.strip():
        raise EcomstreamError("the Event Hubs connection string is empty")
    parts: dict[str, str] = {}
    for piece in value.strip().strip(";").split(";"):
        key, sep, val = piece.partition("=")
        if not sep:
            raise EcomstreamError(
                "the Event Hubs connection string is malformed: expected key=value pairs "
                "separated by ';' (Endpoint, SharedAccessKeyName, SharedAccessKey)"
            )
        parts[key.strip().lower()] = val.strip()
    missing = [
        k for k in ("endpoint", "sharedaccesskeyname", "sharedaccesskey") if not parts.get(k)
    ]
    if missing:
        names = {
            "endpoint": "Endpoint",
            "sharedaccesskeyname": "SharedAccessKeyName",
            "sharedaccesskey": "SharedAccessKey",
        }
        raise EcomstreamError(
            "the Event Hubs connection string is malformed: missing "
            + ", ".join(names[m] for m in missing)
        )
    match = _ENDPOINT.match(parts["endpoint"])
    if match is None:
        raise EcomstreamError(
            "the Event Hubs connection string is malformed: Endpoint must look like "
            "sb://<namespace>.servicebus.windows.net/"
        )
    register_secret(parts["sharedaccesskey"])
    return EventHubsConnection(
        host=match["host"],
        entity_path=parts.get("entitypath") or None,
        connection_string=value.strip(),
        port=int(match["port"]) if match["port"] else port,
    )


def ca_file_from_env() -> str | None:
    """``$ECOMSTREAM_KAFKA_SSL_CAFILE`` if set (checked to be a readable file), else None."""
    value = os.environ.get(CA_FILE_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise EcomstreamError(f"{CA_FILE_ENV}={value} is not a readable PEM file")
    return str(path.resolve())


def kafka_python_config(
    conn: EventHubsConnection, *, ca_file: str | None = None
) -> dict[str, object]:
    """kafka-python settings for the Event Hubs endpoint (producer or consumer).

    ``ca_file`` (default: ``$ECOMSTREAM_KAFKA_SSL_CAFILE``) adds a CA to trust; unset, the
    system's trust store applies, as Azure needs."""
    ca_file = ca_file or ca_file_from_env()
    extra: dict[str, object] = {"ssl_cafile": ca_file} if ca_file else {}
    idle = client_idle_ms()
    return {
        **extra,
        "bootstrap_servers": conn.bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": USERNAME,
        "sasl_plain_password": conn.connection_string,
        # version probing can make Azure reset the connection: pin it
        "api_version": (2, 0, 0),
        "connections_max_idle_ms": idle,
        "metadata_max_age_ms": idle,
        # kafka-python's consumer wants connections_max_idle_ms > request_timeout_ms: true of
        # 180,000 > 60,000; a rehearsal that shortens the idle limit shortens this with it
        "request_timeout_ms": min(REQUEST_TIMEOUT_MS, idle - 1),
        # TCP keepalive, as Microsoft asks of librdkafka (the Java client sets it on its own)
        "socket_options": [
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ],
    }


def kafka_python_producer_config() -> dict[str, object]:
    """What a kafka-python producer adds to :func:`kafka_python_config` (consumers and admin
    clients refuse these keys)."""
    return {"max_request_size": MAX_REQUEST_BYTES}


def librdkafka_config(security: dict[str, Any]) -> dict[str, Any]:
    """librdkafka (confluent-kafka) producer settings for Event Hubs, from the kafka-python
    settings :func:`kafka_python_config` made (the producer carries those)."""
    config: dict[str, Any] = {
        "security.protocol": security["security_protocol"],
        "sasl.mechanisms": security["sasl_mechanism"],
        "sasl.username": security["sasl_plain_username"],
        "sasl.password": security["sasl_plain_password"],
        # bounds a whole ProduceRequest, not one message
        "message.max.bytes": MAX_REQUEST_BYTES,
        "request.timeout.ms": security.get("request_timeout_ms", REQUEST_TIMEOUT_MS),
        "connections.max.idle.ms": security.get("connections_max_idle_ms", client_idle_ms()),
        "metadata.max.age.ms": security.get("metadata_max_age_ms", client_idle_ms()),
        "socket.keepalive.enable": True,
    }
    if security.get("ssl_cafile"):  # a CA to trust besides the system's (the local rehearsal)
        config["ssl.ca.location"] = security["ssl_cafile"]
    return config


def jaas_config(conn: EventHubsConnection, *, shaded: bool) -> str:
    """The JAAS line; Databricks runtimes shade the Kafka client as ``kafkashaded.``."""
    prefix = "kafkashaded." if shaded else ""
    password = conn.connection_string.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"{prefix}org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USERNAME}" password="{password}";'
    )


def spark_kafka_options(
    conn: EventHubsConnection, *, shaded: bool, ca_file: str | None = None
) -> dict[str, str]:
    """Options for Spark's Kafka source (``kafka.``-prefixed client settings).

    ``ca_file`` (default: ``$ECOMSTREAM_KAFKA_SSL_CAFILE``) becomes a PEM truststore, which
    Kafka's Java client reads directly (``ssl.truststore.type=PEM``)."""
    ca_file = ca_file or ca_file_from_env()
    idle = client_idle_ms()
    extra = (
        {"kafka.ssl.truststore.location": ca_file, "kafka.ssl.truststore.type": "PEM"}
        if ca_file
        else {}
    )
    return {
        **extra,
        "kafka.bootstrap.servers": conn.bootstrap,
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.jaas.config": jaas_config(conn, shaded=shaded),
        "kafka.request.timeout.ms": str(REQUEST_TIMEOUT_MS),
        "kafka.session.timeout.ms": str(SESSION_TIMEOUT_MS),
        "kafka.connections.max.idle.ms": str(idle),
        "kafka.metadata.max.age.ms": str(idle),
    }


def spark_session_conf(service_ms: int | None = None) -> dict[str, str]:
    """Spark settings for Event Hubs that belong to the session, not the source (static: set
    when the session starts; on Databricks in the job cluster's spark_conf, resources/).

    Spark keeps a Kafka consumer per partition in a pool between micro-batches and polls it
    only when a batch has data, so in a quiet period that consumer's own
    connections.max.idle.ms never gets a chance to act and the service closes its connection.
    The pool closes such a consumer first. Its bootstrap connection may already have idled for
    up to the clients' idle limit when the consumer goes back to the pool, which leaves a
    third of that limit before the service's: idle for an eighth of it, looked for every
    sixteenth (the pool tests three consumers a run, so two runs for a partition's worth):
    closed within a quarter. Azure: 22.5 s and 11.25 s, so 180 + 45 s < 240 s. Measured on the
    rehearsal broker: at a half and a quarter the broker still closed one consumer connection
    of eight; at a sixth and a twelfth, none."""
    idle = client_idle_ms(service_ms)
    return {
        "spark.kafka.consumer.cache.timeout": f"{idle // 8}ms",
        "spark.kafka.consumer.cache.evictorThreadRunInterval": f"{idle // 16}ms",
    }


def broker_overrides(service_ms: int | None = None) -> dict[str, str]:
    """server.properties of the Event Hubs-shaped rehearsal broker: what Event Hubs enforces and
    Apache Kafka lets through by default. Both limits are broker-wide in Kafka 4.1 (its
    ``Acceptor`` reads ``socket.request.max.bytes`` and ``connections.max.idle.ms`` without a
    listener prefix), so they hold on every listener of that broker."""
    return {
        # a larger request: the connection is closed, as the service does
        "socket.request.max.bytes": str(SERVICE_MAX_REQUEST_BYTES),
        # a larger record batch (one event over the limit): MESSAGE_TOO_LARGE
        "message.max.bytes": str(MAX_REQUEST_BYTES),
        "replica.fetch.max.bytes": str(MAX_REQUEST_BYTES),
        # idle connections closed by the server
        "connections.max.idle.ms": str(service_idle_ms() if service_ms is None else service_ms),
        # an event hub exists before anyone writes to it
        "auto.create.topics.enable": "false",
    }


def require_hub(config: dict[str, Any], topic: str, *, namespace: str, timeout_ms: int) -> None:
    """The endpoint answers within ``timeout_ms``, accepts the credentials and has the event hub
    ``topic``; else one :class:`EcomstreamError`. Event Hubs creates no topic on first use (nor
    does the rehearsal broker): a missing hub is named here, not found out by records that time
    out."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    bootstrap = config["bootstrap_servers"]
    try:
        # bounded: a wrong key makes kafka-python retry forever unless told when to stop
        admin = KafkaAdminClient(**config, bootstrap_timeout_ms=timeout_ms)
    except (KafkaError, OSError, ValueError) as exc:
        raise EcomstreamError(
            f"Event Hubs Kafka endpoint {bootstrap} is unreachable or refused the "
            f"connection string ({type(exc).__name__} within {timeout_ms // 1000}s)"
        ) from None
    try:
        topics = set(admin.list_topics())
    except (KafkaError, OSError) as exc:
        raise EcomstreamError(
            f"Event Hubs Kafka endpoint {bootstrap} did not list its event hubs "
            f"({type(exc).__name__})"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    if topic not in topics:
        raise EcomstreamError(
            f"event hub {topic!r} does not exist in namespace {namespace!r} (or the connection "
            "string may not read it): Event Hubs creates none on first use; create it first "
            "(az eventhubs eventhub create, or on the rehearsal broker ecomstream kafka "
            "create-topic)"
        )


def require_producer_hub(bootstrap: str, security: dict[str, Any], topic: str) -> None:
    """:func:`require_hub` for the producer, whose client has just proven the endpoint answers
    and takes the credentials (its own errors say so when it does not)."""
    require_hub(
        {**security, "bootstrap_servers": bootstrap},
        topic,
        namespace=bootstrap.rpartition(":")[0].split(".", 1)[0],
        timeout_ms=HUB_CHECK_TIMEOUT_MS,
    )
