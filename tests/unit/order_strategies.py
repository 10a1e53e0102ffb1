"""Hypothesis strategies for order events, clean and dirty, and the frames tests feed Spark.

A generated *stream* is a list of Kafka records (partition, offset, payload bytes) holding
clean orders, every contract fault kind, exact duplicates (early and late), corrected re-sends
(a rejected record, then a valid one with the same order_id) and late events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ecomstream.schemas import KAFKA_SOURCE_SCHEMA

BASE_TIME = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
KAFKA_TIME = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One Kafka record as the source would deliver it."""

    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    topic: str = "orders"


def kafka_frame(spark, records: Sequence[Record]):  # type: ignore[no-untyped-def]
    """The Spark Kafka source's columns for ``records`` (what ``to_bronze`` receives)."""
    rows = [
        (
            r.key,
            None if r.value is None else bytearray(r.value),
            r.topic,
            r.partition,
            r.offset,
            KAFKA_TIME.replace(tzinfo=None),
            0,
        )
        for r in records
    ]
    return spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)


def payloads_to_records(
    payloads: Sequence[bytes | str | None], partitions: int = 1
) -> list[Record]:
    """Number payloads as Kafka would: round-robin over partitions, offsets ascending in each."""
    next_offset = [0] * partitions
    records = []
    for i, payload in enumerate(payloads):
        partition = i % partitions
        value = payload.encode() if isinstance(payload, str) else payload
        records.append(Record(partition, next_offset[partition], value))
        next_offset[partition] += 1
    return records


def clean_order(
    order_id: str | None = None,
    when: datetime = BASE_TIME,
    category: str = "Books",
    price: Any = "12.50",
    quantity: Any = 2,
    country: str = "US",
    city: str = "Austin",
) -> dict[str, Any]:
    """A well-formed event as a dict (serialise with :func:`dumps`)."""
    return {
        "order_id": order_id or str(uuid.uuid4()),
        "order_timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "customer_id": "C-1",
        "product_id": "P-1",
        "product_name": "A Book",
        "category": category,
        "price": price,
        "quantity": quantity,
        "currency": "USD",
        "payment_method": "paypal",
        "city": city,
        "state": "TX",
        "country": country,
    }


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim (``Raw("2.50")``, ``Raw("1e400")``, ``Raw("true")``)."""

    text: str


def dumps(event: Any) -> str:
    """JSON text of ``event``; :class:`Raw` values appear as their exact token."""
    tokens: list[str] = []

    def placeholder(value: Any) -> Any:
        if isinstance(value, Raw):
            tokens.append(value.text)
            return f"\u0000raw{len(tokens) - 1}\u0000"
        if isinstance(value, Decimal):
            return placeholder(Raw(str(value)))
        raise TypeError(f"not JSON serialisable: {value!r}")

    text = json.dumps(event, default=placeholder, ensure_ascii=False)
    for i, token in enumerate(tokens):
        text = text.replace(json.dumps(f"\u0000raw{i}\u0000"), token)
    return text
