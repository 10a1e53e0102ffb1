"""Pipeline status from the per-batch metrics table (``metrics/pipeline_batches``).

Pure functions over the table's rows (dicts, as ``pyarrow.Table.to_pylist`` gives them), so the
same figures feed ``ecomstream status``, the demo's live lines and the dashboard.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ecomstream.contract import CONTRACT_REASON_CODES

LAYERS = ("bronze", "silver", "gold")
RATE_WINDOW_S = 60.0

# contract order of the reason codes; unknown codes (a newer pipeline) follow, sorted
REASON_ORDER = CONTRACT_REASON_CODES


@dataclass(frozen=True)
class LayerStatus:
    query: str
    batches: int
    rows_per_s: float | None  # input rows per second over the last minute of batches
    input_total: int
    output_total: int
    last_batch_ms: int | None
    last_batch_at: dt.datetime | None


@dataclass(frozen=True)
class PipelineStatus:
    generated_at: dt.datetime
    layers: dict[str, LayerStatus]
    bronze_total: int
    silver_total: int
    quarantine_total: int
    duplicates_dropped: int
    quarantine_by_reason: dict[str, int]
    kafka_end_offset: int | None
    kafka_processed_offset: int | None
    newest_event_time: dt.datetime | None
    metrics_version: int | None = None
    notes: list[str] = field(default_factory=list)
    # the newest ``reprocess`` row (ecomstream reprocess), as the metrics table holds it
    last_reprocess: dict[str, Any] | None = None

    @property
    def kafka_lag(self) -> int | None:
        if self.kafka_end_offset is None or self.kafka_processed_offset is None:
            return None
        return max(self.kafka_end_offset - self.kafka_processed_offset, 0)

    @property
    def freshness_s(self) -> float | None:
        """Now minus the newest event time in gold."""
        if self.newest_event_time is None:
            return None
        return (self.generated_at - self.newest_event_time).total_seconds()

    @property
    def last_batch_at(self) -> dt.datetime | None:
        times = [layer.last_batch_at for layer in self.layers.values() if layer.last_batch_at]
        return max(times) if times else None

    def to_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, dt.datetime):
                return value.isoformat().replace("+00:00", "Z")
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        out = plain(asdict(self))
        out["kafka_lag"] = self.kafka_lag
        out["freshness_s"] = self.freshness_s
        return out


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """Timestamps come back tz-aware (``timestamp``) or naive (``timestamp_ntz``): make both UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def as_map(value: Any) -> dict[str, int]:
    """A Delta map column as arrow gives it (list of pairs) or a dict, as ``{key: count}``."""
    if not value:
        return {}
    pairs: Iterable[tuple[str, Any]] = value.items() if isinstance(value, Mapping) else value
    return {str(k): int(v or 0) for k, v in pairs}


def order_reasons(counts: Mapping[str, int]) -> dict[str, int]:
    known = [r for r in REASON_ORDER if counts.get(r)]
    extra = sorted(r for r in counts if r not in REASON_ORDER and counts[r])
    return {r: int(counts[r]) for r in (*known, *extra)}


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def summarize(
    rows: Sequence[Mapping[str, Any]],
    now: dt.datetime | None = None,
    *,
    metrics_version: int | None = None,
    rate_window_s: float = RATE_WINDOW_S,
) -> PipelineStatus:
    """Fold the metrics rows into the figures the status and dashboard show."""
    now = utc(now) or dt.datetime.now(dt.UTC)
    by_query: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_query.setdefault(str(row.get("query")), []).append(row)

    finished = [utc(r.get("finished_at")) for r in rows]
    newest_finished = max((t for t in finished if t is not None), default=None)

    layers: dict[str, LayerStatus] = {}
    for query in (*LAYERS, *sorted(set(by_query) - set(LAYERS))):
        batches = sorted(
            by_query.get(query, []),
            key=lambda r: (utc(r.get("finished_at")) or now, _int(r.get("batch_id"))),
        )
        if not batches and query not in LAYERS:
            continue
        last = batches[-1] if batches else None
        layers[query] = LayerStatus(
            query=query,
            batches=len(batches),
            rows_per_s=_rate(batches, newest_finished, rate_window_s),
            input_total=sum(_int(r.get("input_rows")) for r in batches),
            output_total=sum(_int(r.get("output_rows")) for r in batches),
            last_batch_ms=_int(last.get("duration_ms")) if last else None,
            last_batch_at=utc(last.get("finished_at")) if last else None,
        )

    silver_rows = by_query.get("silver", [])
    reasons: dict[str, int] = {}
    for row in silver_rows:
        for reason, count in as_map(row.get("quarantine_reasons")).items():
            reasons[reason] = reasons.get(reason, 0) + count

    kafka = [
        r
        for r in by_query.get("bronze", [])
        if r.get("kafka_end_offset_total") is not None
        and r.get("kafka_processed_offset_total") is not None
    ]
    newest_kafka = max(
        kafka,
        key=lambda r: (utc(r.get("finished_at")) or now, _int(r.get("batch_id"))),
        default=None,
    )
    event_times = [utc(r.get("max_event_time")) for r in by_query.get("gold", [])]
    return PipelineStatus(
        generated_at=now,
        layers=layers,
        bronze_total=sum(_int(r.get("output_rows")) for r in by_query.get("bronze", [])),
        silver_total=sum(_int(r.get("silver_rows")) for r in silver_rows),
        quarantine_total=sum(_int(r.get("quarantine_rows")) for r in silver_rows),
        duplicates_dropped=sum(_int(r.get("duplicates_dropped")) for r in silver_rows),
        quarantine_by_reason=order_reasons(reasons),
        kafka_end_offset=_int(newest_kafka["kafka_end_offset_total"]) if newest_kafka else None,
        kafka_processed_offset=(
            _int(newest_kafka["kafka_processed_offset_total"]) if newest_kafka else None
        ),
        newest_event_time=max((t for t in event_times if t is not None), default=None),
        metrics_version=metrics_version,
        last_reprocess=_last_reprocess(by_query.get("reprocess", []), now),
    )


def _last_reprocess(rows: Sequence[Mapping[str, Any]], now: dt.datetime) -> dict[str, Any] | None:
    """The newest reprocess's figures: when, rows read, rows per table, reasons, seconds."""
    if not rows:
        return None
    last = max(rows, key=lambda r: utc(r.get("finished_at")) or now)
    return {
        "finished_at": utc(last.get("finished_at")),
        "rows_read": _int(last.get("input_rows")),
        "rows_written": _int(last.get("output_rows")),
        "silver_rows": _int(last.get("silver_rows")),
        "quarantine_rows": _int(last.get("quarantine_rows")),
        "duplicates_dropped": _int(last.get("duplicates_dropped")),
        "quarantine_reasons": order_reasons(as_map(last.get("quarantine_reasons"))),
        "seconds": _int(last.get("duration_ms")) / 1000,
    }


def _rate(
    batches: Sequence[Mapping[str, Any]], end: dt.datetime | None, window_s: float
) -> float | None:
    """Input rows per second over the batches that finished in the ``window_s`` before ``end``.

    The window ends at the newest batch of any layer rather than at "now", so a finished
    pipeline still shows the throughput it ran at; "last batch ... ago" tells how old that is.
    """
    if end is None or not batches:
        return None
    recent = [
        r
        for r in batches
        if (t := utc(r.get("finished_at"))) is not None and (end - t).total_seconds() <= window_s
    ]
    if not recent:
        return 0.0
    starts = [t for r in recent if (t := utc(r.get("started_at"))) is not None]
    begin = min(starts, default=end - dt.timedelta(seconds=window_s))
    span = max((end - begin).total_seconds(), 1.0)
    return sum(_int(r.get("input_rows")) for r in recent) / span


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "-"
    return _duration((now - when).total_seconds()) + " ago"


def _duration(seconds: float) -> str:
    if seconds < 0:
        return f"-{_duration(-seconds)}"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_text(status: PipelineStatus) -> str:
    """The human table ``ecomstream status`` prints and the demo repeats while it runs."""
    now = status.generated_at
    lines = [f"{'layer':<8}{'rows/s':>9}{'rows in':>10}{'batches':>9}{'last batch':>12}  last run"]
    for layer in status.layers.values():
        rate = "-" if layer.rows_per_s is None else f"{layer.rows_per_s:.1f}"
        last_ms = "-" if layer.last_batch_ms is None else f"{layer.last_batch_ms} ms"
        lines.append(
            f"{layer.query:<8}{rate:>9}{layer.input_total:>10}{layer.batches:>9}{last_ms:>12}"
            f"  {_ago(layer.last_batch_at, now)}"
        )
    lag = "-" if status.kafka_lag is None else str(status.kafka_lag)
    fresh = "-" if status.freshness_s is None else _duration(status.freshness_s)
    lines.append(
        f"totals: bronze {status.bronze_total}, silver {status.silver_total}, "
        f"quarantine {status.quarantine_total}, duplicates dropped {status.duplicates_dropped}"
    )
    lines.append(f"kafka lag: {lag} records; freshness (now - newest gold event): {fresh}")
    if status.quarantine_by_reason:
        reasons = ", ".join(f"{k} {v}" for k, v in status.quarantine_by_reason.items())
        lines.append(f"quarantine by reason: {reasons}")
    done = status.last_reprocess
    if done is not None:
        lines.append(
            f"last reprocess {_ago(done['finished_at'], now)}: {done['rows_read']} bronze rows "
            f"read in {done['seconds']:.1f} s; silver {done['silver_rows']}, quarantine "
            f"{done['quarantine_rows']}, duplicates dropped {done['duplicates_dropped']}, "
            f"{done['rows_written']} rows written in all"
        )
    lines.extend(status.notes)
    return "\n".join(lines)
