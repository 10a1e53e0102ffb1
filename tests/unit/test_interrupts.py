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
