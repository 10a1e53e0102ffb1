"""The one line for a batch that did not fit the driver's memory (jobs/memory.py): the batch's
offsets as Spark's checkpoint files hold them, and the heap to ask for. The end-to-end case is
tests/integration/test_batch_memory.py."""

from __future__ import annotations

import signal
from pathlib import Path

from ecomstream.driver_jvm import describe_exit
from ecomstream.jobs.memory import batch_in_flight, doubled, out_of_memory_line

META = '{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}'


def _checkpoint(root: Path, offsets: dict[int, str], commits: list[int]) -> str:
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "sources" / "0").mkdir(parents=True)
    # as KafkaSourceInitialOffsetWriter writes it: a 0 byte, a version line, the offsets
    (root / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"orders":{"0":3,"1":0}}')
    for batch, source in offsets.items():
        (root / "offsets" / str(batch)).write_text(f"v1\n{META}\n{source}")
    for batch in commits:
        (root / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')
    return str(root)


def test_the_first_batch_counts_from_the_initial_offsets(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path, {0: '{"orders":{"1":19,"0":24}}'}, [])
    assert batch_in_flight(checkpoint) == [("orders", 0, 3, 24), ("orders", 1, 0, 19)]
    line = out_of_memory_line(checkpoint, {"spark.driver.memory": "512m"})
    assert line == (
        "a batch of 40 records (orders partition 0 offsets 3-23, orders partition 1 offsets "
        "0-18) did not fit the driver's memory (spark.driver.memory 512m): run again with a "
        "larger --spark-conf spark.driver.memory=1g (the checkpoint replays this batch whole) "
        "and a smaller --max-offsets-per-trigger (e.g. 10) for the batches after it; nothing "
        "of the batch was lost"
    )


def test_a_later_batch_counts_from_the_one_before(tmp_path: Path) -> None:
    offsets = {0: '{"orders":{"0":5,"1":5}}', 1: '{"orders":{"0":205,"1":5}}'}
    checkpoint = _checkpoint(tmp_path, offsets, [0])
    assert batch_in_flight(checkpoint) == [("orders", 0, 5, 205), ("orders", 1, 5, 5)]
    line = out_of_memory_line(checkpoint, {})
    assert line.startswith("a batch of 200 records (orders partition 0 offsets 5-204) ")
    assert "(spark.driver.memory 2g)" in line and "spark.driver.memory=4g" in line


def test_no_batch_in_flight_or_no_checkpoint_gives_the_line_without_offsets(
    tmp_path: Path,
) -> None:
    checkpoint = _checkpoint(tmp_path / "c", {0: '{"orders":{"0":5}}'}, [0])
    assert batch_in_flight(checkpoint) is None
    assert batch_in_flight(str(tmp_path / "missing")) is None
    assert out_of_memory_line(checkpoint, {}).startswith("a batch did not fit")


def test_doubled_sizes_and_exit_statuses() -> None:
    assert [doubled(s) for s in ("512m", "2g", "1536m", "3G", "junk")] == [
        "1g", "4g", "3g", "6g", "4g"
    ]  # fmt: skip
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL: the kernel's OOM killer or a user"
    assert describe_exit(52) == "exit code 52: out of memory"
    assert describe_exit(1) == "exit code 1"
