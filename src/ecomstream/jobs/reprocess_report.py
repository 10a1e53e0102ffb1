"""What a reprocess reports: its figures, its metrics rows, and the dry run's comparison.

The metrics table after a reprocess: bronze's rows stay (they describe what was read from
Kafka, which has not changed); the silver and gold rows of the old batches are replaced by one
silver and one gold row holding the rebuilt tables' totals (so ``status`` and the dashboard,
which add those rows up, agree with the new tables); and one row with ``query`` =
``reprocess`` records the reprocess itself (rows read, rows written, reasons, seconds). Earlier
reprocesses' rows stay.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment, TableRef
from ecomstream.jobs import staging

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ecomstream.jobs.reprocess import ReprocessSettings

GOLD_KEYS = {
    "gold/category_sales": ("category",),
    "gold/location_sales": ("country", "city"),
}


def count_rows(table: TableRef, spark: SparkSession) -> int:
    local = table.local_path()
    if local is not None:
        from deltalake import DeltaTable

        return int(DeltaTable(local).to_pyarrow_dataset().count_rows())
    return int(table.read(spark).count())


def summary(
    staged: staging.StagingEnvironment, spark: SparkSession, state: dict[str, Any]
) -> dict[str, Any]:
    """The reprocess's figures: rows read, rows per rebuilt table, reasons, duplicates."""
    from ecomstream.jobs.rebuild import REBUILT

    done = list(state.get("done", {}).values())
    reasons: dict[str, int] = {}
    for chunk in done:
        for code, n in chunk["reasons"].items():
            reasons[code] = reasons.get(code, 0) + int(n)
    newest = [c["newest_event"] for c in done if c.get("newest_event")]
    valid = sum(c["rows"] - c["quarantined"] for c in done)
    inserted = sum(c["inserted"] for c in done)
    windows = staged.table("gold/category_sales").read_arrow(spark, ["window_start"])
    return {
        "rows_read": int(state["bronze_rows"]),
        "rows": {key: count_rows(staged.table(key), spark) for key in REBUILT},
        "quarantine_reasons": reasons,
        "duplicates_dropped": valid - inserted,
        "inserted": inserted,
        "windows": len(set(windows.column("window_start").to_pylist())),
        "newest_event": max(newest) if newest else None,
        "seconds": float(state.get("seconds", 0.0)),
    }


def metrics_rows(
    table: TableRef, spark: SparkSession, state: dict[str, Any], figures: dict[str, Any]
) -> pa.Table:
    """The metrics table as it must read after the switch (see the module's docstring)."""
    from ecomstream.jobs.arrow import to_arrow
    from ecomstream.jobs.metrics import METRICS_SCHEMA, BatchMetrics, utcnow

    names = METRICS_SCHEMA.fieldNames()
    old = table.read_arrow(spark, names).to_pylist()
    kept = [[_naive(r[n]) for n in names] for r in old if r["query"] not in ("silver", "gold")]
    started = _naive(dt.datetime.fromisoformat(state["started_at"]))
    finished = utcnow()
    newest = figures["newest_event"]
    newest_at = dt.datetime.fromisoformat(newest) if newest else None
    rows = figures["rows"]
    silver, quarantine = rows["silver/orders"], rows["silver/quarantine"]

    def row(query: str, **values: Any) -> list[Any]:
        line = BatchMetrics(
            query=query,
            batch_id=int(state["batch"]),
            started_at=started,
            finished_at=finished,
            duration_ms=int(figures["seconds"] * 1000),
            **values,
        )
        return list(line.row())

    added = [
        row(
            "silver",
            input_rows=figures["rows_read"],
            output_rows=silver + quarantine,
            silver_rows=silver,
            quarantine_rows=quarantine,
            duplicates_dropped=figures["duplicates_dropped"],
            quarantine_reasons=figures["quarantine_reasons"],
            max_event_time=newest_at,
        ),
        row("gold", input_rows=silver, output_rows=figures["windows"], max_event_time=newest_at),
        row(
            "reprocess",
            input_rows=figures["rows_read"],
            output_rows=sum(rows.values()),
            silver_rows=silver,
            quarantine_rows=quarantine,
            duplicates_dropped=figures["duplicates_dropped"],
            quarantine_reasons=figures["quarantine_reasons"],
            max_event_time=newest_at,
        ),
    ]
    return to_arrow(kept + added, METRICS_SCHEMA)


def _naive(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


# -- the dry run -------------------------------------------------------------------------------
def dry_run(env: Environment, settings: ReprocessSettings, binding: dict[str, Any]) -> int:
    """Rebuild into a scratch folder outside the data dir, print per table the rows now and
    after, and the gold windows that would change; write nothing to the data dir."""
    from ecomstream.jobs.rebuild import BRONZE, REBUILT, bronze_version, plan_chunks, stage

    spark = env.spark()
    bronze = env.table(BRONZE)
    version = bronze_version(bronze, spark)
    chunks, rows = plan_chunks(bronze, spark, version, settings.chunk_rows)
    run_id = uuid.uuid4().hex[:12]
    state: dict[str, Any] = {"id": f"dry-{run_id}", "bronze_version": version, "chunks": chunks}
    if bronze.local_path() is not None:
        root = tempfile.mkdtemp(prefix="ecomstream-reprocess-")
    else:
        root = f"{staging.files(env).root}/dry-run-{run_id}"
    try:
        staged = stage(env, settings.pipeline_settings(str(binding["topic"])), root, state)
        out = [
            f"dry run: {rows} bronze rows; window {binding.get('window')} -> {settings.window}; "
            f"catalogue {_catalogue_change(binding.get('categories'), settings.categories)}",
            f"{'table':<24}{'rows now':>12}{'rows after':>12}",
        ]
        for key in REBUILT:
            now = count_rows(env.table(key), spark)
            after = count_rows(staged.table(key), spark)
            out.append(f"{key:<24}{now:>12}{after:>12}")
        for key, keys in GOLD_KEYS.items():
            changed = changed_windows(env.table(key), staged.table(key), spark, keys)
            out.append(f"{key}: {_windows_line(changed)}")
        out.append("nothing was written")
        print("\n".join(out), file=sys.stdout, flush=True)
    finally:
        staging.remove_tree(root, spark)
    return 0


def changed_windows(
    now: TableRef, after: TableRef, spark: SparkSession, keys: tuple[str, ...]
) -> list[dt.datetime]:
    """The window starts whose rows differ between two gold tables (any key, any figure)."""
    columns = ["window_start", "window_end", *keys, "order_count", "units_sold", "revenue"]

    def rows(table: TableRef) -> set[tuple[Any, ...]]:
        read = table.read_arrow(spark, columns).to_pylist()
        return {tuple(_naive(r[c]) for c in columns) for r in read}

    differ = rows(now) ^ rows(after)
    return sorted({r[0] for r in differ})


def _windows_line(changed: list[dt.datetime]) -> str:
    if not changed:
        return "no window would change"
    shown = ", ".join(w.isoformat(sep=" ") for w in changed[:5])
    more = f", ... {changed[-1].isoformat(sep=' ')}" if len(changed) > 5 else ""
    return f"{len(changed)} windows would change: {shown}{more}"


def _catalogue_change(held: list[str] | None, wanted: tuple[str, ...]) -> str:
    if held is None:
        return f"{','.join(wanted)} (the data dir records none)"
    added = [c for c in wanted if c not in held]
    removed = [c for c in held if c not in wanted]
    if not added and not removed:
        return "unchanged"
    return " ".join([*(f"+{c}" for c in added), *(f"-{c}" for c in removed)])
