"""The Spark driver JVM's death, and a batch too big for its heap, each said in one line.

Spark's Kafka source bounds a micro-batch by records only (``maxOffsetsPerTrigger``), never by
bytes, and the driver holds the whole batch as Arrow (jobs/batch.py ``collected``), so a batch
of large payloads can exceed ``spark.driver.memory``. Where that surfaces (measured on the local
profile, docs in /work/ops/payloads.md, "Memory"):

* the JVM throws ``OutOfMemoryError`` while serialising the batch to Arrow. A task's uncaught
  error makes Spark's ``SparkUncaughtExceptionHandler`` exit the JVM (code 52), and anywhere
  else ``-XX:+ExitOnOutOfMemoryError`` (spark.py adds it to the driver's options) exits it
  (code 3) instead of letting it limp on. Python then sees Py4J lose its gateway: a bare
  ``Py4JError: An error occurred while calling oNN.isActive`` with no cause, and Py4J logs the
  ``Answer from Java side is empty`` traceback on the root logger;
* Python's ``MemoryError`` while deciding the batch, or a JVM that caught its
  ``OutOfMemoryError``: the query fails, and its description names the error.

A JVM gone for another reason (the kernel's OOM killer, a user's ``kill``) looks the same to
Python, so a Py4J error is first checked against the JVM process itself: if it has exited, the
line says so, with its exit status and the Spark log, instead of the Py4J traceback.

Nothing of a batch is lost either way: its offsets are in the checkpoint's ``offsets`` but not
its ``commits``, so the next run replays it, and the tables that committed it already skip it
(jobs/ledger.py).
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

# the log file the session's JVM writes to, and its size when the session started
_LOG: tuple[Path, int] | None = None
# Spark's SparkExitCode.OOM, and HotSpot's exit code under -XX:+ExitOnOutOfMemoryError
OOM_EXIT_CODES = frozenset({52, 3})
EXIT_ON_OOM = "-XX:+ExitOnOutOfMemoryError"
_OOM_TEXT = re.compile(r"java\.lang\.OutOfMemoryError|\bMemoryError\b")


def remember_log(log_file: Path) -> None:
    """Called as the JVM starts: where it logs, and from where this session's lines begin."""
    global _LOG
    size = 0
    with contextlib.suppress(OSError):
        size = log_file.stat().st_size
    _LOG = (log_file, size)


def log_file() -> Path | None:
    return _LOG[0] if _LOG else None


def log_says_out_of_memory() -> bool:
    """The JVM logged an ``OutOfMemoryError`` since this session started (its last 1 MiB)."""
    if _LOG is None:
        return False
    path, start = _LOG
    try:
        with open(path, "rb") as f:
            end = f.seek(0, 2)
            f.seek(max(start, end - (1 << 20)))
            return b"java.lang.OutOfMemoryError" in f.read()
    except OSError:
        return False


def text_says_out_of_memory(text: str) -> bool:
    return bool(_OOM_TEXT.search(text))


def _is_py4j_error(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.startswith("py4j"):
            return True
        current = current.__cause__ or current.__context__
    return False


def exit_status(wait_s: float = 30.0) -> int | None:
    """The JVM's exit code (negative: the signal that killed it) once it has exited; None while
    it runs or when this process did not start it. A JVM that still answers its gateway is
    running (a Py4J error it raised itself); one that does not is given ``wait_s`` to finish
    its shutdown hooks (Spark's handler of an uncaught error exits through them)."""
    context = sys.modules.get("pyspark.core.context")
    gateway = getattr(getattr(context, "SparkContext", None), "_gateway", None)
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return None
    if _settled(proc, 2.0) is None and _answers(gateway):
        return None
    return _settled(proc, wait_s)


def _settled(proc: Any, wait_s: float) -> int | None:
    deadline = time.monotonic() + wait_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return proc.poll()


def _answers(gateway: Any) -> bool:
    try:
        gateway.jvm.java.lang.System.nanoTime()
    except Exception:
        return False
    return True


def jvm_gone(error: BaseException, wait_s: float = 30.0) -> int | None:
    """The JVM's exit status when ``error`` is Py4J's and the JVM has exited, else None."""
    if not _is_py4j_error(error):
        return None
    return exit_status(wait_s)


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        if -status == signal.SIGKILL:
            return f"killed by {name}: the kernel's OOM killer or a user"
        return f"killed by {name}"
    if status in OOM_EXIT_CODES:
        return f"exit code {status}: out of memory"
    return f"exit code {status}"


def stopped_line(status: int) -> str:
    """The line for a JVM that died outside a batch's memory failure."""
    where = log_file()
    details = f"; details in {where}" if where else ""
    return (
        f"the Spark driver JVM stopped ({describe_exit(status)}): run the same command again, "
        f"it continues from its checkpoint{details}"
    )
