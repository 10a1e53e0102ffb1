"""Ctrl-C (SIGINT) and SIGTERM held back while a child process is being spawned.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be; inside
``subprocess.Popen`` after the fork, the child runs but no ``Popen`` object is returned, so no
clean-up can reach it (a broker JVM was left running this way when a Ctrl-C came as it was
spawned). Inside :func:`held`, such a signal is recorded and raised again as the block ends, once
the caller has the process in hand (and is inside the ``try`` that cleans it up).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives Python's signal handlers
        return
    caught: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])  # to the handler the caller had


def spawn_logged(
    cmd: Sequence[str],
    log: Path,
    header: str,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A child in a session of its own (its own children join its process group), its output
    appended to ``log`` after a dated ``header`` line, spawned inside :func:`held`. A signal
    that came meanwhile is raised once the child exists, and the child's group is killed then:
    the caller never got it, so nothing else could stop it."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with held(), open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
                env=dict(env),
            )
    except BaseException:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    return proc
