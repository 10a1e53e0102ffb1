"""Where ecomstream keeps downloaded jars and logs, and the default data dir."""

from __future__ import annotations

import os
from pathlib import Path

from ecomstream.errors import EcomstreamError


def cache_dir() -> Path:
    """Jar and Ivy caches: ``$ECOMSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ecomstream``."""
    explicit = os.environ.get("ECOMSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ecomstream"


DEFAULT_DATA_DIR = Path("ecomstream-data")


def ensure_writable_dir(path: Path, what: str = "data dir") -> Path:
    """Create ``path`` if needed and prove it is writable, or raise one clear error."""
    path = path.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EcomstreamError(f"{what} {path} is not writable: {reason}") from None
    return path
