"""What the three streaming jobs share: start a checkpointed query, know its stable id."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import metrics
from ecomstream.jobs.settings import PipelineSettings, pause_hook

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery


def trigger_args(settings: PipelineSettings) -> dict[str, Any]:
    if settings.once:
        return {"availableNow": True}
    return {"processingTime": settings.trigger_interval}


class StreamJob:
    """One checkpointed streaming query. Subclasses build the query in :meth:`_writer`."""

    name = ""

    def __init__(self, env: Environment, settings: PipelineSettings) -> None:
        self.env = env
        self.settings = settings
        self.query: StreamingQuery | None = None
        self._started = threading.Event()
        self._query_id = ""

    def start(self) -> StreamingQuery:
        writer = self._writer().queryName(self.name).trigger(**trigger_args(self.settings))
        writer = writer.option("checkpointLocation", self.env.checkpoint(self.name))
        self.query = self._start(writer)
        # the id lives in the checkpoint: the same across restarts, new for a new checkpoint
        self._query_id = str(self.query.id)
        self._started.set()
        return self.query

    def _writer(self) -> DataStreamWriter:
        raise NotImplementedError

    def _start(self, writer: DataStreamWriter) -> StreamingQuery:
        return writer.start()

    def app_id(self, table: str) -> str:
        """The Delta ``txnAppId`` of this query's writes to one table."""
        if not self._started.wait(timeout=300):
            raise EcomstreamError(f"the {self.name} query did not start")
        return f"ecomstream-{self.name}-{table}-{self._query_id}"

    def metrics_table_write(self, row: metrics.BatchMetrics) -> None:
        if not row.input_rows:  # an empty batch (e.g. a new stream's first) is not worth a row
            return
        spark = self.env.spark()
        metrics.write(
            spark,
            self.env.table("metrics/pipeline_batches"),
            [row.finish()],
            self.app_id("metrics"),
            row.batch_id,
        )

    def pause_for_tests(self, batch_id: int) -> None:
        seconds = pause_hook(self.name)
        if seconds > 0:
            print(f"ECOMSTREAM_TEST_HOOK paused {self.name} batch {batch_id}", flush=True)
            time.sleep(seconds)


def foreach_batch(job: Any) -> Any:
    """``job.process`` as a foreachBatch function (a plain function keeps PySpark happy)."""

    def run(batch_df: DataFrame, batch_id: int) -> None:
        job.process(batch_df, int(batch_id))

    return run
