"""One frozen, typed settings object for a pipeline run, validated once at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.errors import EcomstreamError

PROFILES = ("local", "databricks")
STARTING_OFFSETS = ("earliest", "latest")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
# Accepted for compatibility, no effect (docs/pipeline.md).
DEFAULT_MAX_BYTES_PER_TRIGGER = "64m"
# A batch comes to the driver as Arrow (about 1 KB a record with its silver columns): 200,000
# records bound that to ~200 MB, and a catch-up batch still amortises the fixed cost of a batch
# (well under a second) over seconds of work.
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 200_000
_INTERVAL = re.compile(
    r"^\s*(\d+(\.\d+)?)\s*(ms|millisecond|milliseconds|s|sec|second|seconds)\s*$"
)


@dataclass(frozen=True)
class PipelineSettings:
    topic: str
    data_dir: Path
    bootstrap_servers: str = ""
    profile: str = "local"
    once: bool = False
    window: str = "1 minute"
    trigger_interval: str = "1 second"
    max_offsets_per_trigger: int | None = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    # silver and gold read Delta tables: a byte bound keeps a catch-up batch within the heap
    max_bytes_per_trigger: str = DEFAULT_MAX_BYTES_PER_TRIGGER
    starting_offsets: str = "earliest"
    wait_for_topic_s: float = 0.0
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    # compaction of the appended tables beside a continuous run ("0": never)
    maintenance_interval: str = "5 minutes"
    # None: local[*], or spark-submit's master when it started the process (spark.default_master)
    master: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # the data dir is the same directory on every node of a cluster (docs/scaling.md)
    shared_data_dir: bool = False
    # a continuous run waits this long for an unreachable broker, then stops (jobs/outage.py)
    broker_outage_limit_s: float = 60.0
    # rebuild a lost or foreign checkpoint from the tables (jobs/checkpoints.py)
    reset_checkpoints: bool = False
    # records removed from the topic before they were read stop the pipeline (False: skip them)
    fail_on_data_loss: bool = True

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
        parse_duration_s(self.maintenance_interval, "--maintenance-interval")
        self._check_outage_limit()
        self._check_spark()

    def _check_outage_limit(self) -> None:
        if not 0 < self.broker_outage_limit_s < float("inf"):
            raise EcomstreamError(
                f"--broker-outage-limit must be a positive number of seconds, not "
                f"{self.broker_outage_limit_s}"
            )

    def _check_spark(self) -> None:
        """The master is a master, and the local profile's tables are where its executors
        reach them (one line each; :func:`ecomstream.spark.storage_problem` has the rule)."""
        from ecomstream.spark import is_uri, parse_master, storage_problem

        if "spark.master" in self.spark_conf:
            raise EcomstreamError("set the master with --master, not --spark-conf spark.master")
        if self.master is not None:
            if self.profile != "local":
                raise EcomstreamError(
                    f"--master has no effect with --profile {self.profile}: its cluster owns "
                    "the Spark session"
                )
            try:
                object.__setattr__(self, "master", parse_master(self.master))
            except ValueError as exc:
                raise EcomstreamError(f"--master: {exc}") from None
        if self.profile != "local":
            return
        if is_uri(self.data_dir):
            raise EcomstreamError(
                f"--data-dir {self.data_dir} is a URI: the local profile keeps its tables in a "
                "directory (on a cluster, one every node mounts, with --shared-data-dir); "
                "abfss:// tables are the databricks profile's"
            )
        if self.master is not None:
            problem = storage_problem(
                self.master, self.data_dir, self.bootstrap_servers, self.shared_data_dir
            )
            if problem is not None:
                raise EcomstreamError(problem)

    @property
    def maintenance_interval_s(self) -> float:
        return parse_duration_s(self.maintenance_interval, "--maintenance-interval")

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
            "master": self.master,
            "shared_data_dir": self.shared_data_dir,
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


def parse_duration_s(text: str, option: str) -> float:
    """``"5 minutes"``, ``"30 seconds"``, ``"0"`` -> seconds (0 switches the thing off)."""
    from ecomstream.transforms.gold import window_seconds

    if str(text).strip().lower() in {"0", "off"}:
        return 0.0
    try:
        return window_seconds(text)
    except EcomstreamError:
        raise EcomstreamError(
            f"invalid {option} {text!r}: expected e.g. '5 minutes', '30 seconds' or '0' (off)"
        ) from None


def parse_size(text: str) -> int:
    """``"96m"``, ``"1g"``, ``"500000"`` -> a positive number of bytes."""
    match = _SIZE.match(str(text))
    size = int(match.group(1)) * 1024 ** "_kmg".index(match.group(2).lower() or "_") if match else 0
    if size <= 0:
        raise EcomstreamError(
            f"invalid --max-bytes-per-trigger {text!r}: expected a size such as '96m' or '1g'"
        )
    return size
