"""The pipeline's one query: Kafka -> bronze, quarantine, silver and gold in each micro-batch.

One query instead of one per layer because every layer's latency is the sum of fixed costs
(a trigger, a Spark job or two, a Delta commit) far more than of rows: a second and a third
query would add their triggers, their reads of the table upstream and their own commits to the
path from an order to gold. docs/pipeline.md has the figures behind the choice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ecomstream.adapters.base import Environment
from ecomstream.jobs import outage
from ecomstream.jobs.base import StreamJob
from ecomstream.jobs.settings import PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamWriter

    from ecomstream.jobs.batch import MedallionBatch

NAME = "medallion"


class MedallionJob(StreamJob):
    name = NAME

    def __init__(
        self, env: Environment, settings: PipelineSettings, start: dict[int, int] | None = None
    ) -> None:
        super().__init__(env, settings)
        # where a reset checkpoint starts, per partition (jobs/checkpoints.py)
        self.start_offsets = start

    def source_options(self) -> dict[str, str]:
        options = {
            "startingOffsets": self.settings.starting_offsets,
            "failOnDataLoss": str(self.settings.fail_on_data_loss).lower(),
        }
        if self.settings.max_offsets_per_trigger is not None:
            options["maxOffsetsPerTrigger"] = str(self.settings.max_offsets_per_trigger)
        # Spark waits out a broker outage at least as long as the run is asked to
        options.update(outage.source_options(self.settings.broker_outage_limit_s))
        # the adapter knows its source best (Event Hubs timeouts, security): its options win
        options = {**options, **self.env.kafka_source_options()}
        if self.start_offsets is not None:  # ... except where a reset says the tables end
            positions = {str(p): o for p, o in sorted(self.start_offsets.items())}
            options["startingOffsets"] = json.dumps({self.settings.topic: positions})
        return options

    def _writer(self) -> DataStreamWriter:
        self._batch: MedallionBatch | None = None
        spark = self.env.spark()
        kafka = spark.readStream.format("kafka").options(**self.source_options()).load()
        return kafka.writeStream.foreachBatch(self._process)

    def _process(self, kafka_df: DataFrame, batch_id: int) -> None:
        if self._batch is None:
            from ecomstream.jobs.batch import MedallionBatch

            self._batch = MedallionBatch(self.env, self.settings, writer=self.query_id())
        self._batch.process(kafka_df, int(batch_id))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None and self._batch is not None:
            self._batch.close()
