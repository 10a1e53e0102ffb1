"""What the query keeps in memory between batches, so a batch need not re-read its own tables.

The medallion query is the only writer of its tables, so within one process their state is
known without asking Delta, whose every read of a table that changed rebuilds the snapshot's
file list first (a Spark job per read, about a second here). Both structures below start empty
at every start of the process, fill from the tables on first use, and change only after the
write they mirror has committed; a failed write fails the query, and the next process starts
from the tables again.

* :class:`OrderIds`: the order ids silver holds, for global deduplication by set lookup.
  Memory grows with silver (about 100 bytes an order: 400 MB for 4 million), the price of an
  exact probe that costs the batch's ids, not silver's size.
* :class:`GoldWindows`: per gold table, the rows of the windows recent batches touched
  (least recently touched evicted past ``max_windows``), so a batch's new gold rows are old
  rows plus the new orders' sales, added up exactly in integer cents.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import TableRef

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# A gold key within a window, e.g. ("Books",) or ("FR", "Lyon"); measures in integer cents.
Key = tuple[Any, ...]
Measures = list[int]  # [order_count, units_sold, revenue_cents]
CENTS = Decimal(100)


class OrderIds:
    """The set of order ids in ``silver/orders``."""

    def __init__(self, spark: SparkSession, silver: TableRef) -> None:
        self._spark = spark
        self._silver = silver
        self._ids: set[str] | None = None

    def _load(self) -> set[str]:
        if self._ids is None:
            # delta-rs for a local table: no Spark job on the restart's critical path
            table = self._silver.read_arrow(self._spark, ["order_id"])
            self._ids = set(table.column("order_id").to_pylist())
        return self._ids

    def held(self, candidates: Iterable[str]) -> list[str]:
        """Those of ``candidates`` silver already holds."""
        return list(self._load().intersection(candidates))

    def add(self, ids: Iterable[str]) -> None:
        self._load().update(ids)

    def __len__(self) -> int:
        return len(self._load())


def half_up_cents(cents: int, count: int) -> int:
    """``cents / count`` rounded half-up, in integers (revenue is never negative)."""
    return (2 * cents + count) // (2 * count)


class GoldHours:
    """The rows of one gold table for the hours (its partitions) recent batches touched.

    A window's rows live in the partition of the hour its start falls in; a batch rewrites the
    touched hours whole, so the state is kept and loaded an hour at a time.
    """

    def __init__(
        self,
        spark: SparkSession,
        table: TableRef,
        keys: Sequence[str],
        window_s: float,
        *,
        with_average: bool,
        max_hours: int = 200,
    ) -> None:
        self._spark = spark
        self._table = table
        self.keys = tuple(keys)
        self._length = dt.timedelta(seconds=window_s)
        self._with_average = with_average
        self._max = max_hours
        # hour -> (window start, key) -> [orders, units, revenue cents]
        self._hours: OrderedDict[int, dict[tuple[dt.datetime, Key], Measures]] = OrderedDict()

    def updated(
        self, increments: dict[dt.datetime, dict[Key, Measures]]
    ) -> dict[int, dict[tuple[dt.datetime, Key], Measures]]:
        """The touched hours' rows with ``increments`` added (nothing is changed yet)."""
        touched = sorted({epoch_hour(w) for w in increments})
        self._load([h for h in touched if h not in self._hours])
        out = {h: {k: list(m) for k, m in self._hours[h].items()} for h in touched}
        for window, rows in increments.items():
            hour = out[epoch_hour(window)]
            for key, (n, units, cents) in rows.items():
                old = hour.setdefault((window, key), [0, 0, 0])
                old[0] += n
                old[1] += units
                old[2] += cents
        return out

    def commit(self, hours: dict[int, dict[tuple[dt.datetime, Key], Measures]]) -> None:
        """Keep ``hours`` (written by now) as the state of those hours."""
        for hour, rows in hours.items():
            self._hours[hour] = rows
            self._hours.move_to_end(hour)
        while len(self._hours) > self._max:
            self._hours.popitem(last=False)

    def rows(self, hours: dict[int, dict[tuple[dt.datetime, Key], Measures]]) -> list[list[Any]]:
        """Table rows (in the gold schema's column order) for ``hours``."""
        out = []
        for hour, rows in sorted(hours.items()):
            for (window, key), (n, units, cents) in sorted(rows.items(), key=_sortable):
                row = [window, window + self._length, *key, n, units, Decimal(cents) / CENTS]
                if self._with_average:
                    row.append(Decimal(half_up_cents(cents, n)) / CENTS)
                out.append([*row, hour])
        return out

    def _load(self, hours: list[int]) -> None:
        if not hours:
            return
        found: dict[int, dict[tuple[dt.datetime, Key], Measures]] = {h: {} for h in hours}
        columns = ["window_hour", "window_start", *self.keys, "order_count", "units_sold"]
        columns.append("revenue")
        table = self._table.read_arrow(self._spark, columns, ("window_hour", hours))
        rows = [{**r, "window_start": _naive_utc(r["window_start"])} for r in table.to_pylist()]
        for r in rows:
            key = tuple(r[k] for k in self.keys)
            cents = int(r["revenue"] * CENTS)
            measures = [int(r["order_count"]), int(r["units_sold"]), cents]
            found[int(r["window_hour"])][(r["window_start"], key)] = measures
        self.commit(found)


def epoch_hour(start: dt.datetime) -> int:
    """Hours since the epoch of a (naive UTC) window start, floored: gold's partition value.

    In exact integer arithmetic: ``int(timestamp()) // 3600`` truncated a sub-second start
    before 1970 (-0.5 s) towards zero and put it in hour 0 instead of hour -1."""
    return (start.replace(tzinfo=None) - _EPOCH) // dt.timedelta(hours=1)


_EPOCH = dt.datetime(1970, 1, 1)


def _sortable(item: tuple[tuple[dt.datetime, Key], Measures]) -> tuple[Any, ...]:
    (window, key), _ = item
    return (window, *((k is None, "" if k is None else str(k)) for k in key))


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """A timestamp read by pyarrow (UTC-aware) as the naive UTC datetime Spark's collect gives."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
