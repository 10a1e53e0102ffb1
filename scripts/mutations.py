"""Mutation check: do the tests catch the regressions their names promise?

    .venv/bin/python scripts/mutations.py [--only NAME ...] [--write-doc]

Each mutation changes one spot of a copy of ``src/`` (the checkout is never touched), then runs
the tests chosen to catch it against that copy (``PYTHONPATH`` puts the copy before the
editable install) and records which tests failed. A mutation that no test kills is reported as
SURVIVED, and the script exits 1. ``--write-doc`` rewrites the table in docs/testing.md.

The tests run with the ``dev`` Hypothesis profile and a fixed seed, so a kill does not depend
on luck in the example search.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ecomstream.jobs.batch import WRITE_SEQUENCE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- BEGIN mutations -->", "<!-- END mutations -->"

SILVER = "src/ecomstream/transforms/silver.py"
BATCH = "src/ecomstream/jobs/batch.py"
LEDGER = "src/ecomstream/jobs/ledger.py"
STATE = "src/ecomstream/jobs/state.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


COMMITTED_CHECK = "        if not idempotence_enabled(key):\n            return False\n"


def _without_check(table: str) -> Mutation:
    return Mutation(
        f"no ledger check: {table}",
        f"the ledger never finds a batch in {table} (no idempotence for that table's write)",
        LEDGER,
        COMMITTED_CHECK,
        COMMITTED_CHECK.replace("if not", f'if key == "{table}" or not'),
        (
            "tests/unit/test_batch.py::test_a_crash_right_after_any_write_is_made_good_by_the_replay",
        ),
    )


MUTATIONS = (
    Mutation(
        "reason codes swapped",
        "null_price and invalid_price trade conditions",
        SILVER,
        '"null_price": ~price_present,\n'
        '            "invalid_price": price_present & price.isNull(),',
        '"null_price": price_present & price.isNull(),\n'
        '            "invalid_price": ~price_present,',
        ("tests/unit/test_silver.py", "tests/unit/test_batch.py"),
    ),
    Mutation(
        "total_out_of_range never raised",
        "a price x quantity too large for the total's type enters silver with a null total",
        SILVER,
        '            & F.col("_total").isNull(),',
        "            & F.lit(False),",
        ("tests/unit/test_silver.py",),
    ),
    Mutation(
        "dedup keeps the last",
        "within a batch the highest Kafka offset wins instead of the lowest",
        BATCH,
        '("kafka_offset", "ascending")]',
        '("kafka_offset", "descending")]',
        ("tests/unit/test_batch.py",),
    ),
    Mutation(
        "dedup forgets earlier batches",
        "silver's held order ids are not consulted: a later batch re-inserts an order",
        BATCH,
        "        if already:\n            keep = pc.and_(",
        "        if False:\n            keep = pc.and_(",
        ("tests/unit/test_batch.py",),
    ),
    *(
        _without_check(table)
        for table in WRITE_SEQUENCE  # every table a batch writes: a new one is covered too
    ),
)


@dataclass
class Outcome:
    mutation: Mutation
    failed: list[str]
    ran: int
    seconds: float
    error: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.failed)


def _mutated_copy(mutation: Mutation, into: Path) -> Path:
    src = into / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    target = into / mutation.path
    text = target.read_text()
    if text.count(mutation.old) != 1:
        raise SystemExit(
            f"error: mutation {mutation.name!r}: the text to change is not found exactly once in "
            f"{mutation.path} (the code moved: update scripts/mutations.py)"
        )
    target.write_text(text.replace(mutation.old, mutation.new))
    return src


def _run(mutation: Mutation) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="ecomstream-mutant-") as tmp:
        src = _mutated_copy(mutation, Path(tmp))
        report = Path(tmp) / "report.xml"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
            "HYPOTHESIS_PROFILE": "dev",
        }
        cmd = [
            sys.executable, "-m", "pytest", *mutation.tests, "-q", "-p", "no:cacheprovider",
            "--hypothesis-seed=0", f"--junitxml={report}",
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if not report.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
            return Outcome(mutation, [], 0, seconds, error=" ".join(tail) or "pytest did not run")
        failed, ran = [], 0
        for case in ET.parse(report).getroot().iter("testcase"):
            ran += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}")
        return Outcome(mutation, failed, ran, seconds)


def _table(outcomes: list[Outcome]) -> str:
    lines = [
        "| mutation | what it changes | killed by (failing tests / tests run) |",
        "| --- | --- | --- |",
    ]
    for o in outcomes:
        if o.error:
            verdict = f"ERROR: {o.error}"
        elif o.killed:
            shown = ", ".join(f"`{name}`" for name in o.failed[:4])
            more = f" and {len(o.failed) - 4} more" if len(o.failed) > 4 else ""
            verdict = f"{len(o.failed)}/{o.ran}: {shown}{more}"
        else:
            verdict = f"**SURVIVED** (0/{o.ran})"
        lines.append(f"| {o.mutation.name} | {o.mutation.what} (`{o.mutation.path}`) | {verdict} |")
    return "\n".join(lines)


def _write_doc(table: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{BEGIN}\n_Run {stamp} by `scripts/mutations.py`._\n\n{table}\n{END}"
    text = DOC.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="a mutation's name (repeat)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--write-doc", action="store_true", help="rewrite docs/testing.md's table")
    args = parser.parse_args(argv)
    names = {m.name for m in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        print(f"error: unknown mutation {unknown[0]!r}; --list shows them", file=sys.stderr)
        return 2
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.what}")
        return 0
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    outcomes = []
    for mutation in chosen:
        outcome = _run(mutation)
        state = "error" if outcome.error else "killed" if outcome.killed else "SURVIVED"
        print(f"{mutation.name}: {state} ({len(outcome.failed)}/{outcome.ran} failed, "
              f"{outcome.seconds:.0f} s)", flush=True)  # fmt: skip
        outcomes.append(outcome)
    table = _table(outcomes)
    print(table)
    if args.write_doc:
        _write_doc(table)
    return 0 if all(o.killed and not o.error for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
