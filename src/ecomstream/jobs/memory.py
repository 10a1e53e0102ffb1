"""A batch that did not fit the driver's memory, or a driver JVM that died, as one line naming
the batch (read from the query's checkpoint, and only once the run has failed: nothing here
runs per batch).

How each surfaces is in :mod:`ecomstream.driver_jvm`. The failed batch is in the checkpoint's
``offsets`` and not its ``commits``, and Spark replays such a batch with the offsets it planned
(measured: 80 x 1 MiB of invalid UTF-8 failed a 512m driver again on a restart with
``--max-offsets-per-trigger 20``). So the advice is a larger ``spark.driver.memory`` for that
batch, and a smaller ``--max-offsets-per-trigger`` (the only bound Spark's Kafka source has: it
counts records, not bytes) for the batches after it.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from ecomstream import driver_jvm
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.space import full_text

DEFAULT_DRIVER_MEMORY = "2g"
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)


def raise_if_jvm_gone_or_out_of_memory(
    error: BaseException, checkpoint: str, spark_conf: dict[str, str]
) -> None:
    """Raise the one-line :class:`EcomstreamError` (exit code 1) when ``error`` means the batch
    did not fit the driver's memory or the driver JVM died; return otherwise."""
    status = driver_jvm.jvm_gone(error)
    if status is None:
        if not driver_jvm.text_says_out_of_memory(full_text(error)):
            return
    elif status not in driver_jvm.OOM_EXIT_CODES and not driver_jvm.log_says_out_of_memory():
        raise EcomstreamError(driver_jvm.stopped_line(status), exit_code=1) from None
    raise EcomstreamError(out_of_memory_line(checkpoint, spark_conf), exit_code=1) from None


def out_of_memory_line(checkpoint: str, spark_conf: dict[str, str]) -> str:
    memory = spark_conf.get("spark.driver.memory", DEFAULT_DRIVER_MEMORY)
    batch = batch_in_flight(checkpoint)
    records = sum(end - start for _, _, start, end in batch) if batch else None
    what = "a batch"
    if records is not None:
        ranges = ", ".join(
            f"{topic} partition {p} offsets {start}-{end - 1}"
            for topic, p, start, end in batch or []
            if end > start
        )
        what = f"a batch of {records} records ({ranges})"
    smaller = max(1, records // 4) if records else 50
    return (
        f"{what} did not fit the driver's memory (spark.driver.memory {memory}): run again "
        f"with a larger --spark-conf spark.driver.memory={doubled(memory)} (the checkpoint "
        f"replays this batch whole) and a smaller --max-offsets-per-trigger (e.g. {smaller}) "
        "for the batches after it; nothing of the batch was lost"
    )


def doubled(size: str) -> str:
    """``2g`` -> ``4g``, ``512m`` -> ``1g`` (Spark's size syntax; anything else: ``4g``)."""
    match = _SIZE.match(size)
    if not match:
        return "4g"
    units = "kmgt"
    amount, unit = int(match.group(1)) * 2, (match.group(2) or "m").lower()
    while amount >= 1024 and amount % 1024 == 0 and unit != "t":
        amount, unit = amount // 1024, units[units.index(unit) + 1]
    return f"{amount}{unit}"


def batch_in_flight(checkpoint: str) -> list[tuple[str, int, int, int]] | None:
    """(topic, partition, first offset, next offset) of the batch the checkpoint planned and did
    not commit, or None when there is none or it cannot be read (a remote checkpoint)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        root = Path(checkpoint)
        planned = _batch_ids(root / "offsets")
        if not planned:
            return None
        batch = max(planned)
        if batch in _batch_ids(root / "commits"):
            return None
        end = _offsets(root / "offsets" / str(batch))
        if batch > 0 and (batch - 1) in planned:
            start = _offsets(root / "offsets" / str(batch - 1))
        else:
            start = _offsets(root / "sources" / "0" / "0")
        return [
            (topic, int(p), int(start.get(topic, {}).get(p, 0)), int(nxt))
            for topic, partitions in sorted(end.items())
            for p, nxt in sorted(partitions.items(), key=lambda kv: int(kv[0]))
        ]
    return None


def _batch_ids(folder: Path) -> set[int]:
    if not folder.is_dir():
        return set()
    return {int(f.name) for f in folder.iterdir() if f.name.isdigit()}


def _offsets(path: Path) -> dict[str, Any]:
    """The Kafka source's offsets in a checkpoint file: ``{"topic": {"0": next offset}}`` (an
    ``offsets`` file holds a version line, the batch's metadata and a line per source; the
    source's initial-offset file a version line and one JSON line, after a leading 0 byte)."""
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    kafka = [line for line in lines[1:] if line.startswith("{") and "batchWatermarkMs" not in line]
    return dict(json.loads(kafka[-1]))
