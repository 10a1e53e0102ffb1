"""What the pipeline benchmarks share, none of it needing Spark in the benchmark's own process
(so the measuring process stays light beside the stack it measures on 2 cores):

- the whole stack's memory: RSS (and PSS) summed over process trees (broker, pipeline and its
  JVM, producer), sampled from ``/proc``;
- the producer, the bare passthrough (:mod:`benchmarks._passthrough`) and the pipeline as
  subprocesses, each with its own JVM, the way a user runs them;
- a reader of Delta logs: each commit's time, its ``ecomstream`` batch marker, the files it
  added and removed (so live files and row counts), and the events of the files added.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecomstream.jobs.batch import WRITE_SEQUENCE

REPO = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = 2**30
# the pipeline's tables, in its write order (importing the module starts no Spark)
TABLES = WRITE_SEQUENCE
# a late order (producer fault "late") is 2 minutes to 6 hours old when sent: anything sent
# more than this after its order_timestamp is one, and has no place in a latency figure
LATE_S = 60.0


# -- memory ---------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over /proc."""
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _tree(roots: dict[int, str]) -> list[tuple[int, str]]:
    """(pid, label) of every process of the roots' trees; label = "<root label>/<comm>".

    Left out: a JVM's child that is still the JVM binary, i.e. the moment between the fork
    (posix_spawn, vfork-like) and the exec when Java starts a command (Hadoop's local file
    system runs ``chmod`` and the like): it shares the JVM's memory, and its RSS, the JVM's own,
    would count the JVM twice."""
    children = _children()
    seen: set[int] = set()
    out = []
    todo = [(pid, label, "") for pid, label in roots.items()]
    while todo:
        pid, label, parent_exe = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        exe = _exe(pid)
        if not (exe and exe == parent_exe and os.path.basename(exe) == "java"):
            out.append((pid, f"{label}/{comm}"))
        todo.extend((child, label, exe) for child in children.get(pid, ()))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size: shared pages split among the processes sharing them (so forked
    workers sharing their parent's pages are not counted twice)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _rss(pid)


def tree_rss(roots: list[int]) -> int:
    """Resident bytes of ``roots`` and all their descendants (sum of RSS)."""
    return sum(_rss(pid) for pid, _ in _tree(dict.fromkeys(roots, "")))


MEMORY_METHOD = (
    "memory = the sum of RSS over the stack's processes, sampled every 0.5 s (a page two "
    "processes share counts twice, so an upper bound; a JVM's child caught between fork and "
    "exec, which is the JVM's own memory, is left out), beside the sum of PSS (shared pages "
    "split among their processes) sampled every 2 s"
)


@dataclass
class MemorySample:
    t: float  # epoch s
    rss: int  # sum of RSS over the stack's processes
    pss: int | None  # sum of PSS, every few samples (reading it costs more)
    by_process: dict[str, int]  # "<root label>/<comm>" -> RSS summed


class RssSampler(threading.Thread):
    """The stack's memory (every root's process tree) every ``interval_s``: the sum of RSS (a
    page shared by two processes counts twice: forked Python workers, shared libraries) and,
    every ``pss_every``-th sample, the sum of PSS (shared pages split). Roots come and go."""

    def __init__(self, interval_s: float = 0.5, pss_every: int = 4) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval_s = interval_s
        self.pss_every = pss_every
        self._roots: dict[int, str] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.samples: list[MemorySample] = []

    def add(self, pid: int, label: str) -> None:
        with self._lock:
            self._roots[pid] = label

    def remove(self, pid: int) -> None:
        with self._lock:
            self._roots.pop(pid, None)

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            with self._lock:
                roots = dict(self._roots)
            procs = _tree(roots)
            by_process: dict[str, int] = {}
            for pid, label in procs:
                by_process[label] = by_process.get(label, 0) + _rss(pid)
            pss = sum(_pss(pid) for pid, _ in procs) if n % self.pss_every == 0 else None
            self.samples.append(
                MemorySample(time.time(), sum(by_process.values()), pss, by_process)
            )
            n += 1
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()

    def _between(self, since: float, until: float) -> list[MemorySample]:
        return [s for s in self.samples if since <= s.t <= until]

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Largest sum of RSS."""
        return max((s.rss for s in self._between(since, until)), default=0)

    def peak_pss(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((s.pss or 0 for s in self._between(since, until)), default=0)

    def peak_breakdown(self, since: float = 0.0, until: float = float("inf")) -> str:
        """RSS by process at the sample of the largest sum, largest first."""
        samples = self._between(since, until)
        if not samples:
            return "n/a"
        top = max(samples, key=lambda s: s.rss)
        parts = sorted(top.by_process.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts if v >= 0.01 * GIB)

    def at(self, when: float) -> int:
        """The sum of RSS at the sample nearest to ``when``."""
        if not self.samples:
            return 0
        return min(self.samples, key=lambda s: abs(s.t - when)).rss

    def memory_text(self, since: float = 0.0, until: float = float("inf")) -> str:
        """One sentence on the peak: sum of RSS, sum of PSS, the processes at the RSS peak."""
        return (
            f"peak sum of RSS {self.peak(since, until) / GIB:.2f} GiB (sum of PSS "
            f"{self.peak_pss(since, until) / GIB:.2f} GiB; at the RSS peak, GiB: "
            f"{self.peak_breakdown(since, until)})"
        )


# -- processes ------------------------------------------------------------------------------------
def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def producer_cmd(
    bootstrap: str,
    topic: str,
    *,
    rate: float,
    seed: int,
    fault_rate: float,
    summary: Path,
    count: int | None = None,
    duration: float | None = None,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "ecomstream",
        "produce",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--rate",
        f"{rate:g}",
        "--seed",
        str(seed),
        "--fault-rate",
        str(fault_rate),
        "--progress",
        "off",
        "--summary-json",
        str(summary),
    ]
    if count is not None:
        cmd += ["--count", str(count)]
    if duration is not None:
        cmd += ["--duration", f"{duration:g}"]
    return cmd


def produce(cmd: list[str], summary: Path) -> dict[str, Any]:
    """Run the producer to the end; its summary."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"producer failed: {done.stderr.strip()[-800:]}")
    return dict(json.loads(summary.read_text()))


def passthrough_cmd(
    bootstrap: str,
    topic: str,
    work: Path,
    *,
    once: bool = False,
    trigger_interval: str = "0",
    max_offsets: int | None = None,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks._passthrough",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--dir",
        str(work),
    ]
    cmd += ["--once"] if once else ["--trigger-interval", trigger_interval]
    if max_offsets is not None:
        cmd += ["--max-offsets-per-trigger", str(max_offsets)]
    return cmd


def pipeline_cmd(
    bootstrap: str,
    topic: str,
    data_dir: Path,
    *,
    once: bool = False,
    trigger_interval: str | None = None,
    max_offsets: int | None = None,
    maintenance_interval: str | None = None,
) -> list[str]:
    """``python -m ecomstream pipeline``; options left None keep the CLI's defaults."""
    cmd = [
        sys.executable,
        "-m",
        "ecomstream",
        "pipeline",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--data-dir",
        str(data_dir),
    ]
    if once:
        cmd.append("--once")
    if trigger_interval is not None:
        cmd += ["--trigger-interval", trigger_interval]
    if max_offsets is not None:
        cmd += ["--max-offsets-per-trigger", str(max_offsets)]
    if maintenance_interval is not None:
        cmd += ["--maintenance-interval", maintenance_interval]
    return cmd


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so it and its JVM can be ended together), output to
    ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )


def end(proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> int | None:
    """SIGTERM (the pipeline and the passthrough stop their query cleanly on it), then SIGKILL
    for whatever of the process's own session is left (its JVM)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    return proc.returncode


def timed(cmd: list[str], log: Path, sampler: RssSampler, label: str) -> tuple[float, int, str]:
    """Run ``cmd`` to its end: wall seconds from spawn to exit, the stack's peak RSS meanwhile
    and a sentence on its memory."""
    since = time.time()
    t0 = time.perf_counter()
    proc = spawn(cmd, log)
    sampler.add(proc.pid, label)
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    sampler.remove(proc.pid)
    end(proc)
    if rc != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise SystemExit(f"{shlex.join(cmd)} exited with {rc}; {log}:\n{tail}")
    until = time.time()
    return seconds, sampler.peak(since, until), sampler.memory_text(since, until)


def wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 900) -> None:
    """Until ``path`` exists (a query's checkpoint metadata: the query has started)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout_s:.0f}s; see {log}")
        time.sleep(0.5)


def json_lines(log: Path, event: str) -> list[dict[str, Any]]:
    """The pipeline's JSON log lines of one ``event``."""
    out = []
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if value.get("event") == event:
                    out.append(value)
    return out


def batch_finished(log: Path, batch: int) -> bool:
    """Whether the pipeline logged the end of ``batch`` (or a later one): its ``batch_phases``
    line comes after every write of the batch has committed."""
    return any(int(line["batch_id"]) >= batch for line in json_lines(log, "batch_phases"))


def pipeline_drained(logs: dict[str, DeltaLog], log: Path, sent: int) -> bool:
    """Every record sent is in bronze and the batch that brought the last of them has ended
    (so silver, gold and the rest committed it too)."""
    bronze = logs["bronze/orders"]
    return bronze.rows >= sent and batch_finished(log, bronze.last_batch())


def phase_medians(lines: list[dict[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """Phase -> (median ms, max ms, batches) over ``batch_phases`` lines."""
    per: dict[str, list[int]] = {}
    for line in lines:
        for key, value in line.items():
            if key not in ("event", "batch_id") and isinstance(value, int | float):
                per.setdefault(key, []).append(int(value))
    return {k: (statistics.median(v), max(v), len(v)) for k, v in per.items()}


def phase_table(phases: dict[str, tuple[float, float, int]]) -> str:
    rows = [f"| {k} | {m:,.0f} | {x:,.0f} | {n} |" for k, (m, x, n) in phases.items()]
    head = ["| phase | median ms | max ms | batches |", "| --- | ---: | ---: | ---: |"]
    return "\n".join([*head, *rows])


def loadavg() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


# -- Delta logs -----------------------------------------------------------------------------------
@dataclass
class Commit:
    version: int
    timestamp_ms: int  # commitInfo.timestamp
    mtime_ms: float  # the log file's modification time (when it became visible, to the ms)
    operation: str
    batch: int | None  # the ecomstream marker's batch id, None on an unmarked commit
    adds: list[tuple[str, int]] = field(default_factory=list)  # dataChange adds: (path, rows)


def parse_marker(user_metadata: Any) -> int | None:
    if not isinstance(user_metadata, str) or not user_metadata:
        return None
    try:
        value = json.loads(user_metadata)
    except ValueError:
        return None
    mark = value.get("ecomstream") if isinstance(value, dict) else None
    batch = mark.get("batch") if isinstance(mark, dict) else None
    return batch if isinstance(batch, int) else None


class DeltaLog:
    """One table's commits, read incrementally from its ``_delta_log/*.json`` (the tables keep
    their JSON commits for a day, checkpoints or not)."""

    def __init__(self, table: Path) -> None:
        self.table = Path(table)
        self.commits: list[Commit] = []
        self.live: set[str] = set()
        self.rows = 0  # rows added by data-changing commits (appended tables: the row count)

    def refresh(self) -> DeltaLog:
        log = self.table / "_delta_log"
        while True:
            version = len(self.commits)
            path = log / f"{version:020d}.json"
            try:
                text = path.read_text()
                mtime_ms = path.stat().st_mtime * 1000
            except FileNotFoundError:
                return self
            info: dict[str, Any] = {}
            adds: list[tuple[str, int]] = []
            for line in text.splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "commitInfo" in action:
                    info = action["commitInfo"]
                elif "add" in action:
                    add = action["add"]
                    self.live.add(add["path"])
                    if add.get("dataChange", True):
                        stats = json.loads(add.get("stats") or "{}")
                        rows = int(stats.get("numRecords") or 0)
                        adds.append((add["path"], rows))
                        self.rows += rows
                elif "remove" in action:
                    self.live.discard(action["remove"]["path"])
            self.commits.append(
                Commit(
                    version=version,
                    timestamp_ms=int(info.get("timestamp") or mtime_ms),
                    mtime_ms=mtime_ms,
                    operation=str(info.get("operation", "")),
                    batch=parse_marker(info.get("userMetadata")),
                    adds=adds,
                )
            )

    def last_batch(self) -> int:
        return max((c.batch for c in self.commits if c.batch is not None), default=-1)

    def batch_times_ms(self) -> dict[int, int]:
        """Marker batch id -> commitInfo.timestamp of the first commit carrying it."""
        out: dict[int, int] = {}
        for c in self.commits:
            if c.batch is not None and c.batch not in out:
                out[c.batch] = c.timestamp_ms
        return out

    def log_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.table / "_delta_log"):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    def visibility_gap_ms(self) -> tuple[float, float]:
        """Median and max of (log file mtime - commitInfo.timestamp) over data commits."""
        gaps = [c.mtime_ms - c.timestamp_ms for c in self.commits if c.adds]
        return (statistics.median(gaps), max(gaps)) if gaps else (0.0, 0.0)

    def added_files(self, marked_only: bool) -> Iterator[tuple[Path, Commit]]:
        """Every file a data-changing commit added (with ``marked_only``: a commit with an
        ecomstream marker), with that commit. Files compacted away since are still on disk
        (deletedFileRetentionDuration: a day) and read as written."""
        for c in self.commits:
            if c.adds and (c.batch is not None or not marked_only):
                for path, _ in c.adds:
                    yield self.table / unquote(path), c


def micros(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A timestamp column as int64 microseconds since the epoch."""
    tz = getattr(column.type, "tz", None)
    return pc.cast(pc.cast(column, pa.timestamp("us", tz=tz), safe=False), pa.int64())


def percentiles(latencies_us: pa.ChunkedArray | pa.Array, missing: int = 0) -> tuple[float, float]:
    """p50 and p95 in seconds ("lower" interpolation); ``missing`` events (never visible
    before the benchmark stopped waiting) count as infinitely late."""
    values = pc.divide(pc.cast(latencies_us, pa.float64()), 1e6)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if missing:
        values = pa.concat_arrays([values, pa.array([float("inf")] * missing, pa.float64())])
    if len(values) == 0:
        return float("nan"), float("nan")
    p50, p95 = pc.quantile(values, q=[0.5, 0.95], interpolation="lower").to_pylist()
    return float(p50), float(p95)


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    if value != value:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "**misses**"


# -- events and their latencies ------------------------------------------------------------------
def _stamps(n: int, value: int | None) -> pa.Array:
    return pa.array([value] * n, pa.int64())


PIPELINE_EVENTS = pa.schema(
    [
        ("kafka_us", pa.int64()),
        ("order_us", pa.int64()),
        ("silver_us", pa.int64()),
        ("gold_us", pa.int64()),
    ]
)
PASSTHROUGH_EVENTS = pa.schema(
    [
        ("kafka_us", pa.int64()),
        ("order_us", pa.int64()),
        ("order_id", pa.string()),
        ("visible_us", pa.int64()),
    ]
)


def pipeline_events(data_dir: Path) -> pa.Table:
    """Every event silver took, with its send time (Kafka CreateTime, set by the producer's
    client at hand-over), its order_timestamp, and when it became visible: ``silver_us`` (the
    silver/orders commit that added its file) and ``gold_us`` (the gold/category_sales commit
    carrying the same batch marker; null when gold never got that batch)."""
    silver = DeltaLog(data_dir / "silver/orders").refresh()
    gold = DeltaLog(data_dir / "gold/category_sales").refresh().batch_times_ms()
    parts = [PIPELINE_EVENTS.empty_table()]
    for path, commit in silver.added_files(marked_only=True):
        t = pq.read_table(path, columns=["kafka_timestamp", "order_timestamp"])
        gold_ms = gold.get(commit.batch) if commit.batch is not None else None
        columns = [
            micros(t["kafka_timestamp"]),
            micros(t["order_timestamp"]),
            _stamps(t.num_rows, commit.timestamp_ms * 1000),
            _stamps(t.num_rows, None if gold_ms is None else gold_ms * 1000),
        ]
        parts.append(pa.Table.from_arrays(columns, schema=PIPELINE_EVENTS))
    return pa.concat_tables(parts)


_ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$"


def passthrough_events(table: Path) -> pa.Table:
    """Every record the passthrough landed: send time, order_timestamp and order_id parsed from
    the JSON value (null where the record is malformed), visible = its commit's time."""
    log = DeltaLog(table).refresh()
    parts = [PASSTHROUGH_EVENTS.empty_table()]
    for path, commit in log.added_files(marked_only=False):
        t = pq.read_table(path, columns=["kafka_timestamp", "raw_value"])
        raw = t["raw_value"]
        stamp = pc.struct_field(pc.extract_regex(raw, r'"order_timestamp":"(?P<ts>[^"]*)"'), "ts")
        ok = pc.fill_null(pc.match_substring_regex(stamp, _ISO_MS), False)
        stamp = pc.if_else(ok, stamp, pa.scalar(None, pa.string()))
        order_ts = pc.cast(stamp, pa.timestamp("us", tz="UTC"))
        columns = [
            micros(t["kafka_timestamp"]),
            micros(order_ts),
            pc.struct_field(pc.extract_regex(raw, r'"order_id":"(?P<id>[^"]+)"'), "id"),
            _stamps(t.num_rows, commit.timestamp_ms * 1000),
        ]
        parts.append(pa.Table.from_arrays(columns, schema=PASSTHROUGH_EVENTS))
    return pa.concat_tables(parts)


def first_per_order(events: pa.Table) -> pa.Table:
    """One row per order id, its earliest send (what silver keeps of a re-sent order)."""
    keyed = events.filter(pc.is_valid(events["order_id"]))
    return (
        keyed.group_by("order_id")
        .aggregate([("kafka_us", "min"), ("order_us", "min"), ("visible_us", "min")])
        .rename_columns(["order_id", "kafka_us", "order_us", "visible_us"])
    )


@dataclass
class Latency:
    """p50/p95 (s) of one visibility over one window of send times."""

    events: int  # events sent in the window that the table should show
    missing: int  # of those, never visible before the benchmark stopped waiting
    send_p50: float
    send_p95: float  # from the Kafka send time (CreateTime)
    order_p50: float
    order_p95: float  # from order_timestamp (late orders left out)
    order_events: int

    def row(self, label: str) -> str:
        return (
            f"| {label} | {self.order_p50:.2f} | {self.order_p95:.2f} | {self.send_p50:.2f} | "
            f"{self.send_p95:.2f} | {self.events:,} | {self.missing:,} |"
        )


LATENCY_HEADER = (
    "| visible in | p50 from order_timestamp | p95 from order_timestamp | p50 from send | "
    "p95 from send | events | never visible |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def latency(
    events: pa.Table, visible: str, start_us: int, end_us: int, unarrived: int = 0
) -> Latency:
    """Latencies of the events sent in [start_us, end_us). ``unarrived``: events sent (in this
    window: the last ones sent) that never reached the first table at all, which ``events``
    cannot hold; they count as never visible too."""
    kafka = events["kafka_us"]
    inside = events.filter(pc.and_(pc.greater_equal(kafka, start_us), pc.less(kafka, end_us)))
    seen = inside.filter(pc.is_valid(inside[visible]))
    missing = inside.num_rows - seen.num_rows + unarrived
    send = pc.subtract(seen[visible], seen["kafka_us"])
    on_time = pc.and_(
        pc.is_valid(inside["order_us"]),
        pc.less(pc.subtract(inside["kafka_us"], inside["order_us"]), int(LATE_S * 1e6)),
    )
    ordered = inside.filter(on_time)
    ordered_seen = ordered.filter(pc.is_valid(ordered[visible]))
    order = pc.subtract(ordered_seen[visible], ordered_seen["order_us"])
    s50, s95 = percentiles(send, missing)
    o50, o95 = percentiles(order, ordered.num_rows - ordered_seen.num_rows + unarrived)
    return Latency(
        inside.num_rows + unarrived, missing, s50, s95, o50, o95, ordered.num_rows + unarrived
    )


def first_send_us(events: pa.Table) -> int:
    value = pc.min(events["kafka_us"]).as_py()
    return int(value) if value is not None else 0


def passthrough_latency(
    events: pa.Table, start_us: int, end_us: int, unarrived: int = 0
) -> Latency:
    """From send: every record; from order_timestamp: the records with a valid one, first per
    order id (as silver keeps them; a re-send carries its original's order_timestamp)."""
    every = latency(events, "visible_us", start_us, end_us, unarrived)
    firsts = latency(first_per_order(events), "visible_us", start_us, end_us, unarrived)
    every.order_p50, every.order_p95 = firsts.order_p50, firsts.order_p95
    every.order_events = firsts.order_events
    return every


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every stack benchmark takes: broker, work dir, where the figures go."""
    parser.add_argument("--bootstrap-servers", default="", help="use this broker, not our own")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--doc-path", type=Path, default=None, help="write the section here")
    parser.add_argument("--json-out", type=Path, default=None, help="also write figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
