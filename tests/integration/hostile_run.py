"""One topic of hostile payloads (issue 11 case 5) and drifted events (case 6), sent by the
project's own producer to the real broker and run through ONE in-process ``pipeline --once``;
``tests/integration/conftest.py`` shares the run between the two test modules (one pipeline
run, to save CI time).

Every record carries its kind as its Kafka key (one record carries a 1 MiB key instead), so
the tests find each one in bronze by ``kafka_key`` and check where the contract says it lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.test_pipeline_checks import order
from tests.kafka_helpers import send_with_producer, wait_for_records

MIB = 1024 * 1024
HUGE_KEY = b"k" * MIB
# what the contract's §3 says for a JSON object with none of the fields
ALL_FIELDS_MISSING = [
    "missing_order_id",
    "invalid_timestamp",
    "null_price",
    "null_quantity",
    "unknown_category",
]


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def with_raw(event: dict[str, Any], **tokens: str) -> bytes:
    """``event`` as JSON with each of ``tokens`` set to that exact JSON text."""
    marked = {**event, **{name: f"\u0000{name}\u0000" for name in tokens}}
    text = json.dumps(marked)
    for name, token in tokens.items():
        text = text.replace(json.dumps(f"\u0000{name}\u0000"), token)
    return text.encode()


def event(oid: str, **fields: Any) -> bytes:
    return json.dumps(order(oid, **fields)).encode()


# kind -> (payload, where the contract puts it: "silver" or the quarantine reasons)
HOSTILE: dict[str, tuple[bytes | None, str | list[str]]] = {
    "value_1mib_order": (json.dumps({**order("big-1"), "padding": "x" * MIB}).encode(), "silver"),
    "value_1mib_name": (event("big-2", product_name="n" * MIB), "silver"),
    "value_1mib_garbage": (b"x" * MIB, ["malformed_json"]),
    "value_1mib_invalid_utf8": (b"\xff" * MIB, ["malformed_json"]),
    # Jackson in Spark 4 stops at 1000 levels and 1000-digit numbers by default
    "deep_extra_field": (with_raw(order("deep-1"), extra=nested(50_000)), "silver"),
    "deep_without_order_id": (('{"x":' + nested(50_000) + "}").encode(), ALL_FIELDS_MISSING),
    "deep_price": (with_raw(order("deep-2"), price=nested(5_000)), ["invalid_price"]),
    "deep_array": (nested(50_000).encode(), ["malformed_json"]),
    "deep_unclosed": (b"[" * 100_000, ["malformed_json"]),
    "invalid_utf8_in_order": (
        event("utf-1", city="Lyon").replace(b"Lyon", b"Ly\xefn"),
        ["malformed_json"],
    ),
    "nul_escaped": (event("nul-1", product_name="a\u0000b"), "silver"),
    "nul_raw_in_string": (event("nul-2").replace(b'"USD"', b'"U\x00SD"'), ["malformed_json"]),
    "nul_only": (b"\x00" * 16, ["malformed_json"]),
    "fields_10000_order": (
        json.dumps({**{f"f{i}": i for i in range(10_000)}, **order("wide-1")}).encode(),
        "silver",
    ),
    "fields_10000_only": (
        json.dumps({f"f{i}": i for i in range(10_000)}).encode(),
        ALL_FIELDS_MISSING,
    ),
    "number_400_digit_price": (with_raw(order("num-1"), price="9" * 400), ["invalid_price"]),
    "number_400_digit_negative_quantity": (
        with_raw(order("num-2"), quantity="-" + "9" * 400),
        ["invalid_quantity", "non_positive_quantity"],
    ),
    "number_1200_digit_extra": (with_raw(order("num-3"), extra="1" * 1200), "silver"),
    "name_40000_chars": (json.dumps({**order("name-1"), "n" * 40_000: 1}).encode(), "silver"),
    "tombstone": (None, ["malformed_json"]),
    "empty": (b"", ["malformed_json"]),
}

# case 6: what an upstream schema change looks like on the topic
DRIFT: dict[str, tuple[bytes | None, str | list[str]]] = {
    "drift_extra_fields": (
        json.dumps({**order("drift-1"), "coupon": "WINTER", "loyalty": {"tier": "gold"}}).encode(),
        "silver",
    ),
    "drift_renamed_order_id": (
        json.dumps({**order("drift-2", order_id=None), "orderId": "drift-2"}).encode(),
        ["missing_order_id"],
    ),
    "drift_renamed_price": (
        json.dumps({**order("drift-3", price=None), "unit_price": "12.50"}).encode(),
        ["null_price"],
    ),
    "drift_camel_case": (
        json.dumps(
            {
                "orderId": "drift-4",
                "orderTimestamp": "2026-11-25T10:00:00Z",
                "unitPrice": 3,
                "qty": 1,
                "productCategory": "Books",
            }
        ).encode(),
        ALL_FIELDS_MISSING,
    ),
    "drift_price_object": (
        event("drift-5", price={"amount": "12.50", "currency": "USD"}),
        ["invalid_price"],
    ),
    "drift_price_bool": (event("drift-6", price=True), ["invalid_price"]),
    "drift_price_array": (event("drift-7", price=[12.5]), ["invalid_price"]),
    "drift_quantity_float_text": (event("drift-8", quantity="2.5"), ["invalid_quantity"]),
    "drift_quantity_float": (with_raw(order("drift-9"), quantity="2.5"), ["invalid_quantity"]),
    "drift_quantity_integral_float": (with_raw(order("drift-10"), quantity="2.0"), "silver"),
    "drift_timestamp_seconds": (
        event("drift-11", order_timestamp=1795601730),
        ["invalid_timestamp"],
    ),
    "drift_timestamp_millis": (
        with_raw(order("drift-12"), order_timestamp="1795601730123.0"),
        ["invalid_timestamp"],
    ),
    "drift_timestamp_object": (
        event("drift-13", order_timestamp={"$date": "2026-11-25"}),
        ["invalid_timestamp"],
    ),
}


@dataclass(frozen=True)
class HostileRun:
    topic: str
    data_dir: Path
    # (key, value) as sent, in the order sent
    sent: list[tuple[bytes | None, bytes | None]]


def send_and_run(broker: Any, tmp: Path) -> HostileRun:
    """Send every payload with the project's producer (confluent-kafka, as ``produce`` does),
    then one in-process ``pipeline --once``."""
    from ecomstream.jobs import pipeline
    from ecomstream.jobs.settings import PipelineSettings

    topic = broker.new_topic("hostile")
    sent: list[tuple[bytes | None, bytes | None]] = [
        (kind.encode(), payload) for kind, (payload, _) in {**HOSTILE, **DRIFT}.items()
    ]
    sent.append((HUGE_KEY, event("huge-key")))
    send_with_producer(broker.bootstrap, topic, sent)
    # every record is on the topic before the run (end offsets), so bronze must hold them all
    assert wait_for_records(broker.bootstrap, topic, len(sent), timeout_s=60) == len(sent)
    data_dir = tmp / "data"
    settings = PipelineSettings(
        topic=topic, data_dir=data_dir, bootstrap_servers=broker.bootstrap, once=True
    )
    assert pipeline.run(settings) == 0
    return HostileRun(topic, data_dir, sent)
