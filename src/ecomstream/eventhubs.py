"""Azure Event Hubs' Kafka endpoint: from a connection string to client settings.

The connection string is a secret: it is registered with :func:`ecomstream.errors.redact` the
moment it is parsed, never part of a repr, and never quoted in an error.

Azure's endpoint presents a publicly trusted certificate, so production sets no CA file. The
local SASL_SSL proof (the embedded broker's ``--sasl-ssl-port``) presents a self-signed one:
``ECOMSTREAM_KAFKA_SSL_CAFILE`` (a PEM file) makes both kafka-python and Spark's Kafka source
trust it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecomstream.errors import EcomstreamError, register_secret

USERNAME = "$ConnectionString"
PORT = 9093
# Event Hubs closes idle connections after 240 s; stay under it.
CONNECTIONS_MAX_IDLE_MS = 180_000
REQUEST_TIMEOUT_MS = 60_000
SESSION_TIMEOUT_MS = 60_000

CA_FILE_ENV = "ECOMSTREAM_KAFKA_SSL_CAFILE"

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
    return {
        **extra,
        "bootstrap_servers": conn.bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": USERNAME,
        "sasl_plain_password": conn.connection_string,
        # version probing can make Azure reset the connection: pin it
        "api_version": (2, 0, 0),
        "connections_max_idle_ms": CONNECTIONS_MAX_IDLE_MS,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
    }


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
        "kafka.connections.max.idle.ms": str(CONNECTIONS_MAX_IDLE_MS),
    }
