"""Read the gold and metrics Delta tables without Spark (delta-rs through ``deltalake``).

The dashboard and ``ecomstream status`` must stay fast and must also work on tables written on
Databricks and copied down, so they never start a JVM. ``TableReader`` keeps one ``DeltaTable``
per path and brings it up to date incrementally (only new commits are read).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ecomstream.errors import EcomstreamError

if TYPE_CHECKING:
    import pyarrow as pa

CATEGORY_SALES = "gold/category_sales"
LOCATION_SALES = "gold/location_sales"
METRICS = "metrics/pipeline_batches"
BINDING_FILE = "_ecomstream.json"


@dataclass(frozen=True)
class Snapshot:
    """One table read at one version (``version`` is None when the table does not exist yet)."""

    key: str
    version: int | None
    table: pa.Table | None


class TableReader:
    """Thread-safe, incremental reads of the Delta tables under one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.data_dir / key

    def read(self, key: str, version: int | None = None) -> Snapshot:
        """The table's newest version (or ``version``), or an empty snapshot if it is absent."""
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
                return Snapshot(key, table.version(), table.to_pyarrow_table())
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
