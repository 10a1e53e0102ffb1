"""Issue 11, case 4: the disk under the data dir fills while the pipeline runs.

The data dir is a small filesystem of its own: a tmpfs where this machine lets the tests mount
one, else an ext4 image on a loop device, else (no mounting at all) a file-size limit set on
the running pipeline with ``prlimit`` (the JVM and CPython ignore SIGXFSZ, so a write past the
limit fails with EFBIG like a write to a full disk fails with ENOSPC). The broker keeps its own
data elsewhere (the session broker), as it must: a broker whose log dir fills stops itself, and
the pipeline would see a broker outage instead (docs/operations.md).

One chain on one topic:
1. a continuous pipeline (a real process: its exit code and stderr are what is checked) commits
   a first batch; the disk is then filled to within 64 KiB and a second wave of records with
   large payloads arrives: the next batch's checkpoint entry fits, its Parquet files do not, so
   delta-rs fails inside the batch, after some tables may have committed it. The process must
   exit 1 with ONE line naming the data dir, no Python traceback and no Rust panic text;
2. every table still loads in delta-rs and every commit file of every log is whole JSON
   (a Delta commit is put-if-absent of its file; a half-written Parquet file is referenced by
   no commit);
3. with space freed, ``--once`` finishes the failed batch; then the disk is filled to the last
   byte and more records arrive: this time Spark's own checkpoint write (``offsets``) fails,
   which must give the same line;
4. space freed, ``--once`` again: every table is exact against the contract model (bronze holds
   each record once; a batch that half-committed is not counted twice in silver or gold).

Protections this catches missing: the mapping of a refused write to the one line
(``jobs/space.py`` via ``pipeline._check``: without it the line is "the medallion query failed:
An exception was raised by the Python Proxy..."), the native stderr redirect
(``native_output.py``: without it the Rust panic lines reach the terminal), and the per-table
commit markers (``jobs/ledger.py``: without them step 4 finds gold counted twice).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecomstream.adapters.base import TABLE_KEYS
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import pipeline
from ecomstream.jobs.settings import PipelineSettings
from tests.conftest import Broker
from tests.integration.test_pipeline_checks import Running, assert_exact, order, record
from tests.kafka_helpers import read_all, send_all

SIZE_MB = 16
ROOM = 64 * 1024  # the next batch's checkpoint entry fits in this, its Parquet files do not
HANG_GUARD_S = 300


@dataclass
class SmallDisk:
    """A data dir that can be made full: ``kind`` is tmpfs, loop or fsize (no filesystem of its
    own: a file-size limit on the writing process stands in)."""

    path: Path
    kind: str

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self, room: int) -> None:
        """Leave ``room`` bytes free: write until the filesystem refuses, then give some back.
        (ext4 refuses while its delayed allocation holds reservations and frees blocks once the
        data is on disk: so write, sync and write again until nothing more fits.)"""
        with open(self.filler, "ab", buffering=0) as f:
            for _ in range(20):
                before = f.tell()
                for size in (1 << 20, 4096, 512):
                    try:
                        while True:
                            f.write(b"\xa5" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                with contextlib.suppress(OSError):
                    os.fsync(f.fileno())
                if f.tell() == before:
                    break
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(size - room, 0))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def _mount(kind: str, target: Path, image: Path) -> str | None:
    """Mount a small filesystem on ``target``; the reason it failed, or None."""
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(target)]
    else:
        if shutil.which("mkfs.ext4") is None:
            return "no mkfs.ext4"
        with open(image, "wb") as f:
            f.truncate(SIZE_MB * 2 << 20)
        made = subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True
        )
        if made.returncode != 0:
            return f"mkfs.ext4: {made.stderr.strip()[:200]}"
        cmd = ["mount", "-o", "loop", str(image), str(target)]
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(cmd, capture_output=True, text=True)
    return None if done.returncode == 0 else f"{' '.join(cmd[:3])}: {done.stderr.strip()[:200]}"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    target = tmp_path / "data"
    target.mkdir()
    # ECOMSTREAM_TEST_SMALL_DISK=loop|fsize tries a fallback on a machine that has the first
    forced = os.environ.get("ECOMSTREAM_TEST_SMALL_DISK", "")
    kinds = ("tmpfs", "loop", "fsize")
    reasons = [f"{kind}: not asked for" for kind in kinds[: kinds.index(forced)]] if forced else []
    for kind in kinds[len(reasons) : 2]:
        why = _mount(kind, target, tmp_path / "disk.img")
        if why is None:
            try:
                yield SmallDisk(target, kind)
            finally:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
            return
        reasons.append(f"{kind}: {why}")
    if shutil.which("prlimit") is not None:
        yield SmallDisk(target, "fsize")
        return
    pytest.skip("no size-limited filesystem: " + "; ".join(reasons) + "; and no prlimit")


# -- records ------------------------------------------------------------------------------------
def first_wave() -> list[tuple[bytes | None, bytes]]:
    """Valid orders over five minutes with a re-send and rejected records."""
    records = [record(order(f"a{i}", i / 8)) for i in range(40)]
    records += [
        record(order("a3", 0.4)),  # a duplicate
        record(order("q1", 1.0, price="abc")),
        record("not json"),
    ]
    return records


def large_wave(prefix: str, n: int) -> list[tuple[bytes | None, bytes]]:
    """Orders whose product names are ~2 KB of hex (Parquet cannot squeeze them into 64 KiB)."""

    def name(i: int) -> str:
        return "".join(hashlib.sha256(f"{prefix}{i}-{j}".encode()).hexdigest() for j in range(32))

    records = [record(order(f"{prefix}{i}", 2 + i / 40, product_name=name(i))) for i in range(n)]
    records.append(record(order("a5", 0.6)))  # a late duplicate of the first wave
    return records


# -- checks -------------------------------------------------------------------------------------
def assert_readable(data_dir: Path) -> dict[str, int]:
    """Every table loads in delta-rs and every commit of its log is whole, numbered from 0 on;
    returns each table's version."""
    from deltalake import DeltaTable

    versions = {}
    for key in TABLE_KEYS:
        log = data_dir / key / "_delta_log"
        commits = sorted(p for p in log.glob("*.json") if p.stem.isdigit())
        assert [int(p.stem) for p in commits] == list(range(len(commits))), (key, commits)
        for commit in commits:
            for line in commit.read_text().splitlines():
                json.loads(line)  # a half-written commit would not parse
        table = DeltaTable(str(data_dir / key))
        table.to_pyarrow_table()
        versions[key] = table.version()
    return versions


def checkpoint_entries(data_dir: Path) -> tuple[list[int], list[int]]:
    """The batches the query's checkpoint planned (offsets) and finished (commits)."""
    root = data_dir / "_checkpoints" / "medallion"
    return tuple(  # type: ignore[return-value]
        sorted(int(p.name) for p in (root / kind).iterdir() if p.name.isdigit())
        for kind in ("offsets", "commits")
    )


def wait_for_batch(data_dir: Path, run: Running, version: int) -> None:
    """Until the metrics table has commit ``version`` (0 is the table's creation)."""
    commit = data_dir / "metrics/pipeline_batches/_delta_log" / f"{version:020d}.json"
    deadline = time.monotonic() + HANG_GUARD_S
    while not commit.exists():
        assert run.proc.poll() is None, run.output()[-3000:]
        assert time.monotonic() < deadline, f"no batch within {HANG_GUARD_S}s"
        time.sleep(0.2)


def once(broker: Broker, topic: str, data_dir: Path) -> int:
    settings = PipelineSettings(
        topic=topic, data_dir=data_dir, bootstrap_servers=broker.bootstrap, once=True
    )
    return pipeline.run(settings)


def the_line(kind: str, data_dir: Path) -> str:
    if kind == "fsize":
        return f"a file under {data_dir} exceeds this process's file-size limit"
    return f"no space left on device under {data_dir}:"


# -- the test -----------------------------------------------------------------------------------
def test_a_full_disk_stops_the_pipeline_with_one_line_and_a_restart_is_exact(
    spark, kafka_broker: Broker, small_disk: SmallDisk
):
    data_dir, topic = small_disk.path, kafka_broker.new_topic("disk")
    started = time.monotonic()

    def lap(step: str) -> None:
        print(f"{step}: {time.monotonic() - started:.1f} s", flush=True)

    print(f"size-limited data dir: {small_disk.kind}")
    send_all(kafka_broker.bootstrap, topic, first_wave())
    # 1. a continuous run: the first batch commits, then the disk fills under it
    run = Running(
        "pipeline", "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
        "--data-dir", str(data_dir), "--maintenance-interval", "0",
    )  # fmt: skip
    try:
        wait_for_batch(data_dir, run, 1)
        if small_disk.kind == "fsize":
            limit = f"--fsize={ROOM}:"
            subprocess.run(["prlimit", "--pid", str(run.proc.pid), limit], check=True)
        else:
            small_disk.fill(ROOM)
        send_all(kafka_broker.bootstrap, topic, large_wave("b", 150))
        code = run.proc.wait(timeout=HANG_GUARD_S)
    finally:
        if run.proc.poll() is None:
            run.kill9()
    time.sleep(0.5)  # the pumps drain the pipes the process closed
    output = run.output()
    said = [line for line in output.splitlines() if line and not line.startswith("{")]
    assert code == 1, output[-3000:]
    assert len(said) == 1, f"more than one line besides the JSON log: {said}"
    assert said[0].startswith("ecomstream: error: " + the_line(small_disk.kind, data_dir)), said
    assert "Traceback" not in output and "panicked" not in output, output[-3000:]

    lap("1. continuous run failed")
    planned, finished = checkpoint_entries(data_dir)
    assert len(planned) == len(finished) + 1, "the batch should fail after its checkpoint entry"
    # 2. nothing half-written: every table loads, every commit parses
    assert_readable(data_dir)

    # 3. space back: the failed batch is finished; then a disk full to the last byte fails
    #    Spark's own checkpoint write, said the same way
    small_disk.free()
    assert once(kafka_broker, topic, data_dir) == 0
    lap("3. failed batch finished")
    send_all(kafka_broker.bootstrap, topic, [record(order(f"c{i}", 7 + i / 10)) for i in range(20)])
    if small_disk.kind == "fsize":
        print("file-size limit: the checkpoint entry is too small to hit it, step skipped")
    else:
        before = assert_readable(data_dir), checkpoint_entries(data_dir)
        small_disk.fill(0)
        with pytest.raises(EcomstreamError) as failed:
            once(kafka_broker, topic, data_dir)
        assert str(failed.value).startswith(the_line(small_disk.kind, data_dir)), failed.value
        assert failed.value.exit_code == 1
        # refused at the checkpoint entry: no batch planned, no table touched
        assert (assert_readable(data_dir), checkpoint_entries(data_dir)) == before
        small_disk.free()

    lap("3. checkpoint write refused")
    # 4. the restart continues exactly
    assert once(kafka_broker, topic, data_dir) == 0
    lap("4. restart done")
    on_topic = read_all(kafka_broker.bootstrap, topic)
    counts = assert_exact(data_dir, on_topic)
    lap("checked")
    print(f"disk full ({small_disk.kind}): {counts}, lost 0, duplicated 0")
    assert counts["bronze"] == len(on_topic) == 43 + 151 + 20
