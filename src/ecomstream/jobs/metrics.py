"""The per-batch metrics table ``metrics/pipeline_batches``: one row per micro-batch per layer.

Duplicates dropped, quarantine counts per reason, rows in and out, event-time freshness and (for
bronze) the Kafka lag are all observable here, per batch, with plain SQL. Rows are written with
the same idempotent append as the data (:mod:`ecomstream.jobs.ledger`), so a replayed batch
does not count twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import types as T

from ecomstream.adapters.base import TableRef
from ecomstream.jobs.arrow import to_arrow
from ecomstream.jobs.ledger import Ledger

log = logging.getLogger("ecomstream.pipeline")

METRICS_SCHEMA = T.StructType(
    [
        T.StructField("query", T.StringType(), False),
        T.StructField("batch_id", T.LongType(), False),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("finished_at", T.TimestampType()),
        T.StructField("duration_ms", T.LongType()),
        T.StructField("input_rows", T.LongType()),
        T.StructField("output_rows", T.LongType()),
        T.StructField("silver_rows", T.LongType()),
        T.StructField("quarantine_rows", T.LongType()),
        T.StructField("duplicates_dropped", T.LongType()),
        T.StructField("quarantine_reasons", T.MapType(T.StringType(), T.LongType())),
        T.StructField("max_event_time", T.TimestampType()),
        T.StructField("kafka_end_offset_total", T.LongType()),
        T.StructField("kafka_processed_offset_total", T.LongType()),
    ]
)


@dataclass
class BatchMetrics:
    query: str
    batch_id: int
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    duration_ms: int | None = None
    input_rows: int | None = None
    output_rows: int | None = None
    silver_rows: int | None = None
    quarantine_rows: int | None = None
    duplicates_dropped: int | None = None
    quarantine_reasons: dict[str, int] | None = None
    max_event_time: dt.datetime | None = None
    kafka_end_offset_total: int | None = None
    kafka_processed_offset_total: int | None = None
    replayed: bool = field(default=False)

    def finish(self) -> BatchMetrics:
        self.finished_at = utcnow()
        self.duration_ms = int((self.finished_at - self.started_at).total_seconds() * 1000)
        return self

    def row(self) -> tuple[Any, ...]:
        values = asdict(self)
        return tuple(values[name] for name in METRICS_SCHEMA.fieldNames())

    def log_line(self) -> str:
        """The same figures as one structured (JSON) log line."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        for key, value in list(values.items()):
            if isinstance(value, dt.datetime):
                values[key] = value.isoformat()
        return json.dumps({"event": "batch", **values}, sort_keys=True)


def utcnow() -> dt.datetime:
    # naive UTC: Spark's TimestampType with the session time zone at UTC
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


KEY = "metrics/pipeline_batches"


def write(ledger: Ledger, table: TableRef, rows: list[BatchMetrics], batch: int) -> bool:
    """Append ``rows`` (one batch's) once, however often the batch runs; log each as JSON.
    True when this call wrote them."""
    if not rows:
        return False
    arrow = to_arrow([r.row() for r in rows], METRICS_SCHEMA)
    if not ledger.append_rows(arrow, METRICS_SCHEMA, KEY, table, batch):
        return False
    for r in rows:
        log.info(r.log_line())
    return True
