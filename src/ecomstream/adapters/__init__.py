"""Environment adapters: one per profile, picked by one setting (``--profile``)."""

from __future__ import annotations

import importlib
from typing import Any

from ecomstream.adapters.base import BaseEnvironment, Environment, TableRef
from ecomstream.errors import EcomstreamError

__all__ = ["PROFILES", "BaseEnvironment", "Environment", "TableRef", "get"]

# profile -> module holding ``create(**settings) -> Environment``
PROFILES = {
    "local": "ecomstream.adapters.local",
    "databricks": "ecomstream.adapters.databricks",
}


def get(profile: str, **settings: Any) -> Environment:
    """The environment of ``profile`` built from ``settings`` (each adapter takes what it needs
    and ignores the rest)."""
    module_name = PROFILES.get(profile)
    if module_name is None:
        raise EcomstreamError(
            f"unknown profile {profile!r}: choose one of {', '.join(sorted(PROFILES))}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EcomstreamError(f"profile {profile!r} is not available: {exc}") from None
    env: Environment = module.create(**settings)
    return env
