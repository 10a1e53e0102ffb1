"""Read the gold and metrics Delta tables without Spark (delta-rs through ``deltalake``).

The dashboard and ``ecomstream status`` must stay fast and must also work on tables written on
Databricks and copied down, so they never start a JVM. ``TableReader`` keeps one ``DeltaTable``
per path and brings it up to date incrementally (only new commits are read).

Each read is one committed version of one table (a delta-rs snapshot: a commit being written,
or files a concurrent OPTIMIZE is replacing, are never half seen). Across tables,
:func:`read_view` gives the dashboard one batch of the pipeline: a micro-batch commits its
tables one by one, side by side (jobs/batch.py), so between two of its commits the newest
versions of gold and metrics describe different batches. The commit markers the pipeline puts
in every write (jobs/ledger.py) say which batch each version holds.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecomstream.errors import EcomstreamError

if TYPE_CHECKING:
    import pyarrow as pa

CATEGORY_SALES = "gold/category_sales"
LOCATION_SALES = "gold/location_sales"
METRICS = "metrics/pipeline_batches"
BINDING_FILE = "_ecomstream.json"
# the commit marker of jobs/ledger.py (not imported: that module pulls pyspark's types in)
MARKER = "ecomstream"
# commits searched back for a table's batch: a batch is one commit per table, maintenance adds
# at most one unmarked commit per interval, and the tables differ by one batch at most
HISTORY_DEPTH = 12


@dataclass(frozen=True)
class Mark:
    """A commit of a table: its version and, when the pipeline wrote it, writer and batch."""

    version: int
    writer: str | None
    batch: int | None


def parse_mark(version: int, user_metadata: Any) -> Mark:
    try:
        value = json.loads(user_metadata) if isinstance(user_metadata, str) else None
    except ValueError:
        value = None
    mark = value.get(MARKER) if isinstance(value, dict) else None
    if isinstance(mark, dict) and isinstance(mark.get("batch"), int):
        return Mark(version, str(mark.get("writer")), int(mark["batch"]))
    return Mark(version, None, None)


@dataclass(frozen=True)
class Snapshot:
    """One table read at one version (``version`` is None when the table does not exist yet)."""

    key: str
    version: int | None
    table: pa.Table | None
    # the table's commits, newest first, down to HISTORY_DEPTH (read with the newest version)
    marks: tuple[Mark, ...] = ()

    @property
    def mark(self) -> Mark | None:
        """The newest commit the pipeline marked, at or below ``version``."""
        return next((m for m in self.marks if m.writer is not None), None)


def read_marks(path: Path, version: int, depth: int = HISTORY_DEPTH) -> tuple[Mark, ...]:
    """The markers of commits ``version`` and the ``depth - 1`` before it, newest first, from
    the commit files themselves: delta-rs's ``history()`` reads from the log's end whatever
    version a table was loaded at and numbers the commits down from that version."""
    found = []
    for v in range(version, max(version - depth, -1), -1):
        info: dict[str, Any]
        try:
            with open(path / "_delta_log" / f"{v:020d}.json", encoding="utf-8") as log:
                info = next(
                    (a["commitInfo"] for a in map(json.loads, log) if "commitInfo" in a), {}
                )
        except FileNotFoundError:  # expired by log retention: nothing older is known
            break
        except ValueError:
            info = {}
        found.append(parse_mark(v, info.get("userMetadata")))
    return tuple(found)


class TableReader:
    """Thread-safe, incremental reads of the Delta tables under one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.data_dir / key

    def read(self, key: str, version: int | None = None, *, marks: bool = False) -> Snapshot:
        """The table's newest version (or ``version``), or an empty snapshot if it is absent;
        ``marks`` adds its newest commits' markers, read from the same snapshot."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        path = self.path(key)
        with self._lock:
            try:
                if version is not None:
                    table = DeltaTable(str(path), version=version)
                else:
                    cached = self._tables.get(key)
                    if isinstance(cached, DeltaTable):
                        cached.update_incremental()
                        table = cached
                    else:
                        if not DeltaTable.is_deltatable(str(path)):
                            return Snapshot(key, None, None)
                        table = DeltaTable(str(path))
                        self._tables[key] = table
                at = table.version()
                found = read_marks(path, at) if marks else ()
                return Snapshot(key, at, table.to_pyarrow_table(), found)
            except TableNotFoundError:
                return Snapshot(key, None, None)
            except DeltaError as exc:
                # an unsupported reader feature, a corrupt log: name the table, one line
                first = (str(exc).splitlines() or [""])[0]
                hint = ""
                if "reader features" in first:
                    hint = (
                        " (delta-rs cannot read that table feature yet; on Databricks, "
                        "ALTER TABLE ... DROP FEATURE it before copying the table down)"
                    )
                raise EcomstreamError(f"cannot read Delta table {path}: {first}{hint}") from None


@dataclass(frozen=True)
class View:
    """Gold and metrics as of one batch of the pipeline (``consistent``), or, when the tables
    do not allow that, as of their newest versions with ``note`` saying why."""

    category: Snapshot
    location: Snapshot
    metrics: Snapshot
    consistent: bool
    note: str | None = None


def _orders(snap: Snapshot, column: str, query: str | None = None) -> int:
    if snap.table is None:
        return 0
    rows = snap.table
    if query is not None:
        import pyarrow.compute as pc

        rows = rows.filter(pc.equal(rows.column("query"), query))
    return int(sum(v for v in rows.column(column).to_pylist() if v))


def read_view(reader: TableReader) -> View:
    """The three tables the dashboard shows, as one batch of the pipeline saw them.

    A batch commits bronze, quarantine, silver, both gold tables and metrics side by side, so a
    reader between two of those commits finds, say, category sales with the batch and location
    sales without it. Here every table is read at its newest version with its commit markers;
    a gold table ahead of the other (or of metrics, which every batch writes) is read at the
    version of the batch the others hold; then metrics is checked against gold (gold's orders
    are silver's rows, which metrics counts) and, while a batch's gold write is still on its
    way, read one batch back. What cannot be aligned (markers missing or out of reach) is served
    as found, with ``consistent`` false and a note.
    """
    met = reader.read(METRICS, marks=True)
    cat = reader.read(CATEGORY_SALES, marks=True)
    loc = reader.read(LOCATION_SALES, marks=True)
    ref = next((s.mark.writer for s in (met, cat, loc) if s.mark is not None), None)

    def position(mark: Mark | None) -> int:
        """Batches of the newest writer count up from 0; an older writer's come before."""
        return -1 if mark is None or mark.writer != ref or mark.batch is None else mark.batch

    notes: list[str] = []
    gold = [cat, loc]
    if ref is not None and any(s.table is not None for s in gold):
        cut = min(position(s.mark) for s in gold if s.table is not None)
        if met.mark is not None and met.mark.writer == ref:
            cut = min(cut, position(met.mark))
        for i, snap in enumerate(gold):
            if snap.table is None or position(snap.mark) <= cut:
                continue
            older = next((m for m in snap.marks if m.writer and position(m) <= cut), None)
            if older is not None:
                gold[i] = reader.read(snap.key, older.version, marks=True)
            elif snap.marks and snap.marks[-1].version == 0:
                gold[i] = Snapshot(snap.key, None, None)  # the table began after that batch
            else:
                notes.append(f"{snap.key} is ahead by more than {HISTORY_DEPTH} commits")
    cat, loc = gold
    if met.table is not None and cat.table is not None:
        in_gold = _orders(cat, "order_count")
        if _orders(met, "silver_rows", "silver") != in_gold:
            back = [m for m in met.marks if m.writer is not None][1:2]
            earlier = reader.read(METRICS, back[0].version, marks=True) if back else None
            if earlier is not None and _orders(earlier, "silver_rows", "silver") == in_gold:
                met = earlier  # the newest batch's gold write had not committed yet
            else:
                notes.append(
                    f"gold holds {in_gold} orders but the metrics count "
                    f"{_orders(met, 'silver_rows', 'silver')} silver rows"
                )
    if _orders(cat, "order_count") != _orders(loc, "order_count"):
        notes.append("the two gold tables hold different numbers of orders")
    return View(cat, loc, met, consistent=not notes, note="; ".join(notes) or None)
