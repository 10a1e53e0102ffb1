"""``ecomstream demo``: broker, topic, pipeline, producer and dashboard, stopped in order.

Start-up checks everything that can be checked before anything starts (data dir writable and
bound to this topic and window, ports free), so bad input leaves nothing behind. From then on
every start is recorded and the ``finally`` stops what was started, in reverse dependency order:
producer (no new records), pipeline (queries commit and stop), broker, dashboard.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ecomstream.errors import EcomstreamError
from ecomstream.paths import ensure_writable_dir

PRODUCER_STOP_S = 20.0
PIPELINE_STOP_S = 90.0
DRAIN_TIMEOUT_S = 30.0
# the pipeline starts beside the broker and waits this long for it and the topic
PIPELINE_WAIT_FOR_TOPIC_S = 120.0
TOPIC_PARTITIONS = 2


@dataclass(frozen=True)
class DemoSettings:
    data_dir: Path
    topic: str
    bootstrap_servers: str | None
    kafka_port: int
    dashboard_port: int
    rate: float
    fault_rate: float
    window: str
    duration: float | None
    trigger_interval: str | None
    status_interval: float
    seed: int | None
    serve_only: bool = False
    pipeline_memory: str = "1536m"
    drain_timeout: float = DRAIN_TIMEOUT_S
    # the pipeline's Spark: None runs it on local[*] (docs/scaling.md)
    master: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)
    shared_data_dir: bool = False
    dashboard_host: str = "127.0.0.1"


def say(message: str) -> None:
    print(message, flush=True)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_binding(data_dir: Path, topic: str, window: str) -> None:
    """Refuse a data dir whose tables hold another topic (or another window) up front."""
    from ecomstream.demo.tables import BINDING_FILE
    from ecomstream.status_cli import read_binding

    bound = read_binding(data_dir)
    if not bound:
        if any((data_dir / layer).is_dir() for layer in ("bronze", "silver", "gold")):
            raise EcomstreamError(
                f"data dir {data_dir} holds tables but no {BINDING_FILE}, so which topic they "
                "came from is unknown: use another --data-dir"
            )
        return
    if bound.get("topic") != topic:
        raise EcomstreamError(
            f"data dir {data_dir} belongs to topic {bound.get('topic')!r}, not {topic!r}: "
            f"pass --topic {bound.get('topic')} to continue it, or another --data-dir"
        )
    if bound.get("window") not in (None, window):
        raise EcomstreamError(
            f"data dir {data_dir} has gold windows of {bound.get('window')!r}, not {window!r}: "
            f"pass --window {bound.get('window')!r} to continue it, or another --data-dir"
        )


def create_topic(bootstrap: str, topic: str, partitions: int = TOPIC_PARTITIONS) -> bool:
    """Create ``topic`` unless it exists; True when it was created now."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        if topic in set(admin.list_topics()):
            return False
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise EcomstreamError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from None
    finally:
        admin.close()


def topic_end_offsets(bootstrap: str, topic: str) -> int | None:
    """Sum of the topic's end offsets now, or None if Kafka does not say."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except KafkaError:
        return None
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return sum(consumer.end_offsets(tps).values()) if tps else None
    except KafkaError:
        return None
    finally:
        consumer.close()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo the way Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not leave a JVM behind, so it only says so."""
    warned = False

    def hold_on(signum: int, frame: FrameType | None) -> None:
        nonlocal warned
        if not warned:
            print("ecomstream demo: still stopping, please wait", file=sys.stderr, flush=True)
            warned = True

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, hold_on) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Demo:
    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.data_dir = settings.data_dir
        self.logs = settings.data_dir / "logs"
        self.started_broker = False
        self.bootstrap: str | None = settings.bootstrap_servers
        self.server: Any = None
        self.producer: Any = None
        self.pipeline: Any = None
        self.reader: Any = None
        self.running = False

    # -- start-up -------------------------------------------------------------------------
    def preflight(self) -> None:
        s = self.s
        if s.serve_only:
            if not self.data_dir.is_dir():
                raise EcomstreamError(f"data dir {self.data_dir} does not exist")
            return
        from ecomstream.transforms.gold import parse_window

        parse_window(s.window)
        check_binding(self.data_dir, s.topic, s.window)
        self.check_spark()
        if not s.serve_only and s.bootstrap_servers is None:
            from ecomstream import broker

            if (
                broker.running(self.data_dir) is None
                and s.kafka_port
                and not port_free(s.kafka_port)
            ):
                raise EcomstreamError(
                    f"Kafka port {s.kafka_port} on 127.0.0.1 is already in use: pass "
                    "--kafka-port (0 picks a free one), or --bootstrap-servers to use the "
                    "broker that is running there"
                )

    def check_spark(self) -> None:
        """The pipeline's master can reach the tables and the broker (the pipeline would say
        so too, but only after the broker and the dashboard started)."""
        from ecomstream.spark import storage_problem

        s = self.s
        if s.master is None:
            return
        bootstrap = s.bootstrap_servers or f"127.0.0.1:{s.kafka_port}"
        problem = storage_problem(s.master, self.data_dir, bootstrap, s.shared_data_dir)
        if problem is not None:
            raise EcomstreamError(problem)

    def start_dashboard(self) -> None:
        from ecomstream.demo.dashboard import Dashboard
        from ecomstream.demo.server import DashboardServer
        from ecomstream.demo.tables import TableReader

        self.reader = TableReader(self.data_dir)
        host = self.s.dashboard_host
        self.server = DashboardServer(Dashboard(self.reader), self.s.dashboard_port, host)
        self.server.start()

    def warn_if_exposed(self) -> None:
        from ecomstream.demo.server import loopback

        host = self.s.dashboard_host
        if not loopback(host):
            say(f"dashboard: listening on {host}, not only this machine (--dashboard-host)")

    def start_broker(self) -> None:
        """Find or start the broker. Starting one, the pipeline is launched first, waiting for
        the topic, so its JVM starts and warms up while the broker's does."""
        from ecomstream import broker

        if self.bootstrap is not None:
            broker.wait_ready(self.bootstrap, 20.0)
            say(f"broker: using {self.bootstrap}")
            return
        info = broker.running(self.data_dir)
        if info is not None:
            self.bootstrap = info.bootstrap
            say(
                f"broker: the data dir's broker is already running at {info.bootstrap} "
                f"(pid {info.pid}); the demo leaves it running"
            )
            return
        port = self.s.kafka_port or broker.free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.start_pipeline()
        say(f"broker: starting the embedded Kafka broker on 127.0.0.1:{port} ...")
        started = time.monotonic()
        # from the first moment, so a Ctrl-C inside start() still leads to stop()
        self.started_broker = True
        info = broker.start(self.data_dir, port)
        self.bootstrap = info.bootstrap
        say(
            f"broker: ready at {info.bootstrap} (pid {info.pid}) in "
            f"{time.monotonic() - started:.1f} s"
        )

    def start_pipeline(self) -> None:
        from ecomstream.demo.children import Child

        s = self.s
        assert self.bootstrap is not None
        pipeline_args = [
            "pipeline",
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            s.topic,
            "--data-dir",
            str(self.data_dir),
            "--window",
            s.window,
            "--wait-for-topic",
            f"{PIPELINE_WAIT_FOR_TOPIC_S:g}",
        ]
        if s.trigger_interval:
            pipeline_args += ["--trigger-interval", s.trigger_interval]
        if s.master is not None:
            pipeline_args += ["--master", s.master]
        for key, value in s.spark_conf.items():
            pipeline_args += ["--spark-conf", f"{key}={value}"]
        if s.shared_data_dir:
            pipeline_args.append("--shared-data-dir")
        # spark-submit's --driver-memory wins over the session's spark.driver.memory (2g): the
        # demo's pipeline needs less, and the whole demo must fit in 4 GiB
        memory = {"PYSPARK_SUBMIT_ARGS": f"--driver-memory {s.pipeline_memory} pyspark-shell"}
        self.pipeline = Child("pipeline", pipeline_args, self.logs / "pipeline.log", memory)
        say(f"pipeline: starting (pid {self.pipeline.pid}, log {self.pipeline.log_path})")

    def start_children(self) -> None:
        """The topic, the pipeline (unless start_broker launched it already), the producer."""
        from ecomstream.demo.children import Child

        s = self.s
        assert self.bootstrap is not None
        created = create_topic(self.bootstrap, s.topic)
        say(f"topic: {s.topic} ({'created' if created else 'exists'})")
        if self.pipeline is None:
            self.start_pipeline()
        producer_args = [
            "produce",
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            s.topic,
            "--rate",
            f"{s.rate:g}",
            "--fault-rate",
            f"{s.fault_rate:g}",
            "--progress",
            "off",
            "--summary-json",
            str(self.logs / "producer-summary.json"),
        ]
        if s.seed is not None:
            producer_args += ["--seed", str(s.seed)]
        self.producer = Child("producer", producer_args, self.logs / "producer.log")
        say(
            f"producer: {s.rate:g} orders/s, fault rate {s.fault_rate:g} "
            f"(pid {self.producer.pid}, log {self.producer.log_path})"
        )

    # -- running --------------------------------------------------------------------------
    def status_text(self) -> str | None:
        from ecomstream.demo.status import render_text, summarize
        from ecomstream.demo.tables import METRICS

        snap = self.reader.read(METRICS)
        if snap.table is None:
            return None
        return render_text(summarize(snap.table.to_pylist(), metrics_version=snap.version))

    def watch(self) -> str:
        """Print status until the duration ends, a child dies or Ctrl-C; returns why it ended."""
        deadline = time.monotonic() + self.s.duration if self.s.duration else None
        next_status = time.monotonic() + self.s.status_interval
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "duration"
            for child in (self.pipeline, self.producer):
                if child is not None and child.poll() is not None:
                    tail = child.tail()
                    raise EcomstreamError(
                        f"{child.name} exited with code {child.poll()} (log {child.log_path})"
                        + (f": {tail.splitlines()[-1]}" if tail else ""),
                        exit_code=1,
                    )
            if now >= next_status:
                next_status = now + self.s.status_interval
                try:
                    text = self.status_text()
                except EcomstreamError as exc:
                    text = f"status unavailable: {exc}"
                say("\n" + (text or "status: waiting for the pipeline's first batch ..."))
            time.sleep(0.25)

    def drain(self) -> None:
        """After the producer stopped: give the pipeline until everything sent is in gold."""
        from ecomstream.demo.status import summarize
        from ecomstream.demo.tables import METRICS

        if self.bootstrap is None or self.pipeline is None or self.pipeline.poll() is not None:
            return
        end = topic_end_offsets(self.bootstrap, self.s.topic)
        if end is None:
            return
        deadline = time.monotonic() + self.s.drain_timeout
        processed: int | None = None
        while time.monotonic() < deadline and self.pipeline.poll() is None:
            snap = self.reader.read(METRICS)
            if snap.table is not None:
                status = summarize(snap.table.to_pylist())
                processed = status.kafka_processed_offset
                layers = status.layers
                times = [
                    layers[q].last_batch_at if q in layers else None
                    for q in ("bronze", "silver", "gold")
                ]
                caught_up = (
                    processed is not None
                    and processed >= end
                    and None not in times
                    and times[0] <= times[1] <= times[2]  # type: ignore[operator]
                )
                if caught_up:
                    say(f"pipeline: caught up with all {end} records on the topic")
                    return
            time.sleep(1.0)
        say(f"pipeline: stopping before it caught up ({processed} of {end} records processed)")

    # -- stopping -------------------------------------------------------------------------
    def stop(self, drain: bool) -> list[str]:
        """Stop everything that was started, in order; returns problems worth reporting."""
        from ecomstream import broker

        problems: list[str] = []
        if self.producer is not None and self.producer.poll() is None:
            say("stopping: producer ...")
            code = self.producer.stop(PRODUCER_STOP_S)
            if code not in (0, 130, -signal.SIGINT):
                problems.append(f"producer exited with code {code} (log {self.producer.log_path})")
        if self.producer is not None:
            summary = self.producer.tail(3)
            if summary:
                say("producer: " + summary.replace("\n", "\n          "))
        if drain:
            self.drain()
        if self.pipeline is not None and self.pipeline.poll() is None:
            say("stopping: pipeline (queries finish their batch and commit) ...")
            code = self.pipeline.stop(PIPELINE_STOP_S)
            if code != 0:
                problems.append(f"pipeline exited with code {code} (log {self.pipeline.log_path})")
        if self.started_broker:
            say("stopping: broker ...")
            broker.stop(self.data_dir)
        if self.server is not None:
            self.server.stop()
        return problems

    def run(self) -> int:
        s = self.s
        self.preflight()
        if not s.serve_only:
            ensure_writable_dir(self.data_dir)
        ending = "interrupted during start-up"
        drain = False
        try:
            with _sigterm_as_interrupt():
                try:
                    self.start_dashboard()
                    say(f"dashboard: {self.server.url}")
                    self.warn_if_exposed()
                    if not s.serve_only:
                        self.start_broker()
                        self.start_children()
                    say(
                        f"data dir {self.data_dir}; "
                        + (f"stops after {s.duration:g} s" if s.duration else "Ctrl-C stops")
                        + (
                            ""
                            if s.serve_only
                            else f"; 'ecomstream status --data-dir {self.data_dir}' any time"
                        )
                    )
                    self.running = True
                    ending = self.watch()
                    drain = ending == "duration"
                except KeyboardInterrupt:
                    ending = "Ctrl-C" if self.running else "interrupted during start-up"
        finally:
            with _no_interrupts():
                problems = self.stop(drain)
        if self.running and not s.serve_only:
            with contextlib.suppress(EcomstreamError):
                text = self.status_text()
                if text:
                    say("\n" + text)
        for problem in problems:
            print(f"ecomstream demo: {problem}", file=sys.stderr, flush=True)
        say(f"demo stopped ({ending}); everything it started has exited")
        if not self.running:
            return 130
        return 1 if problems else 0
