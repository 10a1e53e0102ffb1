"""The one exception type a user sees as a single line on stderr, and the redaction every line
shown to a user passes through.

Secrets (the Event Hubs connection string, its key, a service principal's secret) reach a user's
terminal only by accident: an exception or a library's log line that quotes a config, a
mistyped option that argparse echoes, a first line cut in the middle of a key. So
:func:`redact` is applied where each such line is finally printed (the command line's error
line, the Databricks entry points, the demo, the pipeline's and the libraries' log lines, the
producer's error summary, the dashboard's error text), and it removes two kinds of secret:

* every value registered with :func:`register_secret` (the moment it is read), also as the JAAS
  config escapes it and as a prefix cut off at the end of a line;
* anything that looks like one, registered or not: the value of ``SharedAccessKey=``, of
  ``password=`` / ``"password": ...`` (Kafka's ``sasl.jaas.config``, kafka-python's
  ``sasl_plain_password``), of a client secret, and a SAS token's ``sig=``.
"""

from __future__ import annotations

import logging
import os
import re


class EcomstreamError(Exception):
    """Bad input or an unusable environment: printed as one line, exit code ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


MASK = "***"
_SECRETS: set[str] = set()
# a registered secret cut off at the end of a text (a truncated first line) leaks its beginning
_MIN_PREFIX = 8
_VALUE = r"(\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|[^;\s,}\]'\"&]+)"
_LOOKS_SECRET = [
    re.compile(r"(?i)(SharedAccessKey\s*=\s*)" + _VALUE),
    re.compile(
        r"(?i)((?:password|sasl[._]plain[._]password|client[._-]?secret)[\"']?\s*[=:]\s*)" + _VALUE
    ),
    re.compile(r"(?i)(\bsig=)([^&;\s\"']+)"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` scrubs it from anything shown to a user."""
    if value and len(value) >= 4:
        _SECRETS.add(value)
        # as Kafka's JAAS line quotes it (eventhubs.jaas_config) and as JSON or a repr would
        _SECRETS.add(value.replace("\\", "\\\\").replace('"', '\\"'))
        _SECRETS.add(value.strip())


def redact(text: str) -> str:
    """``text`` without any registered secret or anything that looks like one."""
    # the patterns first: a registered secret that is only the start of a connection string
    # (a truncated one) would otherwise take the ``SharedAccessKey=`` they recognise a key by
    text = _mask_lookalikes(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        # a registered connection string is masked whole, as the patterns left it or not
        text = text.replace(_mask_lookalikes(secret), MASK).replace(secret, MASK)
        for cut in range(min(len(secret) - 1, len(text)), _MIN_PREFIX - 1, -1):
            if text.endswith(secret[:cut]):
                text = text[:-cut] + MASK
                break
    return _mask_lookalikes(text)


def _mask_lookalikes(text: str) -> str:
    for pattern in _LOOKS_SECRET:
        text = pattern.sub(_masked, text)
    return text


def _masked(match: re.Match[str]) -> str:
    """The name kept, the value masked; a quoted value keeps its quotes (JSON stays JSON)."""
    value = match.group(2)
    quote = value[0] if value[:1] in {'"', "'"} else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


class RedactingFormatter(logging.Formatter):
    """A log line (and its traceback, if any) through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_library_logs() -> None:
    """Python's last-resort handler prints the WARNINGs of loggers nobody configured (kafka-python,
    py4j) to stderr: those lines are redacted too.

    The root logger gets a handler of the same kind, so that a library's module-level
    ``logging.exception`` (py4j's "Exception while sending command." when the JVM is gone)
    no longer calls ``basicConfig``, whose handler printed a traceback. Py4J's own records are
    dropped there: a lost gateway reaches the command as an exception, which says it in one
    line (driver_jvm.py); ``ECOMSTREAM_DEBUG=1`` shows them."""
    last = logging.lastResort
    if last is not None and not isinstance(last.formatter, RedactingFormatter):
        last.setFormatter(RedactingFormatter("%(message)s"))
    if any(isinstance(h, _LibraryHandler) for h in logging.root.handlers):
        return
    handler = _LibraryHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    handler.addFilter(_nobody_handles)
    if not os.environ.get("ECOMSTREAM_DEBUG"):
        handler.addFilter(_not_py4j)
    logging.root.addHandler(handler)


def _nobody_handles(record: logging.LogRecord) -> bool:
    """Only what the last-resort handler would have printed: a record no logger between its
    own and the root handles. A library that silenced its loggers with a ``NullHandler``
    (kafka-python's connection retries, which the command reports in one line of its own)
    stays silent."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers or not logger.propagate:
            return False
        logger = logger.parent
    return True


class _LibraryHandler(logging.StreamHandler):
    """The root logger's handler (see :func:`redact_library_logs`)."""


def _not_py4j(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("py4j") or f"{os.sep}py4j{os.sep}" in record.pathname)
