"""The order generator against a plain-Python model of the contract (§1 fields, §3 reasons)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.producer import catalog as catalog_mod
from ecomstream.producer.generator import (
    FAULT_KINDS,
    LATE_MAX_S,
    LATE_MIN_S,
    MAX_JITTER_MS,
    OrderGenerator,
    iso_millis,
)

EVENT_FIELDS = (
    "order_id",
    "order_timestamp",
    "customer_id",
    "product_id",
    "product_name",
    "category",
    "price",
    "quantity",
    "currency",
    "payment_method",
    "city",
    "state",
    "country",
)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LOCATIONS = {(c, s, k) for c, s, k, _ in catalog_mod.LOCATIONS}
PAYMENTS = {m for m, _ in catalog_mod.PAYMENT_METHODS}
# pure Python (no Spark): the profile's example count (tests/profiles.py: ci 100, dev 20)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# catalogue building is the slow part (Faker): share one per seed across examples
_CATALOGS: dict[tuple[int, tuple[str, ...]], catalog_mod.Catalog] = {}


def generator(
    seed: int, categories: tuple[str, ...] = DEFAULT_CATEGORIES, **kw: Any
) -> OrderGenerator:
    key = (seed % 3, categories)  # three catalogues are plenty of variety for the properties
    if key not in _CATALOGS:
        _CATALOGS[key] = catalog_mod.build(key[0], categories, customers=2000)
    return OrderGenerator(seed, categories=categories, catalog=_CATALOGS[key], **kw)


# -- a plain-Python model of contract §3, written from the contract, not from the generator --
def _parse_ts(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None


def reasons(value: bytes, categories: tuple[str, ...] = DEFAULT_CATEGORIES) -> list[str]:
    """The contract's reason codes for one record value, in contract order."""
    try:
        event = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ["malformed_json"]
    if not isinstance(event, dict):
        return ["malformed_json"]
    out = []
    if not event.get("order_id"):
        out.append("missing_order_id")
    if _parse_ts(event.get("order_timestamp")) is None:
        out.append("invalid_timestamp")
    price = event.get("price")
    if price is None:
        out.append("null_price")
    elif _number(price) is None:
        out.append("invalid_price")
    elif _number(price) <= 0:  # type: ignore[operator]
        out.append("non_positive_price")
    quantity = event.get("quantity")
    if quantity is None:
        out.append("null_quantity")
    elif _integer(quantity) is None:
        out.append("invalid_quantity")
    elif _integer(quantity) <= 0:  # type: ignore[operator]
        out.append("non_positive_quantity")
    if event.get("category") not in categories:
        out.append("unknown_category")
    return out


def assert_clean_order(
    key: bytes | None, value: bytes, categories: tuple[str, ...]
) -> dict[str, Any]:
    """Contract §1, plus the realism the issue asks for."""
    event = json.loads(value)
    assert tuple(event) == EVENT_FIELDS
    assert key == event["order_id"].encode()
    assert UUID.match(event["order_id"])
    assert ISO_MS_Z.match(event["order_timestamp"]) and _parse_ts(event["order_timestamp"])
    assert all(
        isinstance(event[f], str) and event[f]
        for f in EVENT_FIELDS
        if f not in ("price", "quantity")
    )
    assert event["category"] in categories
    assert isinstance(event["price"], float) and 0 < event["price"] < 10_000
    assert round(event["price"], 2) == event["price"]
    assert isinstance(event["quantity"], int) and 1 <= event["quantity"] <= 20
    assert event["currency"] == "USD"
    assert event["payment_method"] in PAYMENTS
    assert (event["city"], event["state"], event["country"]) in LOCATIONS
    assert re.fullmatch(r"[A-Z]{2}", event["country"])
    spec = catalog_mod.CATEGORY_SPECS.get(event["category"], catalog_mod.GENERIC_SPEC)
    nouns, (low, high), _ = spec
    assert low <= event["price"] <= high + 1
    if nouns:  # the product name fits its category
        assert any(event["product_name"].endswith(noun) for noun in nouns), event["product_name"]
    assert reasons(value, categories) == []
    return event


# -- properties ----------------------------------------------------------------------------
@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 400))
def test_every_clean_order_meets_the_contract(seed: int, n: int) -> None:
    gen = generator(seed)
    records = gen.batch(n)
    assert len(records) == n
    for key, value, kind in records:
        assert kind is None
        assert_clean_order(key, value, DEFAULT_CATEGORIES)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    rate=st.floats(0.0, 1.0),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
)
def test_fault_counts_follow_the_rate_and_each_record_carries_one_fault(
    seed: int, rate: float, sizes: list[int]
) -> None:
    start = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
    gen = generator(seed, fault_rate=rate, start_time=start, rate=100)
    records = [r for size in sizes for r in gen.batch(size)]
    n = len(records)
    kinds = Counter(kind for _, _, kind in records if kind is not None)
    total = sum(kinds.values())
    # exactly floor(n * rate + u) for a seeded u in [0, 1)
    assert math.floor(n * rate) <= total <= math.ceil(n * rate) + (1 if rate * n % 1 == 0 else 0)
    assert total <= n
    # kinds come in shuffled rounds: no kind is ahead of another by more than one
    counts = [kinds.get(k, 0) for k in FAULT_KINDS]
    assert max(counts) - min(counts) <= 1
    assert gen.kinds == kinds and gen.clean == n - total

    seen_valid: set[tuple[bytes | None, bytes]] = set()
    for i, (key, value, kind) in enumerate(records):
        got = reasons(value)
        if kind is None:
            assert got == []
            assert_clean_order(key, value, DEFAULT_CATEGORIES)
        elif kind == "duplicate":
            assert got == [] and (key, value) in seen_valid, "a duplicate re-sends a valid record"
        elif kind == "late":
            event = assert_clean_order(key, value, DEFAULT_CATEGORIES)
            sim_now = start + dt.timedelta(seconds=i / 100)
            age = (sim_now - _parse_ts(event["order_timestamp"])).total_seconds()  # type: ignore[operator]
            assert LATE_MIN_S - 1 <= age <= LATE_MAX_S + MAX_JITTER_MS / 1000 + 1 + n / 100
        else:
            assert got == [kind], (kind, value)
            if kind == "missing_order_id":
                assert key is None
        if kind in (None, "late"):
            seen_valid.add((key, value))


@FAST
@given(seed=st.integers(0, 2**31 - 1), rate=st.sampled_from([0.0, 0.05, 0.5, 1.0]))
def test_same_seed_same_orders_except_event_time(seed: int, rate: float) -> None:
    clock_a = iter(range(1_700_000_000, 1_800_000_000, 7)).__next__
    clock_b = iter(range(1_750_000_000, 1_850_000_000, 13)).__next__
    a = generator(seed, fault_rate=rate, clock=clock_a).batch(300)
    b = generator(seed, fault_rate=rate, clock=clock_b).batch(300)
    # a truncated (malformed) record may end inside its timestamp
    ts = re.compile(rb'"order_timestamp":"[^"]*("|$)')
    assert [(k, ts.sub(b"T", v), kind) for k, v, kind in a] == [
        (k, ts.sub(b"T", v), kind) for k, v, kind in b
    ]
    assert any(ts.search(v) for _, v, _ in a)


def test_start_time_makes_the_stream_identical_byte_for_byte() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    a = generator(11, fault_rate=0.3, start_time=start, rate=70)  # 14.2857... ms per order
    b = generator(11, fault_rate=0.3, start_time=start, rate=70)
    assert a.batch(500) + a.batch(7) + a.batch(1) + a.batch(999) == b.batch(1507)
    c = generator(12, fault_rate=0.3, start_time=start, rate=50)
    assert c.batch(10) != generator(11, fault_rate=0.3, start_time=start, rate=50).batch(10)


def test_clean_records_are_the_same_bytes_with_or_without_faults() -> None:
    """The no-fault fast path and the fault path format a clean order identically."""
    start = dt.datetime(2026, 3, 1, 23, 59, 58, tzinfo=dt.UTC)  # batches straddle seconds
    plain = generator(4, start_time=start, rate=300).batch(1500)
    faulty = generator(4, fault_rate=0.3, start_time=start, rate=300)
    mixed = faulty.batch(700) + faulty.batch(800)
    same = [i for i, (_, _, kind) in enumerate(mixed) if kind is None]
    assert len(same) > 900
    assert all(mixed[i] == plain[i] for i in same)


def test_event_time_follows_the_clock_with_small_jitter() -> None:
    now = 1_764_065_730.0
    gen = generator(3, clock=lambda: now)
    stamps = [_parse_ts(json.loads(v)["order_timestamp"]) for _, v, _ in gen.batch(2000)]
    ages = [now - s.timestamp() for s in stamps]  # type: ignore[union-attr]
    assert all(0 <= age <= MAX_JITTER_MS / 1000 for age in ages)
    assert max(ages) - min(ages) > 1.0  # jitter is really there


def test_realistic_distributions() -> None:
    events = [json.loads(v) for _, v, _ in generator(5).batch(20_000)]
    quantities = Counter(e["quantity"] for e in events)
    assert quantities.most_common(1)[0][0] == 1 and quantities[1] > 0.45 * len(events)
    assert quantities[1] > quantities[2] > quantities[3] > quantities[5]
    customers = Counter(e["customer_id"] for e in events)
    assert sum(1 for c in customers.values() if c > 1) > 500  # repeat customers
    assert customers.most_common(1)[0][1] > 20
    # a customer always orders from home
    homes: dict[str, set[tuple[str, str, str]]] = {}
    for e in events:
        homes.setdefault(e["customer_id"], set()).add((e["city"], e["state"], e["country"]))
    assert all(len(h) == 1 for h in homes.values())
    categories = Counter(e["category"] for e in events)
    assert set(categories) == set(DEFAULT_CATEGORIES)
    prices = {c: [e["price"] for e in events if e["category"] == c] for c in categories}
    assert (
        sorted(prices["Electronics"])[len(prices["Electronics"]) // 2]
        > sorted(prices["Grocery"])[len(prices["Grocery"]) // 2]
    )
    # a product always has the same name, category and price
    products = {(e["product_id"], e["product_name"], e["category"], e["price"]) for e in events}
    assert len(products) == len({p[0] for p in products})


def test_categories_override_and_unknown_category_stays_unknown() -> None:
    cats = ("Garden", "Books", "Automotive")
    gen = generator(9, categories=cats, fault_rate=1.0)
    records = gen.batch(240)
    unknown = [json.loads(v)["category"] for _, v, k in records if k == "unknown_category"]
    assert unknown and not set(unknown) & set(cats)
    for _key, value, kind in records:
        if kind is None or kind == "late":
            assert json.loads(value)["category"] in cats
        elif kind not in ("duplicate",):
            assert reasons(value, cats) == [kind]


def test_fault_rate_one_starts_with_late_before_any_duplicate() -> None:
    records = generator(21, fault_rate=1.0).batch(24)
    assert all(kind is not None for _, _, kind in records)
    first_dup = next(i for i, (_, _, k) in enumerate(records) if k == "duplicate")
    first_late = next(i for i, (_, _, k) in enumerate(records) if k == "late")
    assert first_late < first_dup
    assert Counter(k for _, _, k in records) == dict.fromkeys(FAULT_KINDS, 2)


def test_iso_millis() -> None:
    assert iso_millis(1_764_065_730_123) == "2025-11-25T10:15:30.123Z"


@pytest.mark.parametrize("bad", [-0.01, 1.01])
def test_fault_rate_outside_unit_interval_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        generator(1, fault_rate=bad)
