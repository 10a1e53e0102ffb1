"""The dashboard's web server: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1.

Three kinds of request: the page (``/``), its static files (``/static/...``, shipped in the
package: the page, its script and style, and Chart.js's UMD build), and ``/api/snapshot`` (JSON
from :class:`ecomstream.demo.dashboard.Dashboard`). See docs/demo.md for why the standard library
rather than a framework.

Under stress (docs/operations.md): read-only (GET and HEAD; every other method is 405, and no
path reaches a file outside the package's ``static/``); a thread per connection, so a slow
client delays only itself, and an idle one is dropped after ``CONNECTION_TIMEOUT_S``; a client
that goes away mid-response (a closed tab, a reload) is the client's business, never a
traceback in the demo's terminal; anything else a request breaks is one redacted line.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ecomstream.demo.dashboard import Dashboard, error_line
from ecomstream.errors import EcomstreamError

HOST = "127.0.0.1"
# a connection that sends nothing for this long is closed (keep-alive idles, slow clients)
CONNECTION_TIMEOUT_S = 20.0
READ_METHODS = ("GET", "HEAD")
# every other method a browser or a tool sends is 405 with the methods that work (see
# _Handler); one http.server does not know at all is its 501
REFUSED_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND")
# a peer that went away mid-response: nothing to report
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def static_file(name: str) -> bytes | None:
    """A file shipped under ``ecomstream/demo/static``; None for anything else (no traversal)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    entry = resources.files("ecomstream.demo").joinpath("static", name)
    if not entry.is_file():
        return None
    return entry.read_bytes()


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT_S
    _head = False

    def do_HEAD(self) -> None:
        self._head = True
        self.do_GET()

    def _refuse(self) -> None:
        body = b"method not allowed: the dashboard is read-only (GET, HEAD)\n"
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", ", ".join(READ_METHODS))
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # a body it sent was not read: do not parse it as a request

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse
    do_OPTIONS = do_TRACE = do_CONNECT = do_PROPFIND = _refuse

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path == "/api/snapshot":
            try:
                body = self.server.dashboard.snapshot()
            except Exception as exc:  # shown on the page; the server keeps serving
                self._json({"error": error_line(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)
                return
            self._json(body)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _static(self, name: str) -> None:
        body = static_file(name)
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        suffix = name[name.rfind(".") :]
        self._send(HTTPStatus.OK, body, STATIC_TYPES.get(suffix, "application/octet-stream"))

    def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", cache=False)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, *, cache: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo's terminal is for its status lines."""


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    # 50 browsers opening at once must not find the listen queue (default 5) full
    request_queue_size = 128

    def __init__(self, dashboard: Dashboard, port: int, host: str = HOST) -> None:
        self.dashboard = dashboard
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EcomstreamError(
                    f"dashboard port {port} on {host} is already in use: "
                    "choose another with --dashboard-port (0 picks a free one)"
                ) from None
            raise EcomstreamError(f"cannot serve the dashboard on {host}:{port}: {exc}") from None
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback for whatever a request raised: a client that left
        is not worth a line, anything else is one line on stderr."""
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, DISCONNECTS):
            return
        print(f"ecomstream dashboard: {error_line(exc)}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="dashboard", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
