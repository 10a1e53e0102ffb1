"""A real Spark standalone cluster on this machine: one master and N workers on 127.0.0.1.

Each daemon is the pyspark package's own launcher (``<pyspark>/bin/spark-class`` with
SPARK_HOME = the package dir), the same classes a Spark distribution's ``sbin`` scripts start.
It is managed the way :mod:`ecomstream.broker` manages the broker. State lives in
``<data-dir>/spark/``: ``cluster.json`` (pids and ports), ``master.log``, ``worker-<n>.log`` and
``work/worker-<n>/`` (each worker's scratch dir: per application and executor, the jars it
fetched and its stdout/stderr). ``start`` detaches and returns once the master's JSON status
page says ALIVE and lists every worker ALIVE; ``stop`` sends SIGTERM (workers first: they stop
their executors), then SIGKILL to whatever is left of each daemon's process group.

Everything listens on 127.0.0.1 alone, so every worker, and every executor it starts, runs on
this machine and shares its filesystem: a plain ``--data-dir`` is right for this cluster's
master (``ecomstream.spark.executors_on_this_machine``; docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecomstream import interrupts
from ecomstream.broker import (
    _last_log_error,
    _pid_alive,
    _pid_runs,
    _port_free,
    _reap,
    free_port,
)
from ecomstream.errors import EcomstreamError
from ecomstream.paths import ensure_writable_dir

HOST = "127.0.0.1"
DEFAULT_PORT = 7077
DEFAULT_WEBUI_PORT = 8080
DEFAULT_WORKERS = 2
DEFAULT_WORKER_CORES = 1
DEFAULT_WORKER_MEMORY = "1g"
# the machine is shared with Kafka and the driver: the daemons only schedule, executors work
DEFAULT_DAEMON_MEMORY = "256m"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
MAX_WORKERS = 16
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATE_FILE = "cluster.json"
_MEMORY = re.compile(r"[1-9][0-9]*[mMgG]")


@dataclass(frozen=True)
class Daemon:
    """One master or worker JVM: its pid (also its process group), RPC and web UI ports."""

    name: str
    pid: int
    port: int
    webui_port: int

    @property
    def webui_url(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    def alive(self, sdir: Path) -> bool:
        return _is_ours(self.pid, sdir)


@dataclass(frozen=True)
class ClusterInfo:
    data_dir: Path
    master: Daemon
    workers: tuple[Daemon, ...]

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master.port}"

    @property
    def webui_url(self) -> str:
        return self.master.webui_url

    @property
    def spark_dir(self) -> Path:
        return spark_dir(self.data_dir)

    def alive_workers(self) -> list[Daemon]:
        return [w for w in self.workers if w.alive(self.spark_dir)]


def spark_dir(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "spark"


def spark_home() -> Path:
    """The pyspark package's directory: a Spark home with ``bin/spark-class`` and ``jars/``
    (found without importing pyspark, which costs a second)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise EcomstreamError("pyspark is not installed: the Spark cluster needs its launcher")
    return Path(spec.origin).parent


def parse_memory(text: str) -> str:
    """``512m``, ``1g``: what Spark's ``--memory`` and SPARK_DAEMON_MEMORY take."""
    if not _MEMORY.fullmatch(str(text).strip()):
        raise ValueError(f"{text!r} must look like 512m or 1g")
    return str(text).strip()


def _daemon_command(home: Path, main_class: str, port: int, webui_port: int) -> list[str]:
    launcher = str(home / "bin" / "spark-class")
    return [
        launcher,
        main_class,
        "--host",
        HOST,
        "--port",
        str(port),
        "--webui-port",
        str(webui_port),
    ]


def master_command(home: Path, port: int, webui_port: int) -> list[str]:
    return _daemon_command(home, MASTER_CLASS, port, webui_port)


def worker_command(
    home: Path,
    master_url: str,
    *,
    port: int,
    webui_port: int,
    cores: int,
    memory: str,
    work_dir: Path,
) -> list[str]:
    return [
        *_daemon_command(home, WORKER_CLASS, port, webui_port),
        "--cores",
        str(cores),
        "--memory",
        memory,
        "--work-dir",
        str(work_dir),
        master_url,
    ]


def daemon_env(home: Path, sdir: Path, daemon_memory: str) -> dict[str, str]:
    """The launcher's environment: this Spark home, a small heap, loopback only; the data dir
    in a system property, so a pid is recognised as this cluster's daemon (pids get reused).
    ``spark.port.maxRetries=0``: a port in use fails the start instead of Spark silently
    taking the next one, which the pid file would not know."""
    env = dict(os.environ)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    env.update(
        {
            "SPARK_HOME": str(home),
            "SPARK_DAEMON_MEMORY": daemon_memory,
            "SPARK_LOCAL_IP": HOST,
            # the launcher splits this on spaces outside double quotes (a dir may hold spaces)
            "SPARK_DAEMON_JAVA_OPTS": " ".join(
                [
                    '"-Decomstream.spark.dir={}"'.format(
                        str(sdir).replace("\\", "\\\\").replace('"', '\\"')
                    ),
                    "-Dspark.port.maxRetries=0",
                    "-Djava.awt.headless=true",
                ]
            ),
        }
    )
    return env


# -- status -----------------------------------------------------------------------------------
def master_state(webui_port: int, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """The master's JSON status page (``/json/``: workers, applications, status), or None."""
    return _get_json(f"http://{HOST}:{webui_port}/json/", timeout_s)


def worker_state(webui_url: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """A worker's JSON status page (``/json/``: its executors, running and finished)."""
    return _get_json(webui_url.rstrip("/") + "/json/", timeout_s)


def _get_json(url: str, timeout_s: float) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            value = json.loads(response.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return value if isinstance(value, dict) else None


def alive_worker_ports(state: dict[str, Any] | None) -> set[int]:
    """RPC ports of the workers the master lists as ALIVE."""
    workers = (state or {}).get("workers") or []
    return {int(w["port"]) for w in workers if w.get("state") == "ALIVE" and "port" in w}


def _is_ours(pid: int, sdir: Path) -> bool:
    """The pid is still a daemon of this data dir's cluster."""
    return _pid_runs(pid, f"-Decomstream.spark.dir={sdir}")


def _read_state(sdir: Path) -> ClusterInfo | None:
    try:
        raw = json.loads((sdir / STATE_FILE).read_text())
        master = Daemon(**raw["master"])
        workers = tuple(Daemon(**w) for w in raw.get("workers", []))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ClusterInfo(data_dir=sdir.parent, master=master, workers=workers)


def _write_state(info: ClusterInfo) -> None:
    def daemon(d: Daemon) -> dict[str, Any]:
        return {"name": d.name, "pid": d.pid, "port": d.port, "webui_port": d.webui_port}

    path = info.spark_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    state = {"master": daemon(info.master), "workers": [daemon(w) for w in info.workers]}
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def running(data_dir: Path) -> ClusterInfo | None:
    """The cluster of this data dir, if its master is running."""
    sdir = spark_dir(data_dir)
    info = _read_state(sdir)
    if info is None or not info.master.alive(sdir):
        return None
    return info


# -- start and stop ---------------------------------------------------------------------------
def start(
    data_dir: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    port: int = DEFAULT_PORT,
    webui_port: int = DEFAULT_WEBUI_PORT,
    worker_cores: int = DEFAULT_WORKER_CORES,
    worker_memory: str = DEFAULT_WORKER_MEMORY,
    daemon_memory: str = DEFAULT_DAEMON_MEMORY,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ClusterInfo:
    """Start the master and ``workers`` workers of ``data_dir`` detached; return once the master
    lists every worker ALIVE. ``port``/``webui_port`` 0 pick free ports."""
    if not 1 <= workers <= MAX_WORKERS:
        raise EcomstreamError(f"--workers {workers}: between 1 and {MAX_WORKERS}")
    if worker_cores < 1:
        raise EcomstreamError(f"--worker-cores {worker_cores}: at least 1")
    for option, memory in (("--worker-memory", worker_memory), ("--daemon-memory", daemon_memory)):
        try:
            parse_memory(memory)
        except ValueError as exc:
            raise EcomstreamError(f"{option} {exc}") from None
    ports_asked = (("--port", port), ("--webui-port", webui_port))
    for option, value in ports_asked:
        if not 0 <= value < 65536:
            raise EcomstreamError(f"{option} {value} is not a TCP port (0-65535; 0 = any free)")
    if port and port == webui_port:
        raise EcomstreamError("--port and --webui-port must differ")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise EcomstreamError("java not found on PATH: the Spark cluster needs Java 17+")
    home = spark_home()
    if not (home / "bin" / "spark-class").is_file():
        raise EcomstreamError(f"{home / 'bin' / 'spark-class'} is missing: reinstall pyspark")
    data_dir = ensure_writable_dir(Path(data_dir))
    sdir = ensure_writable_dir(spark_dir(data_dir), "Spark cluster dir")
    already = running(data_dir)
    if already is not None:
        raise EcomstreamError(
            f"a Spark master for {data_dir} is already running at {already.master_url} "
            f"(pid {already.master.pid})"
        )
    for option, value in ports_asked:
        if value and not _port_free(value):
            raise EcomstreamError(
                f"port {value} on {HOST} is already in use: choose another with {option}"
            )
    ports = _free_ports(2 + 2 * workers, taken={port, webui_port})
    port, webui_port = port or ports.pop(), webui_port or ports.pop()
    env = daemon_env(home, sdir, daemon_memory)

    procs = [_launch(master_command(home, port, webui_port), sdir / "master.log", sdir, env)]
    master = Daemon("master", procs[0].pid, port, webui_port)
    info = ClusterInfo(data_dir=data_dir, master=master, workers=())
    _write_state(info)  # from the first moment, so a stop finds what a failed start left
    try:
        _wait(info, procs, lambda state: state.get("status") == "ALIVE", ready_timeout_s)
        launched = []
        for n in range(1, workers + 1):
            work = ensure_writable_dir(sdir / "work" / f"worker-{n}", "Spark worker dir")
            w_port, w_webui = ports.pop(), ports.pop()
            cmd = worker_command(
                home,
                info.master_url,
                port=w_port,
                webui_port=w_webui,
                cores=worker_cores,
                memory=worker_memory,
                work_dir=work,
            )
            procs.append(_launch(cmd, sdir / f"worker-{n}.log", sdir, env))
            launched.append(Daemon(f"worker-{n}", procs[-1].pid, w_port, w_webui))
            info = ClusterInfo(data_dir=data_dir, master=master, workers=tuple(launched))
            _write_state(info)
        want = {w.port for w in info.workers}
        _wait(info, procs, lambda state: want <= alive_worker_ports(state), ready_timeout_s)
    except BaseException:
        _stop(info, owned={p.pid for p in procs})
        raise
    return info


def _free_ports(n: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        candidate = free_port()
        if candidate not in taken and candidate not in ports:
            ports.append(candidate)
    return ports


def _launch(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one daemon in a session of its own (its executors join its process group)."""
    return interrupts.spawn_logged(cmd, log, " ".join(cmd), env=env, cwd=cwd)


def _wait(
    info: ClusterInfo,
    procs: list[subprocess.Popen[bytes]],
    ready: Callable[[dict[str, Any]], bool],
    timeout_s: float,
) -> None:
    """Until ``ready(master JSON)``; a daemon that exits meanwhile ends the wait at once (the
    Popen, not the pid file's check: until the launcher script execs the JVM, the process is
    a shell without the data dir in its command line)."""
    sdir = info.spark_dir
    names = [info.master.name, *(w.name for w in info.workers)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in zip(names, procs, strict=False):
            if proc.poll() is not None:
                raise EcomstreamError(
                    f"Spark {name} exited with code {proc.returncode} during start-up: "
                    f"{_last_log_error(sdir / f'{name}.log')}"
                )
        state = master_state(info.master.webui_port)
        if state is not None and ready(state):
            return
        time.sleep(0.3)
    if not info.workers:
        what = f"master: its status page {info.webui_url}/json/ did not say ALIVE"
    else:
        what = f"workers: not all {len(info.workers)} registered with the master as ALIVE"
    raise EcomstreamError(f"Spark not ready within {timeout_s:.0f}s, {what}")


def _stop(
    info: ClusterInfo, owned: set[int] | None = None, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """Workers first (they stop their executors), then the master; then SIGKILL whatever is
    left of each daemon's process group (an executor whose worker died, a launcher script).
    ``owned``: pids known to be ours (a start that failed, before the JVMs were exec'd)."""
    sdir = info.spark_dir
    for group in (info.workers, (info.master,)):
        ours = [d for d in group if d.pid in (owned or set()) or d.alive(sdir)]
        for daemon in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_pid_alive(d.pid) for d in ours) and time.monotonic() < deadline:
            for daemon in ours:
                _reap(daemon.pid)
            time.sleep(0.1)
        for daemon in group:
            # a dead leader's group is still ours (its orphans); a live leader that is not
            # ours is a reused pid, and its group someone else's
            if daemon in ours or not _pid_alive(daemon.pid):
                _kill_group(daemon.pid)
            _reap(daemon.pid)
    with contextlib.suppress(FileNotFoundError):
        (sdir / STATE_FILE).unlink()


def _kill_group(pgid: int) -> None:
    from ecomstream.demo.children import group_members

    members = group_members(pgid)
    if not members:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        _reap(pgid)
        time.sleep(0.05)


def stop(data_dir: Path) -> ClusterInfo | None:
    """Stop the cluster of ``data_dir``; what was stopped, or None if nothing was running."""
    sdir = spark_dir(data_dir)
    info = _read_state(sdir)
    if info is None:
        return None
    was_running = any(d.alive(sdir) for d in (info.master, *info.workers))
    _stop(info)
    return info if was_running else None
