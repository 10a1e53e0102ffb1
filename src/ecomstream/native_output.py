"""Native libraries' own stderr goes to a log file; the user's terminal keeps ecomstream's lines.

delta-rs (Rust) prints a panic of one of its worker threads straight to file descriptor 2: a
Parquet write refused by a full disk returns its error to Python *and* prints ``thread
'tokio-rt-worker' panicked at .../object_store-0.13.2/src/buffered.rs ... Already shut down``
(with a stack under ``RUST_BACKTRACE``): object_store's BufWriter touched again after a
failed write (apache/arrow-rs-object-store#810). That is three or more lines of noise around
the one line the pipeline prints for a full disk. The JVM's output already goes to the Spark
log (:func:`ecomstream.spark.local_session`); this sends the Python process's fd 2 to
``<cache>/native.log`` (not under the data dir: that may be the disk that is full), while
``sys.stderr`` (the log lines and the error line) stays on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def native_stderr_to(log_file: Path) -> Iterator[None]:
    """Within the block, fd 2 appends to ``log_file`` and ``sys.stderr`` writes to the original
    stderr. A log file that cannot be opened leaves everything as it was."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "ab")
    except OSError:
        yield
        return
    previous = sys.stderr
    previous.flush()
    terminal = os.dup(2)
    # left open afterwards: a log handler made within the block keeps writing to the terminal
    sys.stderr = open(
        terminal,
        "w",
        buffering=1,
        encoding=getattr(previous, "encoding", None) or "utf-8",
        errors="backslashreplace",
    )
    with log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr = previous
