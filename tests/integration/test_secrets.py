"""Issue 11, case 8: the Event Hubs key never reaches a user's screen, whatever goes wrong.

Known secrets (a fresh Azure-shaped key per test) are fed through every path that prints: the
command line's error line (bad, truncated and wrong connection strings with the databricks
profile; argparse quoting a mistyped option; an environment variable holding the string by
mistake; ECOMSTREAM_DEBUG's traceback), the Databricks entry point, an error from Spark or Kafka
quoting ``kafka.sasl.jaas.config`` (cut at the pipeline's 400 characters), the pipeline's log
lines and the libraries' (kafka-python) warnings, table maintenance's failure line, the
producer's error summary, ``status`` and the dashboard. No broker is needed: the paths that
talk to one (a wrong key refused by a real SASL_SSL listener) are run by
tests/integration/test_eventhubs_local.py and test_producer_eventhubs.py, which check the same.

Protection this catches missing: ``errors.redact`` as the last line of defence at each of those
prints, in particular its patterns for secrets nobody registered (argparse's echo, a JAAS line
cut in the middle of the key). Seen failing with the patterns and prefix rule switched off.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecomstream import cli, entrypoints
from ecomstream.adapters import databricks
from ecomstream.errors import EcomstreamError, register_secret

LOCAL_PROOF = {databricks.LOCAL_PROOF_ENV: "1"}


def azure_key() -> str:
    """A SharedAccessKey as Azure makes them: 32 random bytes, base64 (``+``, ``/``, ``=``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def connection_string(key: str, host: str = "ns-shop.servicebus.windows.net") -> str:
    return (
        f"Endpoint=sb://{host}/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key};EntityPath=orders"
    )


def jaas(conn: str) -> str:
    escaped = conn.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="$ConnectionString" password="{escaped}";'
    )


def assert_no_key(key: str, *texts: str) -> None:
    """Not the key, nor any 8 characters of it in a row (a cut key still leaks)."""
    pieces = {key[i : i + 8] for i in range(len(key) - 7)}
    for text in texts:
        leaked = sorted(p for p in pieces if p in text)
        assert not leaked, f"key material {leaked[:3]} in: {text[:500]!r}"


@pytest.fixture
def key() -> str:
    return azure_key()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ECOMSTREAM_DEBUG", databricks.CONNECTION_STRING_ENV, databricks.RUNTIME_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- the command line ---------------------------------------------------------------------------
def bad_strings(key: str) -> dict[str, str]:
    good = connection_string(key)
    at_key = good.index(key)
    return {
        "cut inside the key name": good[: good.index("KeyName") + 4],
        "cut after SharedAccessKey=": good[: at_key],
        "cut inside the endpoint": good[: good.index(".servicebus")],
        "no Endpoint": good.split(";", 1)[1],
        "pieces without '='": good.replace(";EntityPath=orders", ";EntityPath;" + key),
        "Endpoint not sb://": good.replace("sb://", "https://"),
        "empty key, key pasted after it": good.replace(f"Key={key}", f"Key=;{key}"),
        "key in quotes, endpoint with a path": good.replace(".net/", ".net/x/y").replace(
            key, f'"{key}"'
        ),
    }  # fmt: skip


def test_bad_or_truncated_connection_strings_are_one_line_without_the_key(
    key: str, clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in bad_strings(key).items():
        with clean_env.context() as env:
            for var, setting in {**LOCAL_PROOF, databricks.CONNECTION_STRING_ENV: value}.items():
                env.setenv(var, setting)
            for argv in (
                ["pipeline", "--profile", "databricks", "--topic", "orders", "--once",
                 "--data-dir", str(tmp_path / "data")],
                ["produce", "--eventhub-connection-string", value, "--count", "1"],
            ):  # fmt: skip
                code = cli.main(argv)
                out, err = capsys.readouterr()
                assert code == 2, (name, argv[0], err)
                assert "malformed" in one_line(err) or "Endpoint" in err, (name, err)
                assert_no_key(key, out, err)
            # the Databricks job's entry point prints through its own last line of defence
            code = entrypoints._call(
                lambda: entrypoints.run(
                    entrypoints.LAYERS, ["--profile=databricks", "--topic=orders"]
                )
            )
            out, err = capsys.readouterr()
            assert code == 2 and "malformed" in one_line(err), (name, err)
            assert_no_key(key, out, err)
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_argparse_and_environment_echoes_are_redacted(
    key: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secrets nobody registered: the process never parsed them as a connection string."""
    conn = connection_string(key)
    for argv in (
        ["pipeline", "--eventhub-connection-string", conn, "--topic", "t"],  # not its option
        ["produce", "--topic", "t", "--connection-string", conn],  # a mistyped option
        ["status", conn],  # the string pasted where no argument goes
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        out, err = capsys.readouterr()
        assert exited.value.code == 2 and "unrecognized arguments" in one_line(err), err
        assert_no_key(key, out, err)
    clean_env.setenv("ECOMSTREAM_RATE", conn)  # pasted into the wrong variable
    assert cli.main(["produce", "--topic", "t", "--count", "1"]) == 2
    out, err = capsys.readouterr()
    assert "ECOMSTREAM_RATE=" in one_line(err)
    assert_no_key(key, out, err)


def test_spark_and_kafka_errors_quoting_the_jaas_config(
    key: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A query failure's first line quoting the source's options, as a Kafka client error can:
    with the key registered (the databricks profile parsed it) and without (another string),
    whole and cut at the pipeline's 400 characters in the middle of the key."""
    from ecomstream.jobs import pipeline

    registered = connection_string(key)
    register_secret(registered)
    stranger_key = azure_key()
    for conn, secret in ((registered, key), (connection_string(stranger_key), stranger_key)):
        line = f"Failed to construct kafka consumer: sasl.jaas.config={jaas(conn)} invalid"
        cut = line.index(secret) + len(secret) // 2
        for message in (line, "x" * (400 - cut) + line):  # the second is cut inside the key

            class KafkaException(Exception):
                desc = message + "\n\tat org.apache.kafka.clients.consumer.KafkaConsumer"

            failing = KafkaException("query failed")
            first = pipeline._first_line(failing)
            assert_no_key(secret, first)

            def fail(settings: Any, exc: Exception = failing) -> int:
                raise EcomstreamError(f"the medallion query failed: {pipeline._first_line(exc)}")

            clean_env.setattr(pipeline, "run", fail)
            code = cli.main(["pipeline", "--topic", "t", "--bootstrap-servers", "x:1"])
            out, err = capsys.readouterr()
            assert code == 2 and "query failed" in one_line(err)
            assert_no_key(secret, out, err)

            # an unexpected exception, and the traceback ECOMSTREAM_DEBUG asks for
            def crash(settings: Any, exc: Exception = failing) -> int:
                raise RuntimeError(str(exc.desc))  # type: ignore[attr-defined]

            clean_env.setattr(pipeline, "run", crash)
            for debug in ("", "1"):
                clean_env.setenv("ECOMSTREAM_DEBUG", debug)
                assert cli.main(["pipeline", "--topic", "t", "--bootstrap-servers", "x:1"]) == 1
                out, err = capsys.readouterr()
                assert "RuntimeError" in err and ("Traceback" in err) == bool(debug)
                assert_no_key(secret, out, err)


# -- log lines ----------------------------------------------------------------------------------
def test_log_lines_of_the_pipeline_the_libraries_and_maintenance(
    key: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecomstream.jobs import pipeline
    from ecomstream.jobs.maintenance import Maintenance

    conn = connection_string(key)
    # as in the pipeline's process: no root handler (pytest's would take the library's lines),
    # and only the handler configure_logging adds (earlier in-process runs left theirs)
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(pipeline.log, "handlers", [])
    for name in ("kafka", "kafka.conn"):  # as a process that never ran the producer has them
        library = logging.getLogger(name)
        for attribute, value in (("handlers", []), ("propagate", True), ("disabled", False)):
            monkeypatch.setattr(library, attribute, value)
        monkeypatch.setattr(library, "level", logging.NOTSET)
    pipeline.configure_logging()
    pipeline.log.info(json.dumps({"event": "source", "options": {"jaas": jaas(conn)}}))
    # kafka-python logs through loggers nobody configured: Python's last-resort handler
    logging.getLogger("kafka.conn").warning("auth failed for %s", {"sasl_plain_password": conn})

    class Unreachable:
        """An environment whose Spark fails the way a misconfigured source does."""

        def spark(self) -> Any:
            raise RuntimeError(f"cannot start: {jaas(conn)}")

    upkeep = Maintenance(Unreachable(), interval_s=0.01)  # type: ignore[arg-type]
    upkeep.start()
    seen, deadline = "", time.monotonic() + 60
    try:
        while "maintenance_failed" not in seen and time.monotonic() < deadline:
            seen += capfd.readouterr().err
            threading.Event().wait(0.05)
    finally:
        upkeep.stop()
    seen += capfd.readouterr().err
    assert "maintenance_failed" in seen and "auth failed" in seen and '"source"' in seen
    assert_no_key(key, seen)


# -- the producer's error summary ---------------------------------------------------------------
def test_producer_error_summary(key: str) -> None:
    from ecomstream.producer import sender

    class Refused(Exception):
        pass

    conn = connection_string(key)
    counted = sender.KafkaPythonSender.__new__(sender.KafkaPythonSender)
    counted.failed, counted.errors = 0, sender.Counter()
    counted._err(Refused(f"SASL authentication failed for {jaas(conn)}"))
    (message,) = counted.errors
    assert "SASL authentication failed" in message
    assert_no_key(key, message)
    error = sender._unreachable(
        sender.SenderSettings(bootstrap_servers="h:9093", topic="t"),  # type: ignore[call-arg]
        f"auth refused: {jaas(conn)}",
    )
    assert_no_key(key, str(error))


# -- status and the dashboard -------------------------------------------------------------------
@pytest.fixture
def proof_dir(
    key: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    """A data dir the databricks profile (local proof) bound to its hub: what status and the
    dashboard of a copied-down Databricks run read."""
    conn = connection_string(key, host="localhost:1")
    clean_env.setenv(databricks.CONNECTION_STRING_ENV, conn)
    clean_env.setenv(databricks.LOCAL_PROOF_ENV, "1")
    env = databricks.create(topic="orders", data_dir=tmp_path / "data")
    env.bind("orders", "1 minute")
    yield tmp_path / "data", conn


def test_status_and_the_dashboard(
    key: str, proof_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from ecomstream.demo.dashboard import Dashboard
    from ecomstream.demo.server import DashboardServer
    from ecomstream.demo.tables import TableReader

    data_dir, conn = proof_dir
    found = [p.read_text() for p in data_dir.rglob("*") if p.is_file()]
    assert found and all("localhost" in text for text in found)  # the binding, host only
    assert_no_key(key, *found)
    for argv in (
        ["status", "--data-dir", str(data_dir)],
        ["status", "--json", "--data-dir", str(data_dir)],
    ):
        assert cli.main(argv) == 3  # no metrics yet: one line naming the table
        out, err = capsys.readouterr()
        assert "no pipeline metrics" in one_line(err)
        assert_no_key(key, out, err)

    class Failing(Dashboard):
        """Reading the tables fails with a message quoting the source's config."""

        def build(self) -> dict[str, Any]:
            raise OSError(f"storage refused {jaas(conn)}")

    for dashboard in (Dashboard(TableReader(data_dir)), Failing(TableReader(data_dir))):
        server = DashboardServer(dashboard, 0)
        server.start()
        try:
            bodies = {}
            for path in ("", "api/snapshot", "static/app.js"):
                try:
                    with urllib.request.urlopen(server.url + path, timeout=30) as response:
                        bodies[path] = response.read().decode()
                except urllib.error.HTTPError as exc:
                    bodies[path] = exc.read().decode()
                assert_no_key(key, bodies[path])
            if isinstance(dashboard, Failing):
                error = json.loads(bodies["api/snapshot"])["error"]
                assert error.startswith("OSError: storage refused") and "***" in error
        finally:
            server.stop()
    out, err = capsys.readouterr()
    assert_no_key(key, out, err)
