"""The local profile: a Kafka broker on this machine (embedded or any other), Delta tables as
paths under ``--data-dir``, checkpoints at ``<data-dir>/_checkpoints/<query>``; Spark on
``--master`` (``local[*]`` by default, or a cluster whose nodes all mount the data dir)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecomstream.adapters.base import (
    OLD_LAYOUT_QUERIES,
    QUERIES,
    TABLE_KEYS,
    BaseEnvironment,
    TableRef,
)
from ecomstream.errors import EcomstreamError
from ecomstream.paths import ensure_writable_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BINDING_FILE = "_ecomstream.json"
LOCK_FILE = "_ecomstream.lock"
CHECKPOINTS = "_checkpoints"
KAFKA_TIMEOUT_MS = 5000


class LocalEnvironment(BaseEnvironment):
    name = "local"

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        data_dir: str | Path,
        spark_conf: dict[str, str] | None = None,
        wait_for_topic_s: float = 0.0,
        master: str | None = None,
        shared_data_dir: bool = False,
    ) -> None:
        if not bootstrap_servers:
            raise EcomstreamError("--bootstrap-servers is required for the local profile")
        if not topic:
            raise EcomstreamError("--topic is required")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.spark_conf = dict(spark_conf or {})
        self.wait_for_topic_s = wait_for_topic_s
        self.master = master
        self.shared_data_dir = shared_data_dir
        self._spark: SparkSession | None = None
        self._consumer: Any = None
        self._lock_fd: int | None = None  # the data dir's lock, held while a run lasts

    # -- the Environment protocol -------------------------------------------------------------
    def spark(self) -> SparkSession:
        if self._spark is None:
            from ecomstream.spark import default_master, local_session, storage_problem

            spark = local_session(
                "ecomstream-pipeline",
                master=self.master or default_master(),
                extra_conf=self.spark_conf,
                log_file=self.data_dir / "_logs" / "spark.log",
            )
            # the master spark-submit was given is known only now: check it before any table
            actual = spark.conf.get("spark.master", None)
            if actual:
                problem = storage_problem(
                    actual, self.data_dir, self.bootstrap_servers, self.shared_data_dir
                )
                if problem is not None:
                    raise EcomstreamError(problem)
            self._spark = spark
        return self._spark

    def kafka_source_options(self) -> dict[str, str]:
        return {"kafka.bootstrap.servers": self.bootstrap_servers, "subscribe": self.topic}

    def table(self, key: str) -> TableRef:
        if key not in TABLE_KEYS:
            raise KeyError(f"unknown table {key!r}")
        return TableRef(path=str(self.data_dir / key))

    def checkpoint(self, query: str) -> str:
        if query not in QUERIES and not query.startswith("bench-"):
            raise KeyError(f"unknown query {query!r}")
        return str(self.data_dir / CHECKPOINTS / query)

    # -- optional hooks -----------------------------------------------------------------------
    def preflight(self) -> None:
        ensure_writable_dir(self.data_dir)
        # --wait-for-topic also waits for a broker that is still starting (the demo starts the
        # pipeline beside its broker); without it an unreachable broker fails at once.
        deadline = time.monotonic() + self.wait_for_topic_s
        while True:
            try:
                if self.topic in self._list_topics():
                    return
            except EcomstreamError:
                if time.monotonic() >= deadline:
                    raise
            else:
                if time.monotonic() >= deadline:
                    raise EcomstreamError(
                        f"topic {self.topic!r} does not exist on {self.bootstrap_servers} "
                        "(create it, e.g. by producing to it, or pass --wait-for-topic)"
                    )
            time.sleep(0.5)

    def bind(self, topic: str, window: str, categories: tuple[str, ...] | None = None) -> None:
        """``<data-dir>/_ecomstream.json`` names the topic, gold window and catalogue the tables
        hold (a binding written before catalogues were recorded adopts this run's)."""
        path = self.data_dir / BINDING_FILE
        wanted: dict[str, Any] = {"topic": topic, "window": window}
        if categories is not None:
            wanted["categories"] = list(categories)
        if path.exists():
            try:
                bound = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise EcomstreamError(f"{path} is unreadable ({exc}); fix or remove it") from None
            if bound.get("topic") != topic:
                raise EcomstreamError(
                    f"data dir {self.data_dir} holds topic {bound.get('topic')!r}, not {topic!r}: "
                    "use another --data-dir (mixing topics in one set of tables is refused)"
                )
            if bound.get("window") != window:
                raise EcomstreamError(
                    f"data dir {self.data_dir} has gold windows of {bound.get('window')!r}, not "
                    f"{window!r}: rebuild its tables with 'ecomstream reprocess --data-dir "
                    f'{self.data_dir} --window "{window}"\' first, or use another --data-dir'
                )
            held = bound.get("categories")
            if categories is not None and held is not None and set(held) != set(categories):
                raise EcomstreamError(
                    f"data dir {self.data_dir} holds tables checked against the catalogue "
                    f"{','.join(held)}, not {','.join(categories)}: rebuild them with "
                    f"'ecomstream reprocess --data-dir {self.data_dir} --categories ...' first, "
                    "or use another --data-dir"
                )
            self._refuse_old_layout()
            if categories is not None and held is None:
                _write_json(path, {**bound, "categories": list(categories)})
            return
        if self._has_tables():
            raise EcomstreamError(
                f"data dir {self.data_dir} already holds tables but no {BINDING_FILE}: "
                "refusing to guess which topic they came from; use another --data-dir"
            )
        _write_json(path, {**wanted, "created_at": time.time()})

    def lock(self, holder: str) -> None:
        """``<data-dir>/_ecomstream.lock``, locked (``flock``) until :meth:`close` (the end of
        the run) or the process's death: the kernel drops the lock when the process dies,
        kill -9 included, so a stale file never blocks anyone. The file names the holder, for
        the refusal's one line. Released at the end of the run, so that a process may run the
        pipeline on a data dir more than once, one run after the other (the tests do)."""
        import fcntl
        import os

        ensure_writable_dir(self.data_dir)
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the Spark JVM
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held = path.read_text(errors="replace").strip() or "another ecomstream process"
            os.close(fd)
            raise EcomstreamError(
                f"data dir {self.data_dir} is in use by {held}: stop it first, then run again"
            ) from None
        self._lock_fd = fd
        with contextlib.suppress(OSError):  # the name is for messages; a full disk keeps it out
            os.ftruncate(fd, 0)
            os.write(fd, f"'ecomstream {holder}' (pid {os.getpid()})\n".encode())

    def kafka_end_offsets(self) -> dict[int, int] | None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    enable_auto_commit=False,
                    request_timeout_ms=KAFKA_TIMEOUT_MS * 2,
                    bootstrap_timeout_ms=KAFKA_TIMEOUT_MS,
                )
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            ends = self._consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        except Exception:  # lag is informative only: never fail a batch for it
            return None

    def kafka_reachable(self) -> bool | None:
        """The broker answers a metadata request within KAFKA_TIMEOUT_MS (the outage watch)."""
        try:
            self._list_topics()
        except EcomstreamError:
            return False
        return True

    def kafka_source_state(self) -> Any:
        from ecomstream.jobs.checkpoint_state import source_state

        config = {
            "bootstrap_servers": self.bootstrap_servers,
            "request_timeout_ms": KAFKA_TIMEOUT_MS * 2,
            "bootstrap_timeout_ms": KAFKA_TIMEOUT_MS,
        }
        return source_state(config, self.topic)

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
        if self._lock_fd is not None:
            import os

            os.close(self._lock_fd)  # and with it the lock
            self._lock_fd = None

    # -- helpers ------------------------------------------------------------------------------
    def _refuse_old_layout(self) -> None:
        checkpoints = self.data_dir / CHECKPOINTS
        old = [q for q in OLD_LAYOUT_QUERIES if (checkpoints / q).exists()]
        if old and not any((checkpoints / q).exists() for q in QUERIES):
            raise EcomstreamError(
                f"data dir {self.data_dir} was written by the older three-query layout "
                f"({', '.join(old)} checkpoints): its tables would be re-read from the topic; "
                "use a new --data-dir"
            )

    def _has_tables(self) -> bool:
        return (
            any((self.data_dir / key / "_delta_log").exists() for key in TABLE_KEYS)
            or (self.data_dir / CHECKPOINTS).exists()
        )

    def _list_topics(self) -> set[str]:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=KAFKA_TIMEOUT_MS,
                bootstrap_timeout_ms=KAFKA_TIMEOUT_MS,
            )
        except (KafkaError, OSError, ValueError) as exc:
            raise EcomstreamError(
                f"Kafka broker at {self.bootstrap_servers} is unreachable "
                f"({type(exc).__name__} within {KAFKA_TIMEOUT_MS // 1000}s)"
            ) from None
        try:
            return set(admin.list_topics())
        except (KafkaError, OSError) as exc:
            raise EcomstreamError(
                f"Kafka broker at {self.bootstrap_servers} did not list its topics "
                f"({type(exc).__name__})"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                admin.close()


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def create(
    *,
    bootstrap_servers: str,
    topic: str,
    data_dir: str | Path,
    spark_conf: dict[str, str] | None = None,
    wait_for_topic_s: float = 0.0,
    master: str | None = None,
    shared_data_dir: bool = False,
    **_ignored: Any,
) -> LocalEnvironment:
    return LocalEnvironment(
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        data_dir=data_dir,
        spark_conf=spark_conf,
        wait_for_topic_s=wait_for_topic_s,
        master=master,
        shared_data_dir=shared_data_dir,
    )
