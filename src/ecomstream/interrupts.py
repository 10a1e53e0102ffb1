"""Ctrl-C (SIGINT) and SIGTERM held back while a child process is being spawned.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be; inside
``subprocess.Popen`` after the fork, the child runs but no ``Popen`` object is returned, so no
clean-up can reach it (a broker JVM was left running this way when a Ctrl-C came as it was
spawned). Inside :func:`held`, such a signal is recorded and raised again as the block ends, once
the caller has the process in hand (and is inside the ``try`` that cleans it up).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
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
