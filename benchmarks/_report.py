"""Benchmarks print their figures and keep their own section of docs/benchmarks.md current."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is rewritten by the benchmark named in it; figures are from the last run.\n"
)


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def write_section(name: str, body: str, path: Path | None = None) -> None:
    """Replace (or append) the section between this benchmark's markers in ``path``
    (default docs/benchmarks.md)."""
    doc = path or DOC
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{begin}\n## {name}\n\n_Run {stamp} on {machine()}._\n\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
