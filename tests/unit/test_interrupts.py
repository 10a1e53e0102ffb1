"""interrupts.held: a Ctrl-C while a child is spawned is raised after, never inside."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ecomstream import interrupts


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own Ctrl-C handler for the test (a SparkContext in this process has its own)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_inside_is_raised_once_the_block_ends_with_the_child_in_hand():
    spawned: list[subprocess.Popen[bytes]] = []
    with pytest.raises(KeyboardInterrupt):
        try:
            with interrupts.held():
                signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came during the spawn
                spawned.append(subprocess.Popen([sys.executable, "-c", "pass"]))
        finally:
            # the block ran to its end: the caller holds the child and can stop it
            assert len(spawned) == 1
            spawned[0].wait()
    # and the handler is the caller's again: no signal is swallowed later
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nothing_is_raised_when_no_signal_came():
    with interrupts.held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_spawn_logged_appends_a_header_and_the_childs_output(tmp_path):
    log = tmp_path / "child.log"
    log.write_text("before\n")
    cmd = [sys.executable, "-c", "print('out')"]
    proc = interrupts.spawn_logged(cmd, log, "the header", env={}, cwd=tmp_path)
    assert proc.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "before" and lines[2].endswith(" the header") and lines[3] == "out"


def test_a_ctrl_c_during_spawn_logged_kills_the_child_the_caller_never_got(tmp_path, monkeypatch):
    real_popen = subprocess.Popen
    spawned: list[subprocess.Popen[bytes]] = []

    def popen(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawned.append(real_popen(*args, **kwargs))
        signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the fork
        return spawned[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(KeyboardInterrupt):
        interrupts.spawn_logged(cmd, tmp_path / "child.log", "sleeper", env={})
    # killed and reaped, not left sleeping
    assert spawned[0].returncode == -signal.SIGKILL
