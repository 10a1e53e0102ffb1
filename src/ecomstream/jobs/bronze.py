"""Kafka -> ``bronze/orders``: every record once, as received (append).

Delta's streaming sink is exactly-once with the Kafka source: the offsets of each micro-batch are
in the checkpoint's offset log before the batch runs, and the sink commits the batch together
with (query id, batch id), skipping a batch it already committed. A kill at any moment therefore
neither loses nor duplicates a bronze row. Per-batch metrics come from the query's progress
(input rows, the Kafka end and processed offsets for lag) and go to the metrics table.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ecomstream.jobs import metrics
from ecomstream.jobs.base import StreamJob
from ecomstream.transforms.bronze import to_bronze

if TYPE_CHECKING:
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

log = logging.getLogger("ecomstream.pipeline")


class BronzeJob(StreamJob):
    name = "bronze"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_recorded = -1

    def source_options(self) -> dict[str, str]:
        options = {"startingOffsets": self.settings.starting_offsets, "failOnDataLoss": "true"}
        if self.settings.max_offsets_per_trigger is not None:
            options["maxOffsetsPerTrigger"] = str(self.settings.max_offsets_per_trigger)
        # the adapter knows its source best (Event Hubs timeouts, security): its options win
        return {**options, **self.env.kafka_source_options()}

    def _writer(self) -> DataStreamWriter:
        spark = self.env.spark()
        kafka = spark.readStream.format("kafka").options(**self.source_options()).load()
        return kafka.transform(to_bronze).writeStream.format("delta").outputMode("append")

    def _start(self, writer: DataStreamWriter) -> StreamingQuery:
        return self.env.table("bronze/orders").write_stream(writer)

    def record_progress(self) -> int:
        """Write a metrics row for each batch that ran since the last call; returns how many."""
        if self.query is None:
            return 0
        rows = []
        for progress in self.query.recentProgress:
            row = progress_metrics(as_dict(progress))
            if row is not None and row.batch_id > self._last_recorded:
                rows.append(row)
        if not rows:
            return 0
        rows.sort(key=lambda r: r.batch_id)
        metrics.write(
            self.env.spark(),
            self.env.table("metrics/pipeline_batches"),
            rows,
            self.app_id("metrics"),
            rows[-1].batch_id,
        )
        self._last_recorded = rows[-1].batch_id
        return len(rows)


def as_dict(progress: Any) -> dict[str, Any]:
    if isinstance(progress, dict):
        return progress
    return dict(json.loads(progress.json))


def _offset_total(offsets: Any) -> int | None:
    """Sum of next-offsets over partitions of ``{"topic": {"0": n, ...}}`` (JSON text or dict)."""
    if offsets is None:
        return None
    if isinstance(offsets, str):
        try:
            offsets = json.loads(offsets)
        except ValueError:
            return None
    if not isinstance(offsets, dict):
        return None
    return sum(
        int(n) for parts in offsets.values() if isinstance(parts, dict) for n in parts.values()
    )


def progress_metrics(progress: dict[str, Any]) -> metrics.BatchMetrics | None:
    """A metrics row from a bronze query progress report; None for a trigger with no data."""
    rows = int(progress.get("numInputRows") or 0)
    if rows == 0:
        return None
    import datetime as dt

    triggered = dt.datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00"))
    duration_ms = int((progress.get("durationMs") or {}).get("triggerExecution") or 0)
    started = triggered.astimezone(dt.UTC).replace(tzinfo=None)
    source = (progress.get("sources") or [{}])[0]
    sink_rows = (progress.get("sink") or {}).get("numOutputRows")
    return metrics.BatchMetrics(
        query="bronze",
        batch_id=int(progress["batchId"]),
        started_at=started,
        finished_at=started + dt.timedelta(milliseconds=duration_ms),
        duration_ms=duration_ms,
        input_rows=rows,
        output_rows=int(sink_rows) if sink_rows is not None and int(sink_rows) >= 0 else rows,
        kafka_end_offset_total=_offset_total(source.get("latestOffset")),
        kafka_processed_offset_total=_offset_total(source.get("endOffset")),
    )
