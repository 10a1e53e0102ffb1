"""Hypothesis strategies for order events, clean and dirty, and the frames tests feed Spark.

A generated *stream* is a list of Kafka records (partition, offset, payload bytes) holding
clean orders, every contract fault kind, exact duplicates (early and late), corrected re-sends
(a rejected record, then a valid one with the same order_id) and late events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from ecomstream.catalogue import DEFAULT_CATEGORIES
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


# --- strategies ------------------------------------------------------------------------------

ABSENT = object()
"""A field value meaning: leave the field out of the event."""

# Fault kinds, named as the producer names them, each a way to spoil one field.
FAULT_KINDS = (
    "missing_order_id",
    "invalid_timestamp",
    "null_price",
    "invalid_price",
    "non_positive_price",
    "null_quantity",
    "invalid_quantity",
    "non_positive_quantity",
    "unknown_category",
)

MALFORMED_PAYLOADS: tuple[bytes | None, ...] = (
    None,
    b"",
    b"   ",
    b"not json",
    b"[1, 2]",
    b'[{"order_id": "x"}]',
    b"42",
    b'"a string"',
    b"true",
    b"null",
    b"{'order_id': 'x'}",
    b'{"price": NaN}',
    b'{"order_id": "a", "order_id": "b"}',
    b'{"order_id": "\xc3\x28"}',
    # not UTF-8: a surrogate, a code point past U+10FFFF, a Latin-1 byte in an otherwise clean order
    b"\xed\xa0\x80",
    b'{"order_id": "a\xf4\x90\x80\x80"}',
    dumps(clean_order(order_id="latin-1")).encode().replace(b"Austin", b"Aust\xefn"),
)


def _timestamp_text(when: datetime, style: int) -> str:
    """One instant written in several ISO-8601 spellings that all mean it."""
    if style == 0:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == 1:
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")
    if style == 2:
        return when.astimezone(timezone_of(5, 30)).isoformat(timespec="microseconds")
    if style == 3:
        local = when.astimezone(timezone_of(-8, 0)).isoformat(timespec="seconds")
        return local[:-3] + local[-2:]  # -0800
    if style == 4:
        return when.replace(tzinfo=None).isoformat(timespec="seconds")  # no offset: UTC
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")[:-1] + "789Z"


def timezone_of(hours: int, minutes: int):  # type: ignore[no-untyped-def]
    from datetime import timezone

    sign = 1 if hours >= 0 else -1
    return timezone(sign * timedelta(hours=abs(hours), minutes=minutes))


# Instants where calendar arithmetic goes wrong first: day, month and year ends, a leap day,
# the epoch (and before it, where truncating division differs from flooring), a pre-1970 year.
BOUNDARIES = tuple(
    datetime(*parts, tzinfo=UTC)
    for parts in (
        (2026, 12, 31, 23, 59, 59), (2027, 1, 1, 0, 0, 0), (2026, 11, 30, 23, 59, 30),
        (2028, 2, 29, 12, 0, 0), (2028, 2, 28, 23, 59, 59), (2028, 3, 1, 0, 0, 0),
        (1970, 1, 1, 0, 0, 0), (1969, 12, 31, 23, 59, 59), (1969, 12, 31, 23, 30, 0),
        (1955, 6, 30, 23, 59, 59), (1900, 3, 1, 0, 0, 0),
    )
)  # fmt: skip

event_times = st.one_of(
    st.builds(
        lambda seconds, micros: BASE_TIME + timedelta(seconds=seconds, microseconds=micros),
        # Late events reach hours back; most are within the last few minutes.
        st.one_of(st.integers(-600, 600), st.integers(-6 * 3600, 0)),
        st.integers(0, 999_999),
    ),
    st.builds(
        lambda base, seconds, micros: base + timedelta(seconds=seconds, microseconds=micros),
        st.sampled_from(BOUNDARIES),
        st.integers(-90, 90),
        st.integers(0, 999_999),
    ),
)

timestamps = st.builds(_timestamp_text, event_times, st.integers(0, 5))

_cents_values = st.decimals(
    min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2, allow_nan=False
)
valid_prices = st.one_of(
    _cents_values.map(lambda d: Raw(str(d))),
    _cents_values.map(str),
    st.decimals(min_value=Decimal("0.005"), max_value=Decimal("999.9999"), places=4).map(
        lambda d: Raw(str(d))
    ),
    st.sampled_from(
        [Raw("0.005"), Raw("9999999999.99"), Raw("1e2"), Raw("2.5E1"), " 12.5 ", "7", Raw("3")]
    ),
    # More digits than a double holds, often on the half-cent: exactness, not luck.
    st.builds(
        lambda cents, tail, sign: Raw(f"{cents // 100}.{cents % 100:02d}{sign}{tail}"),
        st.integers(1, 10**12 - 1),
        st.integers(10**14, 10**18),
        st.sampled_from(["4", "5", "49999999", "50000000"]),
    ),
)
invalid_prices = st.sampled_from(
    ["abc", "", Raw("true"), Raw("false"), {}, [1], "1,5", "Infinity", "0x10", Raw("1e400"),
     Raw("10000000000"), Raw("9999999999.995"), "1e30"]
)  # fmt: skip
non_positive_prices = st.sampled_from(
    [Raw("0"), Raw("-0.0"), "-3.5", Raw("0.004"), Raw("-10000000000"), "-0", Raw("-1e400")]
)
valid_quantities = st.one_of(
    st.integers(1, 50).map(lambda n: Raw(str(n))),
    st.integers(1, 50).map(str),
    st.sampled_from([Raw("2.0"), "3.00", Raw("1e1"), " 4 ", Raw("2147483647")]),
)
invalid_quantities = st.sampled_from(
    [Raw("2.5"), "2.5", "abc", Raw("true"), {}, [], "", Raw("2147483648"), "1e100"]
)
non_positive_quantities = st.sampled_from([Raw("0"), "-1", Raw("-2.5"), "0.0", Raw("-3e9")])
categories = st.sampled_from(DEFAULT_CATEGORIES)
unknown_categories = st.sampled_from(["books", "Electronics ", "Weapons", "", Raw("5"), ABSENT])

text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)  # any Unicode but lone surrogates


@st.composite
def clean_events(draw: st.DrawFn, order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "order_timestamp": draw(timestamps),
        "customer_id": draw(st.one_of(text, st.just(ABSENT), st.none())),
        "product_id": draw(text),
        # lone surrogate escapes: valid JSON, but no UTF-8 for the text (silver reads "?")
        "product_name": draw(
            st.one_of(text, st.sampled_from([Raw('"\\ud800"'), Raw('"a\\udc00b"')]))
        ),
        "category": draw(categories),
        "price": draw(valid_prices),
        "quantity": draw(valid_quantities),
        "currency": "USD",
        "payment_method": draw(st.sampled_from(["paypal", "credit_card", "gift_card"])),
        "city": draw(st.sampled_from(["Austin", "Paris", "S\u00e3o Paulo", "", ABSENT])),
        "state": draw(st.sampled_from(["TX", None, ABSENT])),
        "country": draw(st.sampled_from(["US", "FR", "BR", None])),
    }


def _spoil(draw: st.DrawFn, event: dict[str, Any], kind: str) -> None:
    if kind == "missing_order_id":
        event["order_id"] = draw(st.sampled_from([ABSENT, None, "", "  ", "\t\n"]))
    elif kind == "invalid_timestamp":
        event["order_timestamp"] = draw(
            st.sampled_from(
                [ABSENT, None, "", "yesterday", "2026", "2026-11-25", "2026-02-30T10:00:00Z",
                 "2026-11-25T24:00:00Z", "2026-11-25T10:00:00+19:00", "2026-11-25 10:00:00Z",
                 "2026-11-25T10:00:00Z\n", "1795601730"]
            )
        )  # fmt: skip
    elif kind == "null_price":
        event["price"] = draw(st.sampled_from([ABSENT, None]))
    elif kind == "invalid_price":
        event["price"] = draw(invalid_prices)
    elif kind == "non_positive_price":
        event["price"] = draw(non_positive_prices)
    elif kind == "null_quantity":
        event["quantity"] = draw(st.sampled_from([ABSENT, None]))
    elif kind == "invalid_quantity":
        event["quantity"] = draw(invalid_quantities)
    elif kind == "non_positive_quantity":
        event["quantity"] = draw(non_positive_quantities)
    elif kind == "unknown_category":
        event["category"] = draw(unknown_categories)
    else:  # pragma: no cover - a typo in FAULT_KINDS
        raise AssertionError(kind)


def event_bytes(event: dict[str, Any]) -> bytes:
    return dumps({k: v for k, v in event.items() if v is not ABSENT}).encode()


@st.composite
def streams(draw: st.DrawFn, max_orders: int = 40, max_partitions: int = 3) -> list[Record]:
    """A topic's worth of records: clean, faulty, malformed, duplicated, re-sent, late.

    Order ids come from a small pool so that, besides the explicit duplicates and re-sends,
    ids also collide by chance between unrelated events (valid or not).
    """
    pool = [f"order-{i}" for i in range(draw(st.integers(3, max_orders)))]
    payloads: list[bytes | None] = []
    for _ in range(draw(st.integers(1, max_orders))):
        action = draw(
            st.sampled_from(["clean", "clean", "faulty", "malformed", "duplicate", "resend"])
        )
        order_id = draw(st.sampled_from(pool))
        if action == "malformed":
            payloads.append(draw(st.sampled_from(MALFORMED_PAYLOADS)))
        elif action == "duplicate" and payloads:
            # An exact re-send of an earlier record, now or (placed by the shuffle) much later.
            payloads.append(draw(st.sampled_from(payloads)))
        else:
            event = draw(clean_events(order_id))
            if action in ("faulty", "resend"):
                for kind in draw(st.lists(st.sampled_from(FAULT_KINDS), min_size=1, max_size=3)):
                    _spoil(draw, event, kind)
            if action == "resend":
                payloads.append(event_bytes(event))
                event = draw(clean_events(order_id))  # the corrected re-send
            payloads.append(event_bytes(event))
    partitions = draw(st.integers(1, max_partitions))
    assignment = draw(
        st.lists(st.integers(0, partitions - 1), min_size=len(payloads), max_size=len(payloads))
    )
    next_offset = [draw(st.integers(0, 5)) for _ in range(partitions)]
    records = []
    for payload, partition in zip(payloads, assignment, strict=True):
        records.append(Record(partition, next_offset[partition], payload))
        next_offset[partition] += 1
    return records


def on_topics(examples: Sequence[Sequence[Record]]) -> list[list[Record]]:
    """Example ``i``'s records on topic ``s<i>``, so one frame can hold every example."""
    return [[replace(r, topic=f"s{i}") for r in records] for i, records in enumerate(examples)]


# --- hostile payloads (issue 11 case 5) ---------------------------------------------------------
# What a broken or malicious producer sends: big values, deep nesting, long numbers, many or long
# field names, invalid UTF-8, NUL bytes, tombstones, nothing. Each is still one Kafka record the
# contract places: bronze, and silver or quarantine with the reasons that apply to it.
# Jackson's defaults in Spark 4 would fail a parse past 1000 levels or 1000-digit numbers; the
# depths and lengths below straddle those limits. Field names stay under Jackson's fixed
# 50,000-character limit (the one the pipeline cannot lift, docs/operations.md).
JACKSON_LIMIT = 1000
depths = st.one_of(
    st.sampled_from([JACKSON_LIMIT - 1, JACKSON_LIMIT, JACKSON_LIMIT + 1]),
    st.integers(2, 20_000),
)


def nested(depth: int, inner: str = "1", kind: str = "[") -> str:
    """A JSON value ``depth`` levels deep: ``[[1]]`` or ``{"a":{"a":1}}``."""
    if kind == "[":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


# Integers of any length are read exactly. A fraction or exponent makes the token a double in
# from_json and, past 16 digits, a VARIANT re-read that holds 38 digits: past that the value is
# only as exact as a double (docs/rules.md, known limits), so those stay at 400 digits, where
# the outcome (too large for any column) does not depend on the lost digits.
long_numbers = st.one_of(
    st.builds(
        lambda digits, sign: Raw(f"{sign}{'9' * digits}"),
        st.one_of(
            st.sampled_from([16, 400, JACKSON_LIMIT, JACKSON_LIMIT + 1]), st.integers(1, 2000)
        ),
        st.sampled_from(["", "-"]),
    ),
    st.builds(
        lambda digits, sign, fraction: Raw(f"{sign}{'9' * digits}{fraction}"),
        st.sampled_from([16, 39, 400]),
        st.sampled_from(["", "-"]),
        st.sampled_from([".5", ".000"]),
    ),
)
# Spark reads a payload through an 8 KB buffer: values either side of it.
paddings = st.one_of(st.integers(0, 4096), st.integers(8_000, 20_000))


@st.composite
def hostile_payloads(draw: st.DrawFn, order_id: str) -> bytes | None:
    """One hostile payload; where it is an order, its id is ``order_id``."""
    kind = draw(
        st.sampled_from(
            ["big", "big_garbage", "deep", "deep_field", "invalid_utf8", "nul", "many_fields",
             "long_number", "long_name", "tombstone", "empty"]
        )
    )  # fmt: skip
    event = draw(clean_events(order_id))
    if kind == "big":  # a valid order padded by an unknown field
        event["padding"] = "x" * draw(paddings)
    elif kind == "big_garbage":
        return draw(st.sampled_from([b"x", b"{", b"\xff", b"9"])) * draw(paddings)
    elif kind == "deep":  # the whole payload nested: JSON, but no object; or an unclosed array
        depth, bracket = draw(depths), draw(st.sampled_from(["[", "{"]))
        return draw(
            st.sampled_from(
                [nested(depth, kind=bracket), "[" * depth, '{"x":' + nested(depth, kind=bracket)
                 + "}"]
            )
        ).encode()  # fmt: skip
    elif kind == "deep_field":
        value = Raw(nested(draw(depths), kind=draw(st.sampled_from(["[", "{"]))))
        event[draw(st.sampled_from(["extra", "price", "quantity"]))] = value
    elif kind == "invalid_utf8":
        raw = event_bytes(event)
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        return raw[:at] + bad + raw[at:]
    elif kind == "nul":
        choice = draw(st.integers(0, 2))
        if choice == 0:  # escaped: valid JSON, a NUL in the text
            event["product_name"] = "a\u0000b"
        elif choice == 1:  # raw NUL inside a string: a control character, not JSON
            return event_bytes(event).replace(b'"USD"', b'"U\x00SD"')
        else:
            return b"\x00" * draw(st.integers(1, 64))
    elif kind == "many_fields":
        fields = {f"f{i}": i for i in range(draw(st.sampled_from([10_000, 3])))}
        event = {**fields, **event} if draw(st.booleans()) else fields
    elif kind == "long_number":
        event[draw(st.sampled_from(["price", "quantity", "extra"]))] = draw(long_numbers)
    elif kind == "long_name":
        event["k" * draw(st.sampled_from([1000, 40_000, 49_999]))] = 1
    elif kind == "tombstone":
        return None
    else:
        return b""
    return event_bytes(event)


@st.composite
def hostile_streams(draw: st.DrawFn, max_records: int = 8) -> list[Record]:
    """A few hostile payloads among clean orders, ids from a small pool, one or two partitions."""
    pool = [f"h-{i}" for i in range(draw(st.integers(1, 4)))]
    payloads: list[bytes | None] = []
    for _ in range(draw(st.integers(1, max_records))):
        order_id = draw(st.sampled_from(pool))
        if draw(st.integers(0, 3)) == 0:
            payloads.append(event_bytes(draw(clean_events(order_id))))
        else:
            payloads.append(draw(hostile_payloads(order_id)))
    return payloads_to_records(payloads, draw(st.integers(1, 2)))
