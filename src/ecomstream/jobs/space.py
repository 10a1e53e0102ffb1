"""A full disk (or a file-size limit) under the tables and checkpoints, said in one line.

Where ENOSPC surfaces in a run of the local profile, and as what (docs in operations.md):

* the query's checkpoint (``_checkpoints/<query>/offsets`` before a batch, ``commits`` after
  it), written by Spark: the query fails with ``java.io.IOException: No space left on device``;
* a table's Parquet file or commit, written by delta-rs inside the batch: the query fails with
  the batch's Python traceback, whose last line is a ``DeltaError`` ending in
  ``No space left on device (os error 28)``;
* Spark's own writes (table creation at a first start, compaction): a Py4J error whose Java
  stack names the ``IOException``; compaction's failure is logged and not fatal;
* Python's own files (``_ecomstream.json`` at a first start): ``OSError`` errno 28.

Each becomes one line naming the data dir and the recovery. Nothing half-written is left for a
reader: a Delta commit is a put-if-absent of its JSON file (written aside, then linked or
renamed into place), a Parquet file is referenced only by the commit that adds it, and Spark
writes its checkpoint files aside and renames them. A batch whose writes failed is replayed by
the next run, and each write is idempotent by the batch id in its commit
(:mod:`ecomstream.jobs.ledger`), so the tables that did commit it are skipped.

A file-size limit (``ulimit -f``, ``prlimit --fsize``) fails the same writes with EFBIG
(errno 27, "File too large"): the JVM and CPython ignore SIGXFSZ, so it is an error, not a
signal.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from ecomstream.errors import EcomstreamError

# What each library's message says (Java, Rust's std::io, Python's OSError, libc names)
_NO_SPACE = re.compile(r"no space left on device|os error 28\b|\[errno 28\]|\benospc\b")
_TOO_LARGE = re.compile(r"file too large|os error 27\b|\[errno 27\]|\befbig\b")


def full_text(error: BaseException) -> str:
    """Everything an error says: its message, a Spark error's description and JVM stack, and
    the errors that caused it (a batch's Python traceback is inside the query's description)."""
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for read in (
            lambda e: str(e),
            lambda e: getattr(e, "_desc", None),
            lambda e: getattr(e, "_stackTrace", None),
        ):
            try:
                text = read(current)
            except Exception:  # str() of a Spark error asks the JVM, which may be gone
                text = None
            if text:
                parts.append(str(text))
        pending.extend(
            getattr(current, name, None) for name in ("_cause", "__cause__", "__context__")
        )
    return "\n".join(parts)


def out_of_space(error: BaseException | str) -> str | None:
    """``"no space"`` or ``"too large"`` when ``error`` comes from a write that the disk (or a
    file-size limit) refused, else None."""
    text = (error if isinstance(error, str) else full_text(error)).lower()
    if _NO_SPACE.search(text):
        return "no space"
    if _TOO_LARGE.search(text):
        return "too large"
    return None


def state_root(checkpoint: str) -> str:
    """The directory holding the query's checkpoints (``<root>/_checkpoints/<query>``): the
    data dir of the local profile."""
    return str(PurePath(checkpoint).parents[1])


def message(kind: str, where: str) -> str:
    if kind == "too large":
        return (
            f"a file under {where} exceeds this process's file-size limit (ulimit -f): the "
            "pipeline stopped mid-batch with no table half-written; raise the limit and run the "
            "same command again, it finishes the batch from its checkpoint"
        )
    return (
        f"no space left on device under {where}: the pipeline stopped mid-batch with no table "
        "half-written; free space there (df -h) and run the same command again, it finishes "
        "the batch from its checkpoint"
    )


def raise_if_full(error: BaseException, where: str) -> None:
    """Raise the one-line :class:`EcomstreamError` (exit code 1) when ``error`` is a refused
    write; return otherwise."""
    kind = out_of_space(error)
    if kind is not None:
        raise EcomstreamError(message(kind, where), exit_code=1) from None
