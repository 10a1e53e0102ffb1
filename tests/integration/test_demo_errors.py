"""``ecomstream demo`` on bad input: one clear line, the right exit code, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecomstream import broker


def demo_cmd(data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ecomstream",
        "demo",
        "--data-dir",
        str(data_dir),
        "--kafka-port",
        "0",
        "--dashboard-port",
        "0",
        *extra,
    ]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMSTREAM_")}
    if "ECOMSTREAM_CACHE_DIR" in os.environ:
        env["ECOMSTREAM_CACHE_DIR"] = os.environ["ECOMSTREAM_CACHE_DIR"]
    return env


def run_demo(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        demo_cmd(data_dir, *extra),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )


def java_processes_for(data_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "java" in cmdline and str(data_dir) in cmdline:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return f"{pid} (gone)"


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ecomstream: error: ")
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_dashboard_port_taken(tmp_path: Path, held_port: int) -> None:
    done = run_demo(tmp_path / "d", "--dashboard-port", str(held_port))
    assert_one_line_error(done, f"dashboard port {held_port}", "--dashboard-port")
    assert broker.running(tmp_path / "d") is None
    assert not (tmp_path / "d" / "kafka").exists()


def test_kafka_port_taken(tmp_path: Path, held_port: int) -> None:
    done = run_demo(tmp_path / "d", "--kafka-port", str(held_port))
    assert_one_line_error(done, f"Kafka port {held_port}", "--kafka-port", "--bootstrap-servers")
    assert not (tmp_path / "d" / "kafka").exists()


def test_data_dir_of_another_topic(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "_ecomstream.json").write_text(json.dumps({"topic": "other", "window": "1 minute"}))
    done = run_demo(data_dir, "--topic", "orders")
    assert_one_line_error(done, "belongs to topic 'other', not 'orders'", "--topic other")
    done = run_demo(data_dir, "--topic", "other", "--window", "5 minutes")
    assert_one_line_error(done, "'1 minute'", "'5 minutes'")
    assert not (data_dir / "kafka").exists()


def test_tables_without_binding_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d" / "bronze" / "orders").mkdir(parents=True)
    assert_one_line_error(run_demo(tmp_path / "d"), "no _ecomstream.json")


def test_bad_window_and_bad_options(tmp_path: Path) -> None:
    assert_one_line_error(run_demo(tmp_path / "d", "--window", "banana"), "banana")
    assert run_demo(tmp_path / "d", "--rate", "-3").returncode == 2
    assert run_demo(tmp_path / "d", "--fault-rate", "2").returncode == 2
    assert run_demo(tmp_path / "d", "--dashboard-port", "70000").returncode == 2


def test_ctrl_c_during_start_up_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    proc = subprocess.Popen(
        demo_cmd(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("broker: starting"):
            break
    assert seen and seen[-1].startswith("broker: starting"), "".join(seen)
    # inside broker.start(): a JVM of the broker's dir runs (formatting storage, or the broker
    # itself before it is ready), so the interrupt has a process to clean up
    kdir = broker.kafka_dir(data_dir)
    deadline = time.monotonic() + 120
    while not java_processes_for(kdir):
        assert proc.poll() is None, f"demo exited {proc.returncode} before its broker's JVM"
        assert time.monotonic() < deadline, "no JVM for the broker's dir within 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    text = "".join(seen) + out
    assert proc.returncode == 130, text
    assert "interrupted during start-up" in text
    assert "Traceback" not in text
    assert broker.running(data_dir) is None
    left = java_processes_for(data_dir)
    assert left == [], [_cmdline(pid)[:600] for pid in left]
