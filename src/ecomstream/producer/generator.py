"""Pure order generation and fault injection: no I/O, no clock unless one is passed in.

An order is sampled from the :class:`~ecomstream.producer.catalog.Catalog` pools and written
straight as JSON text from pre-serialised fragments (no per-field Faker, no ``json.dumps``), so
generation runs at several hundred thousand orders a second and the send path is the limit.

Reproducibility: one ``random.Random(seed)`` draws everything except the clock, and the number
of draws never depends on the clock, so the same seed gives the same orders, field for field,
except ``order_timestamp``. With ``start_time`` the clock is simulated too (``start_time`` plus
``1 / rate`` seconds per order) and the output is the same byte for byte.

Faults: exactly ``floor(n * fault_rate + u)`` of the first ``n`` records are faulty (``u`` a
seeded offset in [0, 1)), each with exactly one fault, the kinds taken in seeded shuffled
rounds of all :data:`FAULT_KINDS`, so per-kind counts never differ by more than one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.contract import CONTRACT_REASON_CODES
from ecomstream.producer import catalog as catalog_mod
from ecomstream.producer.catalog import Catalog

# Every contract reason code but total_out_of_range (an order for over a trillion): not injected,
# so a seed still yields the stream it always did.
FAULT_KINDS: tuple[str, ...] = (
    *(code for code in CONTRACT_REASON_CODES if code != "total_out_of_range"),
    "duplicate",
    "late",
)
# kinds that are valid records: silver takes a late order, and drops a duplicate as a re-send
VALID_KINDS: frozenset[str] = frozenset({"duplicate", "late"})


MAX_JITTER_MS = 2_000  # event time trails the clock by up to this much
LATE_MIN_S = 120.0  # a late event is 2 minutes ..
LATE_MAX_S = 6 * 3600.0  # .. to 6 hours old
BLOCK = 1_024  # orders drawn at once
HISTORY = 1_000  # how many recent valid records a duplicate may re-send

UNKNOWN_CATEGORIES = (
    "Automotive",
    "Garden",
    "Pet Supplies",
    "Office Products",
    "Music",
    "Jewelry",
    "Software",
    "Baby",
)
_NOT_JSON = (
    "order {oid} placed",
    "<order id='{oid}'/>",
    "order_id={oid};price=12.50",
    "\x00\x01\x02",
    "undefined",
)
_BAD_TIMESTAMPS = ("not-a-timestamp", "yesterday at noon", "", "T::Z")
_BAD_PRICES = ("N/A", "twelve", "12.3.4", "$19.99", "free")
_BAD_QUANTITIES = (1.5, 2.25, "two", "3x", "many")

Record = tuple[bytes | None, bytes, str | None]  # (key, value, fault kind or None)


def iso_millis(epoch_ms: int) -> str:
    """``2026-11-25T10:15:30.123Z``."""
    seconds, millis = divmod(epoch_ms, 1000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{millis:03d}Z"


class _TimeText:
    """ISO text for epoch milliseconds, formatting each second once (time is mostly monotone)."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def prefix(self, seconds: int) -> str:
        base = self._cache.get(seconds)
        if base is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._cache[seconds] = base
        return base

    def __call__(self, epoch_ms: int) -> str:
        seconds, millis = divmod(epoch_ms, 1000)
        return f"{self.prefix(seconds)}{millis:03d}Z"


_VERSION4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version 4
_RFC4122 = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: the RFC 4122 variant


def _uuid4_texts(rng: random.Random, n: int) -> list[str]:
    """``n`` version-4 UUID texts from one draw: version and variant bits set for all of them
    with two ``translate`` calls, dashes from ``hex("-", 2)`` (8 groups of 4 digits each)."""
    raw = bytearray(rng.getrandbits(128 * n).to_bytes(16 * n, "little")) if n else bytearray()
    raw[6::16] = raw[6::16].translate(_VERSION4)
    raw[8::16] = raw[8::16].translate(_RFC4122)
    h = raw.hex("-", 2) + "-"  # 40 characters per UUID: xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-
    return [
        f"{h[i : i + 4]}{h[i + 5 : i + 29]}{h[i + 30 : i + 34]}{h[i + 35 : i + 39]}"
        for i in range(0, 40 * n, 40)
    ]


_TABLE_SIZE = 1 << 16


def _table(items: Sequence[Any], cum_weights: Sequence[float]) -> tuple[Any, ...]:
    """``items`` laid out over 65,536 slots in proportion to their weights: sampling is a lookup.

    Weights are quantised to 1/65,536 (every item keeps at least one slot), close enough for
    popularity skews and ~20x cheaper than ``random.choices``' bisect per draw.
    """
    total = cum_weights[-1]
    bounds = [max(round(c / total * _TABLE_SIZE), i + 1) for i, c in enumerate(cum_weights)]
    bounds[-1] = _TABLE_SIZE
    out: list[Any] = []
    for item, bound in zip(items, bounds, strict=True):
        out.extend([item] * max(bound - len(out), 0))
    if len(out) != _TABLE_SIZE:  # more items than slots: cannot happen with our pool sizes
        raise ValueError(f"cannot lay out {len(items)} weighted items in {_TABLE_SIZE} slots")
    return tuple(out)


def _uint16s(rng: random.Random, n: int) -> memoryview:
    return (
        memoryview(rng.getrandbits(16 * n).to_bytes(2 * n, "little")).cast("H")
        if n
        else (memoryview(b"").cast("H"))
    )


class OrderGenerator:
    """Endless, seeded stream of order records; :meth:`batch` hands out the next ``n``."""

    def __init__(
        self,
        seed: int,
        *,
        fault_rate: float = 0.0,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        start_time: dt.datetime | None = None,
        rate: float = 0.0,
        clock: Callable[[], float] = time.time,
        catalog: Catalog | None = None,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate {fault_rate} is outside 0..1")
        self.seed = seed
        self.fault_rate = fault_rate
        self.catalog = catalog or catalog_mod.build(seed, categories)
        # two streams: per-order fields are drawn in fixed blocks, fault decisions one by one,
        # so neither depends on the batch sizes a caller asks for
        self._orders_rng = random.Random(f"orders-{seed}")
        self._rng = random.Random(f"faults-{seed}")
        self._block: list[tuple[Any, ...]] = []
        self._pos = 0
        self._clock = clock
        self._sim_ms: float | None = None
        if start_time is not None:
            if start_time.tzinfo is None:
                start_time = start_time.replace(tzinfo=dt.UTC)
            self._sim_ms = start_time.timestamp() * 1000.0
        self._sim_step_ms = 1000.0 / rate if rate > 0 else 1.0
        self._sim_index = 0
        self._time_text = _TimeText()
        self._fault_acc = self._rng.random()  # the seeded offset u
        self._round: list[str] = []
        self._history: deque[tuple[bytes, bytes]] = deque(maxlen=HISTORY)
        cat = self.catalog
        # 65,536-entry lookup tables: a draw is one uint16, mapped in C (see _uint16s)
        self._tables: tuple[tuple[Any, ...], ...] = (
            _table(range(len(cat.customers)), cat.customer_cum_weights),
            _table(cat.product_fragments, cat.product_cum_weights),
            _table(cat.quantities, cat.quantity_cum_weights),
            _table(cat.payment_fragments, cat.payment_cum_weights),
            tuple(i % MAX_JITTER_MS for i in range(_TABLE_SIZE)),
        )
        self._unknown = tuple(c for c in UNKNOWN_CATEGORIES if c not in self.catalog.categories)
        self.generated = 0
        self.kinds: Counter[str] = Counter()  # fault kind -> records generated with it
        self.clean = 0

    # -- time -------------------------------------------------------------------------------
    def _now_ms(self, n: int) -> list[int]:
        """Base event times for the next ``n`` orders (before jitter)."""
        if self._sim_ms is None:
            now = int(self._clock() * 1000)
            return [now] * n
        # from the order's index, not a running sum: the same times however the run is batched
        first, start, step = self._sim_index, self._sim_ms, self._sim_step_ms
        self._sim_index += n
        return [int(start + step * i) for i in range(first, first + n)]

    # -- faults -----------------------------------------------------------------------------
    def _next_kind(self) -> str:
        if not self._round:
            self._round = list(FAULT_KINDS)
            self._rng.shuffle(self._round)
            self._round.reverse()  # pop() from the end = the shuffled order
        kind = self._round.pop()
        if kind == "duplicate" and not self._history:
            # nothing valid sent yet to re-send: a late order (valid) comes first in this round
            late_at = self._round.index("late")
            self._round[late_at] = "duplicate"
            kind = "late"
        return kind

    def _faulty(self) -> bool:
        self._fault_acc += self.fault_rate
        if self._fault_acc >= 1.0:
            self._fault_acc -= 1.0
            return True
        return False

    # -- orders -----------------------------------------------------------------------------
    def _refill(self) -> None:
        """Draw the next :data:`BLOCK` orders' fields at once (everything but the time)."""
        rng = self._orders_rng
        cust, prods, qtys, pays, jitter = (
            list(map(table.__getitem__, _uint16s(rng, BLOCK))) for table in self._tables
        )
        ids = _uuid4_texts(rng, BLOCK)
        self._block = list(zip(ids, cust, prods, qtys, pays, jitter, strict=True))
        self._pos = 0

    def _take(self, n: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while len(out) < n:
            if self._pos >= len(self._block):
                self._refill()
            take = min(n - len(out), len(self._block) - self._pos)
            out.extend(self._block[self._pos : self._pos + take])
            self._pos += take
        return out

    def batch(self, n: int) -> list[Record]:
        """The next ``n`` records (the stream does not depend on how it is cut into batches)."""
        drawn = self._take(n)
        bases = self._now_ms(n)
        out: list[Record]
        cfrag, lfrag = self.catalog.customer_fragments, self.catalog.location_fragments
        currency = self.catalog.currency
        time_text = self._time_text
        history = self._history
        if not self.fault_rate:  # the hot path: no faults, no history to keep
            # "YYYY-MM-DDTHH:MM:SS." for every second this batch's event times can fall in
            low, high = (min(bases) - MAX_JITTER_MS) // 1000, max(bases) // 1000
            pre = {sec: time_text.prefix(sec) for sec in range(low, high + 1)}
            out = [
                (
                    order_id.encode(),
                    (
                        f'{{"order_id":"{order_id}","order_timestamp":"'
                        f'{pre[(e := bases[i] - jitter) // 1000]}{e % 1000:03d}Z",'
                        f'{cfrag[c]},{product},"quantity":{quantity},"currency":"{currency}",'
                        f"{payment},{lfrag[c]}}}"
                    ).encode(),
                    None,
                )
                for i, (order_id, c, product, quantity, payment, jitter) in enumerate(drawn)
            ]
            self.generated += n
            self.clean += n
            return out
        faulty = self._faulty
        out = []
        append = out.append
        for i, (order_id, c, product, quantity, payment, jitter) in enumerate(drawn):
            event_ms = bases[i] - jitter
            kind = None
            if faulty():
                kind = self._next_kind()
                if kind == "late":
                    event_ms -= int(1000 * self._late_seconds())
            value = (
                f'{{"order_id":"{order_id}","order_timestamp":"{time_text(event_ms)}",'
                f'{cfrag[c]},{product},"quantity":{quantity},"currency":"{currency}",'
                f"{payment},{lfrag[c]}}}"
            ).encode()
            key = order_id.encode()
            if kind is None or kind == "late":
                history.append((key, value))
                append((key, value, kind))
            elif kind == "duplicate":
                # this order's draws are skipped, not shifted: the stream stays aligned
                old_key, old_value = history[self._rng.randrange(len(history))]
                append((old_key, old_value, kind))
            else:
                append(self._inject(kind, key, value))
        self.generated += n
        for _, _, kind in out:
            if kind is None:
                self.clean += 1
            else:
                self.kinds[kind] += 1
        return out

    def _late_seconds(self) -> float:
        return math.exp(self._rng.uniform(math.log(LATE_MIN_S), math.log(LATE_MAX_S)))

    def _inject(self, kind: str, key: bytes, value: bytes) -> Record:
        """One fault of ``kind`` into an otherwise valid order."""
        rng = self._rng
        order = json.loads(value)
        if kind == "malformed_json":
            style = rng.randrange(4)
            if style == 0:  # truncated: any proper prefix of an object is not JSON
                text = value.decode()
                return key, text[: rng.randrange(1, len(text) - 1)].encode(), kind
            if style == 1:
                text = rng.choice(_NOT_JSON).format(oid=order["order_id"])
                return key, text.encode(), kind
            if style == 2:
                return key, b"", kind
            return key, _dumps([order]), kind
        if kind == "missing_order_id":
            style = rng.randrange(3)
            if style == 0:
                del order["order_id"]
            else:
                order["order_id"] = None if style == 1 else ""
            return None, _dumps(order), kind
        if kind == "invalid_timestamp":
            _absent_null_or(order, "order_timestamp", rng, _BAD_TIMESTAMPS)
        elif kind == "null_price":
            _absent_null_or(order, "price", rng, ())
        elif kind == "invalid_price":
            order["price"] = rng.choice(_BAD_PRICES)
        elif kind == "non_positive_price":
            order["price"] = rng.choice((0, 0.0, -order["price"], "0", f"-{order['price']}"))
        elif kind == "null_quantity":
            _absent_null_or(order, "quantity", rng, ())
        elif kind == "invalid_quantity":
            order["quantity"] = rng.choice(_BAD_QUANTITIES)
        elif kind == "non_positive_quantity":
            order["quantity"] = rng.choice((0, -1, -order["quantity"], "0", "-2"))
        elif kind == "unknown_category":
            order["category"] = rng.choice(self._unknown or ("Uncatalogued",))
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return key, _dumps(order), kind


def _absent_null_or(
    order: dict[str, object], field: str, rng: random.Random, bad: Sequence[object]
) -> None:
    style = rng.randrange(2 + (1 if bad else 0))
    if style == 0:
        del order[field]
    elif style == 1:
        order[field] = None
    else:
        order[field] = rng.choice(bad)


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
