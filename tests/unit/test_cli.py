from __future__ import annotations

import subprocess
import sys

import pytest

from ecomstream import cli
from ecomstream.errors import redact, register_secret


def test_options_read_their_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ECOMSTREAM_PORT", "19999")
    args = cli.build_parser().parse_args(["kafka", "start"])
    assert args.port == 19999


def test_command_line_beats_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ECOMSTREAM_PORT", "19999")
    args = cli.build_parser().parse_args(["kafka", "start", "--port", "1234"])
    assert args.port == 1234


def test_bad_environment_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("ECOMSTREAM_PORT", "not-a-port")
    assert cli.main(["kafka", "start"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ecomstream: error: ECOMSTREAM_PORT='not-a-port' is invalid: "
        "invalid literal for int() with base 10: 'not-a-port'"
    ]


def test_unknown_option_is_one_line_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "kafka", "start", "--nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["ecomstream: error: unrecognized arguments: --nope"]


def test_unexpected_errors_are_one_redacted_line(monkeypatch: pytest.MonkeyPatch, capsys):
    from ecomstream import broker

    register_secret("s3cr3t-value")

    def boom(data_dir):
        raise RuntimeError("failed with s3cr3t-value\nsecond line")

    monkeypatch.setattr(broker, "running", boom)
    monkeypatch.delenv("ECOMSTREAM_DEBUG", raising=False)
    assert cli.main(["kafka", "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "s3cr3t-value" not in err[0] and "***" in err[0] and "second line" not in err[0]
    assert redact("x s3cr3t-value y") == "x *** y"
