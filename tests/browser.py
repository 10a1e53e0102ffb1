"""Debian's Chromium for the dashboard's browser tests (driven by Playwright with
``executable_path``; no browser is ever downloaded).

CI installs Chromium while the suite runs (scripts/test.sh starts ``apt-get`` in the background
and names, in ``ECOMSTREAM_CHROMIUM_INSTALL``, the file it writes the install's exit status
to): a browser test first waits for that install to end, then skips, saying why, if there is
still no Chromium.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_WAIT_S = float(os.environ.get("ECOMSTREAM_CHROMIUM_INSTALL_WAIT", "900"))


def _path() -> str:
    return os.environ.get("ECOMSTREAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def wait_for_install(status_file: str | None, timeout: float = INSTALL_WAIT_S) -> str | None:
    """When an install runs in the background (``status_file`` named), wait until it ends;
    None if it succeeded or none runs, else why there may be no Chromium."""
    if not status_file:
        return None
    status = Path(status_file)
    deadline = time.monotonic() + timeout
    while not status.exists():
        if time.monotonic() > deadline:
            return f"the Chromium install still runs after {timeout:.0f} s"
        time.sleep(1)
    code = status.read_text().strip()
    return None if code == "0" else f"the Chromium install failed (exit {code or '?'})"


def chromium_or_skip() -> str:
    """The Chromium executable; skips the calling test, saying why, when there is none."""
    problem = wait_for_install(os.environ.get("ECOMSTREAM_CHROMIUM_INSTALL"))
    path = _path()
    if not Path(path).exists():
        why = f"; {problem}" if problem else ""
        pytest.skip(f"no Chromium at {path} (apt-get install chromium{why}): browser test skipped")
    return path
