"""One frozen, typed settings object for a pipeline run, validated once at the edge."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.errors import EcomstreamError

PROFILES = ("local", "databricks")
STARTING_OFFSETS = ("earliest", "latest")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
# About two bronze files of a 500,000-record batch (~48 MB each with 2 Kafka partitions), so a
# catch-up batch splits into as many tasks as there are cores; the cached batch fits the heap.
DEFAULT_MAX_BYTES_PER_TRIGGER = "64m"
_INTERVAL = re.compile(
    r"^\s*(\d+(\.\d+)?)\s*(ms|millisecond|milliseconds|s|sec|second|seconds)\s*$"
)

# Test hooks (documented in docs/pipeline.md); never set in production.
PAUSE_HOOK_ENV = "ECOMSTREAM_TEST_PAUSE_IN_BATCH"  # "<query>:<seconds>"
UNSAFE_NO_IDEMPOTENCE_ENV = "ECOMSTREAM_UNSAFE_NO_IDEMPOTENCE"  # "1": drop txnAppId/txnVersion


@dataclass(frozen=True)
class PipelineSettings:
    topic: str
    data_dir: Path
    bootstrap_servers: str = ""
    profile: str = "local"
    once: bool = False
    window: str = "1 minute"
    trigger_interval: str = "1 second"
    max_offsets_per_trigger: int | None = 500_000
    # silver and gold read Delta tables: a byte bound keeps a catch-up batch within the heap
    max_bytes_per_trigger: str = DEFAULT_MAX_BYTES_PER_TRIGGER
    starting_offsets: str = "earliest"
    wait_for_topic_s: float = 0.0
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    spark_conf: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        from ecomstream.transforms.gold import parse_window

        if self.profile not in PROFILES:
            raise EcomstreamError(
                f"unknown --profile {self.profile!r}: choose one of {', '.join(PROFILES)}"
            )
        if not self.topic or not self.topic.strip():
            raise EcomstreamError("--topic is required (or ECOMSTREAM_TOPIC)")
        if self.profile == "local" and not self.bootstrap_servers.strip():
            raise EcomstreamError(
                "--bootstrap-servers is required (or ECOMSTREAM_BOOTSTRAP_SERVERS)"
            )
        object.__setattr__(self, "window", parse_window(self.window))
        object.__setattr__(self, "trigger_interval", parse_interval(self.trigger_interval))
        if self.max_offsets_per_trigger is not None and self.max_offsets_per_trigger <= 0:
            raise EcomstreamError("--max-offsets-per-trigger must be a positive number of records")
        object.__setattr__(
            self, "max_bytes_per_trigger", str(parse_size(self.max_bytes_per_trigger))
        )
        if self.starting_offsets not in STARTING_OFFSETS:
            raise EcomstreamError(
                f"invalid --starting-offsets {self.starting_offsets!r}: earliest or latest"
            )
        if self.wait_for_topic_s < 0:
            raise EcomstreamError("--wait-for-topic must be >= 0 seconds")

    def adapter_settings(self) -> dict[str, Any]:
        """What ``adapters.get(profile, **...)`` receives; each adapter takes what it needs."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "topic": self.topic,
            "data_dir": str(self.data_dir),
            "starting_offsets": self.starting_offsets,
            "max_offsets_per_trigger": self.max_offsets_per_trigger,
            "wait_for_topic_s": self.wait_for_topic_s,
            "spark_conf": self.spark_conf,
        }


def parse_interval(text: str) -> str:
    """``"1 second"``, ``"500 ms"``, ``"0"`` -> Spark's processingTime form ("N milliseconds")."""
    cleaned = str(text).strip().lower()
    if cleaned in {"0", "0s"}:
        return "0 seconds"
    match = _INTERVAL.match(cleaned)
    if match is None:
        raise EcomstreamError(
            f"invalid --trigger-interval {text!r}: expected e.g. '1 second', '500 ms' or '0'"
        )
    value = float(match.group(1))
    millis = value if match.group(3).startswith("m") else value * 1000
    return f"{round(millis)} milliseconds"


def parse_size(text: str) -> int:
    """``"96m"``, ``"1g"``, ``"500000"`` -> a positive number of bytes."""
    match = _SIZE.match(str(text))
    size = int(match.group(1)) * 1024 ** "_kmg".index(match.group(2).lower() or "_") if match else 0
    if size <= 0:
        raise EcomstreamError(
            f"invalid --max-bytes-per-trigger {text!r}: expected a size such as '96m' or '1g'"
        )
    return size


def pause_hook(query: str) -> float:
    """Seconds to sleep inside a ``query`` batch after its table writes (test hook), else 0."""
    raw = os.environ.get(PAUSE_HOOK_ENV, "")
    name, _, seconds = raw.partition(":")
    if name != query:
        return 0.0
    try:
        return max(0.0, float(seconds))
    except ValueError:
        return 0.0


def idempotence_enabled() -> bool:
    return os.environ.get(UNSAFE_NO_IDEMPOTENCE_ENV, "") != "1"
