"""Child processes of the demo: each in its own process group, stopped gently, then firmly.

A terminal's Ctrl-C goes to the foreground process group, which is the demo alone: the producer
and the pipeline (and the pipeline's Spark JVM) run in groups of their own, so the demo decides
the order in which they stop. Stopping sends SIGINT to the child itself (never to the JVM:
pyspark stops its queries and the JVM in order), then SIGTERM, then SIGKILL to the whole group,
and waits until no process of the group is left, so no JVM outlives the demo.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ecomstream import interrupts

# ECOMSTREAM_* variables that are not command options and children may keep
KEEP_ENV = {"ECOMSTREAM_CACHE_DIR", "ECOMSTREAM_DEBUG"}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The demo's environment minus ``ECOMSTREAM_<OPTION>`` variables.

    Every command reads its options from those too, and the demo passes each child's options
    explicitly: ``ECOMSTREAM_DURATION`` meant for the demo must not also stop the producer.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMSTREAM_") or k in KEEP_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields after the command: state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class Child:
    """One ``python -m ecomstream <command>`` child with its output in a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.argv = [sys.executable, "-m", "ecomstream", *args]
        # a Ctrl-C while the child is spawned is raised once it can be stopped
        proc = interrupts.spawn_logged(self.argv, log_path, " ".join(args), env=child_env(env))
        self.proc = proc
        self.pid = proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(line for line in text[-lines:] if line.strip())
        return ""

    def stop(self, grace_s: float, term_s: float = 15.0, group_s: float = 15.0) -> int:
        """SIGINT, wait ``grace_s``; SIGTERM, wait ``term_s``; SIGKILL the group. Exit code."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, term_s)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait_s)
        if self.proc.poll() is None:
            self._kill_group()
            self.proc.wait()
        # the leader is gone; its JVM may take a moment to follow it
        deadline = time.monotonic() + group_s
        while group_members(self.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_members(self.pid):
            self._kill_group()
            while group_members(self.pid) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        return int(self.proc.returncode)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
