"""Hypothesis profiles, picked by ``HYPOTHESIS_PROFILE`` ("dev" when unset; ``.ci/run`` uses "ci").

Two kinds of property live in this suite:

- **Pure Python** (the producer, the contract model, the window arithmetic): an example costs
  microseconds, so they run as ordinary ``@given`` tests with the profile's ``max_examples``
  (ci 100, dev 20), or more of their own.
- **Spark-backed** (the bronze, silver and gold transforms): a Spark job costs 1.5-2 s of
  planning and code generation whatever its rows, so 100 examples one job each would take
  minutes per property. Instead :func:`drawn` lets Hypothesis draw :func:`examples` examples
  (its own search: small and large, boundaries, duplicates), the test evaluates them all in one
  Spark job, each example on a Kafka topic of its own, and checks each against the contract
  model on its own. A failure reports the smallest failing example in full (its records are
  the reproduction); it is not shrunk further, since each shrink step would be a Spark job.

The batch state machine (tests/unit/test_batch.py) writes Delta tables at every step, so it
runs a count of its own: :func:`stateful_examples`.
"""

from __future__ import annotations

import os
from typing import TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
EXAMPLES = {"ci": 100, "dev": 20}
STATE_MACHINES = {"ci": 8, "dev": 2}

settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(PROFILE)

T = TypeVar("T")


def examples() -> int:
    """Examples a Spark-backed property checks under this profile."""
    return EXAMPLES.get(PROFILE, EXAMPLES["dev"])


def stateful_examples() -> int:
    return STATE_MACHINES.get(PROFILE, STATE_MACHINES["dev"])


def drawn(strategy: st.SearchStrategy[T], n: int | None = None) -> list[T]:
    """``n`` (default :func:`examples`) values of ``strategy`` as Hypothesis's search draws
    them for a test, without running anything on them."""
    values: list[T] = []

    @settings(
        max_examples=n or examples(),
        phases=[Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        values.append(value)

    collect()
    return values
