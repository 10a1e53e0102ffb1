"""What a streaming job is: a checkpointed query with a stable id and a trigger."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import Environment
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.settings import PipelineSettings

if TYPE_CHECKING:
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
        self.query = writer.start()
        # the id lives in the checkpoint: the same across restarts, new for a new checkpoint
        self._query_id = str(self.query.id)
        self._started.set()
        return self.query

    def _writer(self) -> DataStreamWriter:
        raise NotImplementedError

    def query_id(self) -> str:
        """The checkpoint's query id (a batch may start before ``start`` has returned)."""
        if not self._started.wait(timeout=300):
            raise EcomstreamError(f"the {self.name} query did not start")
        return self._query_id

    def close(self) -> None:
        """Release what the job holds once its query has stopped."""
