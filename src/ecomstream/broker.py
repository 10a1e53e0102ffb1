"""An embedded, real Apache Kafka broker (KRaft, one process as broker and controller).

The jars come from Maven Central once (see :mod:`ecomstream.jars`) and are cached. State lives
in ``<data-dir>/kafka/``: ``state.json`` (cluster id and ports, kept across restarts so the
KRaft voter set stays valid), ``broker.pid.json`` (the running process), ``logs/`` (the Kafka
log dirs) and ``broker.log``. ``start`` detaches by default and returns once the broker answers
metadata requests; ``--foreground`` keeps it attached until Ctrl-C.

Optionally (``sasl_ssl_port``) the broker also listens the way Azure Event Hubs' Kafka endpoint
does: SASL_SSL with the PLAIN mechanism, user ``$ConnectionString``, password an
Event-Hubs-shaped connection string, TLS from a self-signed certificate made by the JDK's
``keytool`` (``<data-dir>/kafka/tls/``; clients trust ``ca.pem``). That lets the databricks
profile's source code path run end to end on a laptop. The password never touches a file: the
JVM gets the listener's JAAS line in an environment variable that server.properties names
through Kafka's ``EnvVarConfigProvider``.

With ``event_hubs`` the broker also enforces what Event Hubs enforces and Apache Kafka lets
through (:func:`ecomstream.eventhubs.broker_overrides`): requests over 1,046,528 bytes closed,
idle connections closed by the server, record batches over 1 MB refused, no topic created on
first use (:func:`create_topic` makes one, as ``az eventhubs eventhub create`` does). Its log
then names every connection authenticated and every idle one the server closed, so a test can
count reconnects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecomstream import eventhubs, interrupts, jars
from ecomstream.errors import EcomstreamError, register_secret
from ecomstream.paths import ensure_writable_dir

DEFAULT_PORT = 9092
DEFAULT_HEAP = "768m"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
DEFAULT_PARTITIONS = 2
# The controller's hold on a broker that stopped heartbeating (see _server_properties)
BROKER_SESSION_MS = 3000
BROKER_HEARTBEAT_MS = 500
# The largest record batch the broker takes (message.max.bytes; Kafka's default is 1 MiB + 12,
# too small for a 1 MiB value with its key and framing). The producer's request limit matches
# (producer/sender.py). It also bounds a pipeline batch's bytes: at most
# --max-offsets-per-trigger records of at most this size (docs/operations.md). Event Hubs takes
# 1 MB per event whatever a client asks.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024

# The SASL_SSL listener: the host its certificate and advertised address name, and the
# environment variable that carries the listener's JAAS line (with the password) into the JVM.
SASL_SSL_HOST = "localhost"
SASL_USERNAME = "$ConnectionString"
_JAAS_ENV = "ECOMSTREAM_BROKER_SASL_JAAS"


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    controller_port: int
    data_dir: Path
    sasl_ssl_port: int | None = None
    event_hubs: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str | None:
        """``localhost:<port>`` of the SASL_SSL listener, if it has one."""
        return None if self.sasl_ssl_port is None else f"{SASL_SSL_HOST}:{self.sasl_ssl_port}"

    @property
    def ca_file(self) -> Path:
        """The PEM certificate a client trusts to talk to the SASL_SSL listener."""
        return kafka_dir(self.data_dir) / "tls" / "ca.pem"


def kafka_dir(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "kafka"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def random_cluster_id() -> str:
    """What ``kafka-storage.sh random-uuid`` prints (Kafka's ``Uuid.randomUuid``: a version-4
    UUID's 16 bytes in URL-safe base64 without padding, never starting with "-"), without a
    JVM start of its own."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Tls:
    keystore: Path
    store_password: str  # protects a throwaway self-signed key; not the SASL secret


def _server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    partitions: int,
    sasl_ssl_port: int | None = None,
    tls: _Tls | None = None,
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    advertised = list(listeners)
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl: list[str] = []
    if sasl_ssl_port is not None and tls is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{sasl_ssl_port}")
        advertised.append(f"SASL_SSL://{SASL_SSL_HOST}:{sasl_ssl_port}")
        protocols += ",SASL_SSL:SASL_SSL"
        sasl = [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN",
            # resolved from the JVM's environment at start: the password is in no file
            "config.providers=env",
            "config.providers.env.class="
            "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config=${{env:{_JAAS_ENV}}}",
            f"listener.name.sasl_ssl.ssl.keystore.location={tls.keystore}",
            "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
            f"listener.name.sasl_ssl.ssl.keystore.password={tls.store_password}",
            f"listener.name.sasl_ssl.ssl.key.password={tls.store_password}",
        ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *sasl,
            f"log.dirs={log_dir}",
            f"num.partitions={partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            f"message.max.bytes={MAX_MESSAGE_BYTES}",
            f"replica.fetch.max.bytes={MAX_MESSAGE_BYTES}",
            # a laptop has few cores: fewer threads than Kafka's server defaults
            "num.network.threads=2",
            "num.io.threads=4",
            # The active controller appends a no-op record to the metadata log every 500 ms by
            # default, so that other nodes see the quorum is alive; with one node it only burns
            # CPU: an idle broker took 7.4 CPU-s per 20 s at 500 ms, 5.2 at 5000 ms (its raft
            # thread 1.8 -> 0.3)
            "metadata.max.idle.interval.ms=5000",
            # A broker restarted after kill -9 cannot register while the controller still
            # holds its previous process's session (DUPLICATE_BROKER_REGISTRATION), and a new
            # controller gives every registered broker a whole session first: with Kafka's 9 s
            # default, each restart after a crash took 12-14 s here. Broker and controller are
            # one process on loopback, so a short session loses nothing; heartbeats every
            # 500 ms keep it alive (see docs/operations.md, "The broker after kill -9").
            f"broker.session.timeout.ms={BROKER_SESSION_MS}",
            f"broker.heartbeat.interval.ms={BROKER_HEARTBEAT_MS}",
            "",
        ]
    )


def with_overrides(properties: str, overrides: dict[str, str]) -> str:
    """``properties`` (server.properties text) with each key of ``overrides`` set to its value:
    in place where the key is already set (so no key appears twice), appended otherwise."""
    left = dict(overrides)
    lines = properties.rstrip("\n").split("\n")
    for i, line in enumerate(lines):
        key = line.partition("=")[0]
        if key in left:
            lines[i] = f"{key}={left.pop(key)}"
    return "\n".join([*lines, *(f"{k}={v}" for k, v in left.items()), ""])


_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""
# The Event Hubs-shaped broker's log also names each connection that authenticated ("Successfully
# authenticated with ...", DEBUG), each idle one the server closed ("About to close the idle
# connection ...", TRACE, then the client's software name) and the thread, which names the
# listener: what a test counts to tell a reconnect storm from a reconnect, and whose idle
# connections the server had to close.
_LOG4J2_CONNECTIONS = """logger.selector.name = org.apache.kafka.common.network.Selector
logger.selector.level = TRACE
"""
_LOG4J2_THREAD = "[%d] %p [%t] %m (%c)%n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0): it is not running
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid_runs(pid: int, *marks: str) -> bool:
    """The pid is alive and its command line holds every one of ``marks`` (pids get reused)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return all(mark in cmdline for mark in marks)


def _is_our_broker(pid: int, kdir: Path) -> bool:
    """The pid still belongs to the broker of this data dir."""
    return _pid_runs(pid, "kafka.Kafka", str(kdir))


def running(data_dir: Path) -> BrokerInfo | None:
    """The broker of this data dir, if it is running."""
    kdir = kafka_dir(data_dir)
    pid_file = kdir / "broker.pid.json"
    try:
        info = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    if not _is_our_broker(int(info["pid"]), kdir):
        return None
    return BrokerInfo(
        pid=int(info["pid"]),
        port=int(info["port"]),
        controller_port=int(info["controller_port"]),
        data_dir=kdir.parent,
        sasl_ssl_port=int(info["sasl_ssl_port"]) if info.get("sasl_ssl_port") else None,
        event_hubs=bool(info.get("event_hubs")),
    )


def wait_ready(
    bootstrap: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the broker takes produce requests again: it answers a metadata request (an
    open port is not enough) and every partition of every topic it holds answers a ListOffsets
    request, which only a partition's leader answers. A restarted broker answers metadata
    before it leads its partitions again (a clean stop leaves them leaderless until the broker
    registers anew), and a producer's records sent then wait for a leader.

    The client is made only once the port accepts a connection: a kafka-python client that
    finds no listener backs off exponentially (0.1, 0.4, 1.7, 5.6 s ...) up to its 30 s
    bootstrap timeout, which made a broker that was up after 7 s look ready after 30."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EcomstreamError(
                f"Kafka broker exited with code {proc.returncode} during start-up"
            )
        try:
            socket.create_connection((host or "localhost", int(port)), timeout=1.0).close()
        except OSError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                reconnect_backoff_max_ms=500,
            )
            try:
                topics = admin.list_topics()
            finally:
                admin.close()
            if partitions_led(bootstrap, topics):
                return
            last_error = "partitions without a leader"
        except (KafkaError, OSError, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise EcomstreamError(
        f"Kafka broker at {bootstrap} did not answer within {timeout_s:.0f}s ({last_error})"
    )


def partitions_led(bootstrap: str, topics: list[str]) -> bool:
    """Every partition of ``topics`` answers a ListOffsets request (only a leader does)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    if not topics:
        return True
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=3000,
        bootstrap_timeout_ms=3000,
        reconnect_backoff_max_ms=500,
    )
    try:
        partitions = []
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                return False
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.end_offsets(partitions, timeout_ms=3000)
        return True
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        consumer.close()


def _last_log_error(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").splitlines()
        for line in reversed(lines):
            if " ERROR " in line or "Exception" in line:
                return line.strip()[:300]
    return f"see {log}"


def _make_tls(kdir: Path) -> _Tls:
    """A self-signed certificate for ``localhost``/127.0.0.1 from the JDK's keytool, made once
    per data dir; ``ca.pem`` is what clients trust (kafka-python ``ssl_cafile``, Java clients
    ``ssl.truststore.type=PEM``)."""
    tls_dir = ensure_writable_dir(kdir / "tls", "Kafka TLS dir")
    keystore, ca, password_file = tls_dir / "broker.p12", tls_dir / "ca.pem", tls_dir / "store.pw"
    if keystore.exists() and ca.exists() and password_file.exists():
        return _Tls(keystore, password_file.read_text().strip())
    keytool = shutil.which("keytool")
    if keytool is None:
        raise EcomstreamError("keytool not found on PATH: the SASL_SSL listener needs a JDK")
    password = secrets.token_hex(16)
    for stale in (keystore, ca):
        stale.unlink(missing_ok=True)
    _run_tool(
        [
            keytool,
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-validity",
            "3650",
            "-dname",
            f"CN={SASL_SSL_HOST}",
            "-ext",
            f"SAN=dns:{SASL_SSL_HOST},ip:127.0.0.1",
            "-storetype",
            "PKCS12",
            "-keystore",
            str(keystore),
            "-storepass",
            password,
            "-keypass",
            password,
        ],
        what="keytool",
    )
    _run_tool(
        [
            keytool,
            "-exportcert",
            "-rfc",
            "-alias",
            "broker",
            "-keystore",
            str(keystore),
            "-storetype",
            "PKCS12",
            "-storepass",
            password,
            "-file",
            str(ca),
        ],
        what="keytool",
    )
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return _Tls(keystore, password)


def _sasl_jaas_line(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{SASL_USERNAME}="{escaped}";'
    )


def start(
    data_dir: Path,
    port: int = DEFAULT_PORT,
    *,
    heap: str = DEFAULT_HEAP,
    partitions: int = DEFAULT_PARTITIONS,
    ready_timeout_s: float = READY_TIMEOUT_S,
    sasl_ssl_port: int | None = None,
    sasl_password: str | None = None,
    event_hubs: bool = False,
) -> BrokerInfo:
    """Start the broker of ``data_dir`` detached and wait until it is ready.

    With ``sasl_ssl_port`` it also listens there with SASL_SSL + PLAIN, accepting user
    ``$ConnectionString`` with password ``sasl_password`` (an Event-Hubs-shaped connection
    string), like Azure Event Hubs' Kafka endpoint. With ``event_hubs`` it enforces Event Hubs'
    limits (module docstring); its idle limit is ``$ECOMSTREAM_EVENTHUBS_IDLE_MS``, Azure's
    240 s unless set, and the clients read the same variable.
    """
    if shutil.which("java") is None:
        raise EcomstreamError("java not found on PATH: the embedded Kafka broker needs Java 17+")
    if not 0 < port < 65536:
        raise EcomstreamError(f"--port {port} is not a TCP port (1-65535)")
    if sasl_ssl_port is not None:
        register_secret(sasl_password)
        if not 0 < sasl_ssl_port < 65536 or sasl_ssl_port == port:
            raise EcomstreamError(
                f"--sasl-ssl-port {sasl_ssl_port} is not a free TCP port distinct from --port"
            )
        if not sasl_password:
            raise EcomstreamError(
                "--sasl-ssl-port needs the password clients will present: set "
                "ECOMSTREAM_EVENTHUB_CONNECTION_STRING to an Event-Hubs-shaped connection string"
            )
    data_dir = ensure_writable_dir(Path(data_dir))
    kdir = ensure_writable_dir(kafka_dir(data_dir), "Kafka state dir")
    already = running(data_dir)
    if already is not None:
        raise EcomstreamError(
            f"a broker for {data_dir} is already running at {already.bootstrap} (pid {already.pid})"
        )
    if not _port_free(port):
        raise EcomstreamError(
            f"port {port} on 127.0.0.1 is already in use: choose another with --port"
        )
    if sasl_ssl_port is not None and not _port_free(sasl_ssl_port):
        raise EcomstreamError(
            f"port {sasl_ssl_port} on 127.0.0.1 is already in use: choose another --sasl-ssl-port"
        )

    classpath = jars.kafka_classpath()
    state_file = kdir / "state.json"
    log_dir = kdir / "logs"
    state: dict[str, Any] = {}
    if state_file.exists():
        state = json.loads(state_file.read_text())
    controller_port = int(state.get("controller_port") or 0) or free_port()
    if controller_port == port or not _port_free(controller_port):
        raise EcomstreamError(
            f"the broker's controller port {controller_port} (fixed when {data_dir} was first "
            "formatted) is in use by another process"
        )
    tls = _make_tls(kdir) if sasl_ssl_port is not None else None
    props = kdir / "server.properties"
    properties = _server_properties(port, controller_port, log_dir, partitions, sasl_ssl_port, tls)
    if event_hubs:
        properties = with_overrides(properties, eventhubs.broker_overrides())
    props.write_text(properties)
    log4j = kdir / "log4j2.properties"
    log_file = kdir / "broker.log"
    log4j_text = _LOG4J2.format(log=log_file)
    if event_hubs:
        log4j_text = log4j_text.replace("[%d] %p %m (%c)%n", _LOG4J2_THREAD)
        log4j_text += _LOG4J2_CONNECTIONS
    log4j.write_text(log4j_text)

    # KAFKA_OPTS: extra JVM options, as Kafka's own scripts take them (the tests ask for C1)
    java_options = shlex.split(os.environ.get("KAFKA_OPTS", ""))
    java = ["java", *java_options, "-cp", classpath]
    if not (log_dir / "meta.properties").exists():
        cluster_id = str(state.get("cluster_id") or "") or random_cluster_id()
        _run_tool(
            [
                *java,
                f"-Dlog4j2.configurationFile={log4j}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--standalone",
                "--ignore-formatted",
            ]
        )
        state = {"cluster_id": cluster_id, "controller_port": controller_port}
        state_file.write_text(json.dumps(state))

    cmd = [
        "java",
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Decomstream.kafka.dir={kdir}",
        *java_options,
        "-cp",
        classpath,
        "kafka.Kafka",
        str(props),
    ]
    env = {k: v for k, v in os.environ.items() if k != _JAAS_ENV}
    if sasl_ssl_port is not None and sasl_password:
        env[_JAAS_ENV] = _sasl_jaas_line(sasl_password)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with interrupts.held():  # a Ctrl-C now is raised once the pid is known and written
            with open(kdir / "broker.out", "ab") as out:
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=kdir,
                    env=env,
                )
            info = BrokerInfo(
                pid=proc.pid,
                port=port,
                controller_port=controller_port,
                data_dir=data_dir,
                sasl_ssl_port=sasl_ssl_port,
                event_hubs=event_hubs,
            )
            (kdir / "broker.pid.json").write_text(
                json.dumps(
                    {
                        "pid": proc.pid,
                        "port": port,
                        "controller_port": controller_port,
                        "sasl_ssl_port": sasl_ssl_port,
                        "event_hubs": event_hubs,
                    }
                )
            )
        wait_ready(info.bootstrap, ready_timeout_s, proc)
    except EcomstreamError as exc:
        if proc is None:
            raise
        _terminate(proc.pid, kdir)
        raise EcomstreamError(f"{exc}: {_last_log_error(log_file)}") from None
    except BaseException:
        if proc is not None:
            _terminate(proc.pid, kdir)
        raise
    return info


def _run_tool(cmd: list[str], what: str = "Kafka storage tool") -> str:
    proc: subprocess.Popen[str] | None = None
    try:
        with interrupts.held():  # a Ctrl-C now is raised once the tool can be killed
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate()
    except BaseException:
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    if proc.returncode != 0:
        detail = (stderr or stdout).strip().splitlines()
        raise EcomstreamError(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return stdout


def _terminate(pid: int, kdir: Path, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (Kafka shuts down cleanly, flushing its logs), SIGKILL after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)
    with contextlib.suppress(FileNotFoundError):
        (kdir / "broker.pid.json").unlink()


def _reap(pid: int) -> None:
    """Collect the exit status when the broker is our own child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(data_dir: Path) -> BrokerInfo | None:
    """Stop the broker of ``data_dir``; returns what was stopped, or None if none was running."""
    info = running(data_dir)
    if info is None:
        with contextlib.suppress(FileNotFoundError):
            (kafka_dir(data_dir) / "broker.pid.json").unlink()
        return None
    _terminate(info.pid, kafka_dir(data_dir))
    return info


def create_topic(data_dir: Path, topic: str, partitions: int = DEFAULT_PARTITIONS) -> BrokerInfo:
    """Create ``topic`` with ``partitions`` on the running broker of ``data_dir`` (what the
    Event Hubs-shaped broker needs first, as an event hub is created before it is used).
    An existing topic with as many partitions is fine; with another count it is an error."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not 1 <= partitions <= 1024:
        raise EcomstreamError(f"--partitions {partitions} must be from 1 to 1024")
    info = running(data_dir)
    if info is None:
        raise EcomstreamError(
            f"no broker running for data dir {Path(data_dir).resolve()}: start one with "
            "'ecomstream kafka start'"
        )
    try:
        admin = KafkaAdminClient(bootstrap_servers=info.bootstrap, request_timeout_ms=15_000)
    except (KafkaError, OSError) as exc:
        raise EcomstreamError(
            f"Kafka at {info.bootstrap} did not answer ({type(exc).__name__})"
        ) from None
    try:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            described = admin.describe_topics([topic])
            have = len(described[0]["partitions"]) if described else 0
            if have != partitions:
                raise EcomstreamError(
                    f"topic {topic!r} already exists with {have} partitions, not {partitions}"
                ) from None
        except KafkaError as exc:
            raise EcomstreamError(
                f"Kafka at {info.bootstrap} did not create topic {topic!r} ({exc})"
            ) from None
    finally:
        admin.close()
    return info


def run_foreground(data_dir: Path, port: int = DEFAULT_PORT, **kwargs: object) -> BrokerInfo:
    """Start, print nothing more, and stop the broker when interrupted (Ctrl-C or SIGTERM)."""
    info = start(data_dir, port, **kwargs)  # type: ignore[arg-type]
    print(info.bootstrap, flush=True)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        while _pid_alive(info.pid):
            _reap(info.pid)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminate(info.pid, kafka_dir(data_dir))
    return info
