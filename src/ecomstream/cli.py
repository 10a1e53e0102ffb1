"""Command line: ``ecomstream <command>``. Every option also reads ``ECOMSTREAM_<OPTION>``.

Each command lives in its own module with ``register(subparsers)``; the heavy imports (pyspark,
kafka) happen inside the command functions, so ``ecomstream --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ecomstream.errors import EcomstreamError, redact

# command name -> module holding its ``register(subparsers)``
COMMAND_MODULES = {
    "kafka": "ecomstream.broker_cli",
    "spark": "ecomstream.spark_cli",
    "produce": "ecomstream.producer.cli",
    "pipeline": "ecomstream.jobs.cli",
    "reprocess": "ecomstream.jobs.reprocess_cli",
    "status": "ecomstream.status_cli",
    "demo": "ecomstream.demo.cli",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but bad input is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it could not place ("unrecognized arguments: ..."), which may
        # be a connection string given to a mistyped option: never registered, still a secret
        self.exit(2, redact(f"{self.prog}: error: {message}") + "\n")


def env_name(option: str) -> str:
    return "ECOMSTREAM_" + option.lstrip("-").replace("-", "_").upper()


def add_option(
    parser: argparse.ArgumentParser, option: str, *, env: str | None = None, **kwargs: Any
) -> None:
    """``parser.add_argument`` whose default comes from ``ECOMSTREAM_<OPTION>`` when set
    (CONTRACT.md §5: every option). ``env`` names a more specific variable, read first, where
    the option's own name is shared with another command's option (``--port``, ``--master``).

    The environment value goes through the same ``type`` as the command line, so a bad value
    fails with the same one-line error, naming the variable. A repeatable option
    (``action="append"``) reads several values from one variable, split as a shell would
    (``'a=1 "b=x y"'``), and the command line's values come after them.
    """
    names = [name for name in (env, env_name(option)) if name]
    env = next((name for name in names if os.environ.get(name)), names[0])
    raw = os.environ.get(env)
    help_text = kwargs.pop("help", "")
    kwargs["help"] = f"{help_text} [env {' or '.join(names)}]".strip()
    if raw is not None and raw != "":
        action = kwargs.get("action")
        if action == "store_true":
            kwargs["default"] = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif action == "append":
            convert_each: Callable[[str], Any] = kwargs.get("type", str)
            try:
                kwargs["default"] = [convert_each(item) for item in shlex.split(raw)]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise EcomstreamError(f"{env}={raw!r} is invalid: {exc}") from None
        else:
            convert: Callable[[str], Any] = kwargs.get("type", str)
            try:
                kwargs["default"] = convert(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise EcomstreamError(f"{env}={raw!r} is invalid: {exc}") from None
            kwargs.pop("required", None)
    parser.add_argument(option, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from ecomstream import __version__

    parser = OneLineParser(prog="ecomstream", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ecomstream {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module_name in COMMAND_MODULES.values():
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


# Commands that only read tables through delta-rs leave with ``os._exit`` once their output is
# flushed: delta-rs can abort the interpreter's shutdown while its runtime threads wind down
# ("terminate called without an active exception", delta-io/delta-rs#2184), which turned a
# ``status`` that had printed its answer into exit -6. They have nothing else to clean up.
FAST_EXIT_COMMANDS = frozenset({"status"})
# The same for the commands that write tables, once they failed: their one line is out, every
# table is as its last commit left it, and the same kind of abort (a native library's threads
# winding down) came after it (CI: a pipeline whose driver JVM died of OutOfMemoryError printed
# its memory line, then exited -6, not 1).
FAST_EXIT_ON_ERROR_COMMANDS = frozenset({"pipeline", "reprocess"})


def run() -> NoReturn:
    """The process entry point (console script and ``python -m ecomstream``)."""
    argv = sys.argv[1:]
    code = main(argv)
    command = argv[0] if argv else ""
    if command in FAST_EXIT_COMMANDS or (code != 0 and command in FAST_EXIT_ON_ERROR_COMMANDS):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        result = args.func(args)
        return int(result or 0)
    except EcomstreamError as exc:
        print(redact(f"ecomstream: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ecomstream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        from ecomstream import driver_jvm

        status = driver_jvm.jvm_gone(exc)
        if status is not None:  # Py4J lost the JVM: how it ended, not Py4J's complaint
            print(redact(f"ecomstream: error: {driver_jvm.stopped_line(status)}"), file=sys.stderr)
            return 1
        if os.environ.get("ECOMSTREAM_DEBUG"):  # asked for: the traceback, redacted too
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
            return 1
        first_line = (str(exc).splitlines() or [""])[0]
        print(
            redact(f"ecomstream: error: {type(exc).__name__}: {first_line}")
            + " (set ECOMSTREAM_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
