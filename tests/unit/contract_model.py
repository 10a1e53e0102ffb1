"""A plain-Python model of the contract's bronze, silver and gold rules (CONTRACT.md §2-§4).

Written independently of ``ecomstream.transforms``: Python's ``json`` module (strict: no
trailing data, no NaN; a duplicate name: the last one wins), ``Decimal`` for
money, its own patterns. The property tests check Spark against it row by row.

Decisions it encodes (docs/rules.md explains each): a price/quantity that is a string holding a
number counts as that number (surrounding JSON whitespace allowed); a quantity is an integer when
its value is integral (``2``, ``2.0``, ``"2.0"``, ``1e1``); values that do not fit decimal(12,2)
or int are invalid; price rounds half-up to cents and ``non_positive_price`` is judged on the
rounded price; a timestamp without offset is UTC; fractions beyond microseconds are truncated;
a payload that is not valid UTF-8 is malformed, kept as Python's ``decode(errors="replace")``
in ``raw_value`` and byte for byte in ``raw_bytes``; a lone surrogate escape (``"\\ud800"``) in
a text field reads as ``?``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from ecomstream.catalogue import DEFAULT_CATEGORIES

REASONS = (
    "malformed_json",
    "missing_order_id",
    "invalid_timestamp",
    "null_price",
    "invalid_price",
    "non_positive_price",
    "null_quantity",
    "invalid_quantity",
    "non_positive_quantity",
    "unknown_category",
    "total_out_of_range",
)
PLAIN_FIELDS = (
    "customer_id", "product_id", "product_name", "category", "currency", "payment_method",
    "city", "state", "country",
)  # fmt: skip

_WS = " \t\n\r"
_NUMBER = re.compile(
    r"[ \t\n\r]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r]*"
)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,
)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
CENT = Decimal("0.01")
_ABSENT = object()


@dataclass
class Outcome:
    """Where every bronze record goes."""

    silver: dict[str, dict[str, Any]] = field(default_factory=dict)  # order_id -> row
    # every record -> (raw_value, raw_bytes), as bronze and quarantine hold them
    raw: dict[tuple[int, int], tuple[str | None, bytes | None]] = field(default_factory=dict)
    quarantine: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    valid: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    duplicates: set[tuple[int, int]] = field(default_factory=set)


def raw_columns(raw: bytes | None) -> tuple[str | None, bytes | None]:
    """``(raw_value, raw_bytes)`` of a payload: text that is valid UTF-8 whatever arrived (each
    invalid sequence one U+FFFD, Python's "maximal subpart" replacement), and the bytes
    themselves only when they are not valid UTF-8."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), raw


def parse_object(raw: bytes | None) -> dict[str, Any] | None:
    """The payload as a dict when it is exactly one JSON object, else None (malformed)."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
        # Duplicate names: the last one wins (RFC 8259 leaves it open; Jackson and json agree).
        value = _loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _loads(text: str) -> Any:
    """``json.loads``, strict, for any depth and any length of number: the contract sets no
    limit on either, so a payload nested 50,000 deep or holding a 5,000-digit number is JSON."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_int, parse_constant=_refuse)
    except RecursionError:
        return _deep_loads(text)


def _int(token: str) -> int | Decimal:
    # Python refuses to convert an int of more than 4,300 digits (a DoS guard): keep it exact
    return int(token) if len(token) < 4000 else Decimal(token)


def _deep_loads(text: str) -> Any:
    """``json``'s decoder recurses per level of nesting: give it a thread with stack and a
    recursion limit for as many levels as the text has brackets."""
    depth = text.count("[") + text.count("{")
    result: list[Any] = []
    failure: list[BaseException] = []

    def parse() -> None:
        try:
            result.append(
                json.loads(text, parse_float=Decimal, parse_int=_int, parse_constant=_refuse)
            )
        except BaseException as error:  # handed back to the caller's thread
            failure.append(error)

    limit, stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(limit, 2 * depth + 1000))
    threading.stack_size(min(max(depth * 1024, 32 * 1024 * 1024), 1024 * 1024 * 1024))
    try:
        worker = threading.Thread(target=parse)
        worker.start()
        worker.join()
    finally:
        sys.setrecursionlimit(limit)
        threading.stack_size(stack)
    if failure:
        raise failure[0]
    return result[0]


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def number_of(value: Any) -> Decimal | None:
    """A JSON number, or a string holding one, as an exact Decimal; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return Decimal(value.strip(_WS))
    return None


def utc_timestamp(value: Any) -> datetime | None:
    """ISO-8601 text -> naive UTC datetime (microseconds, truncated), else None."""
    if not isinstance(value, str):
        return None
    m = _TIMESTAMP.fullmatch(value)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micros = int((m.group(7) or "").ljust(6, "0")[:6])
    offset = timedelta(0)
    if m.group(8) and m.group(8) != "Z":
        hours, minutes = int(m.group(10)), int(m.group(11) or 0)
        if hours > 18 or minutes > 59 or (hours == 18 and minutes):
            return None
        offset = timedelta(hours=hours, minutes=minutes) * (1 if m.group(9) == "+" else -1)
    try:
        local = datetime(year, month, day, hour, minute, second, micros)
    except ValueError:
        return None
    return local - offset


def check(raw: bytes | None, categories: Iterable[str] = DEFAULT_CATEGORIES):
    """-> (reasons, typed row or None). The row has the silver event and derived columns."""
    event = parse_object(raw)
    if event is None:
        return ["malformed_json"], None
    get = event.get
    reasons: list[str] = []

    order_id = _text(get("order_id"))
    if order_id is None or order_id.strip(" \t\n\r\f\v") == "":
        reasons.append("missing_order_id")

    when = utc_timestamp(get("order_timestamp"))
    if when is None:
        reasons.append("invalid_timestamp")

    price_value = get("price")
    price = None
    if price_value is None:
        reasons.append("null_price")
    else:
        number = number_of(price_value)
        rounded = _cents(number)
        if rounded is not None and abs(rounded) < 10**10:
            price = rounded
        else:
            reasons.append("invalid_price")
        if number is not None and (rounded if price is not None else number) <= 0:
            reasons.append("non_positive_price")

    quantity_value = get("quantity")
    quantity = None
    if quantity_value is None:
        reasons.append("null_quantity")
    else:
        number = number_of(quantity_value)
        if number is not None and number == number.to_integral_value():
            if _INT_MIN <= number <= _INT_MAX:
                quantity = int(number)
        if quantity is None:
            reasons.append("invalid_quantity")
        if number is not None and number <= 0:
            reasons.append("non_positive_quantity")

    category = get("category")
    if not (isinstance(category, str) and category in set(categories)):
        reasons.append("unknown_category")

    total = None
    if price is not None and quantity is not None:
        total = price * quantity
        if abs(total) >= 10**12:
            reasons.append("total_out_of_range")

    if reasons:
        return reasons, None
    assert when is not None and price is not None and quantity is not None
    row = {
        "order_id": order_id,
        "order_timestamp": when,
        **{name: _text(get(name, None)) for name in PLAIN_FIELDS},
        "price": price,
        "quantity": quantity,
        "total_amount": total,
        "order_date": when.date(),
        "order_hour": when.hour,
        "price_band": _price_band(price),
    }
    return [], row


def _cents(number: Decimal | None) -> Decimal | None:
    if number is None or not number.is_finite() or abs(number) >= 10**12:
        return None
    with localcontext() as ctx:
        ctx.prec = 100
        try:
            return number.quantize(CENT, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return None


def _text(value: Any) -> str | None:
    """A field as silver text: strings as sent; integers and booleans as their JSON token.

    Text is UTF-8 in silver, where a lone surrogate (from an escape like ``"\\udc00"``) has no
    encoding: it becomes ``?``, as UTF-8 encoders with errors="replace" (Python's, Java's) do."""
    if value is None:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise NotImplementedError(f"the model does not say how {value!r} reads as text")


def _price_band(price: Decimal) -> str:
    if price < 25:
        return "under_25"
    if price < 100:
        return "25_to_100"
    if price < 500:
        return "100_to_500"
    return "500_plus"


def run(
    records: Sequence[tuple[int, int, bytes | None]],
    categories: Iterable[str] = DEFAULT_CATEGORIES,
) -> Outcome:
    """Records (partition, offset, payload) -> where each one lands, per the contract."""
    outcome = Outcome()
    for partition, offset, raw in sorted(records, key=lambda r: (r[0], r[1])):
        outcome.raw[(partition, offset)] = raw_columns(raw)
        reasons, row = check(raw, categories)
        if row is None:
            outcome.quarantine[(partition, offset)] = reasons
            continue
        row = {**row, "kafka_partition": partition, "kafka_offset": offset}
        outcome.valid[(partition, offset)] = row
        if row["order_id"] in outcome.silver:
            outcome.duplicates.add((partition, offset))
        else:
            outcome.silver[row["order_id"]] = row
    return outcome


def window_start(when: datetime, seconds: float) -> datetime:
    epoch = datetime(1970, 1, 1)
    micros = (when - epoch) // timedelta(microseconds=1)
    size = round(seconds * 1_000_000)
    return epoch + timedelta(microseconds=micros - micros % size)


def category_sales(silver: Iterable[dict[str, Any]], seconds: float) -> dict[tuple, tuple]:
    """(window_start, window_end, category) -> (order_count, units_sold, revenue, avg)."""
    return _sales(silver, seconds, ("category",), with_average=True)


def location_sales(silver: Iterable[dict[str, Any]], seconds: float) -> dict[tuple, tuple]:
    """(window_start, window_end, country, city) -> (order_count, units_sold, revenue)."""
    return _sales(silver, seconds, ("country", "city"), with_average=False)


def _sales(rows, seconds, keys, with_average):  # type: ignore[no-untyped-def]
    groups: dict[tuple, list[Any]] = {}
    for row in rows:
        start = window_start(row["order_timestamp"], seconds)
        key = (start, start + timedelta(seconds=seconds), *(row[k] for k in keys))
        acc = groups.setdefault(key, [0, 0, Decimal("0.00")])
        acc[0] += 1
        acc[1] += row["quantity"]
        acc[2] += row["total_amount"]
    result = {}
    for key, (count, units, revenue) in groups.items():
        if with_average:
            cents = int(revenue * 100)
            average = Decimal((2 * cents + count) // (2 * count)) / 100
            result[key] = (count, units, revenue, average.quantize(CENT))
        else:
            result[key] = (count, units, revenue)
    return result


def epoch_micros(when: datetime) -> int:
    return (when - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC)


def naive_utc(value: Any) -> Any:
    """An aware datetime (as delta-rs reads a TIMESTAMP) as the model's naive UTC; any other
    value as it is."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value
