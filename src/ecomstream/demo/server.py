"""The dashboard's web server: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1.

Three kinds of request: the page (``/``), its static files (``/static/...``, shipped in the
package: the page, its script and style, and Chart.js's UMD build), and ``/api/snapshot`` (JSON
from :class:`ecomstream.demo.dashboard.Dashboard`). See docs/demo.md for why the standard library
rather than a framework.
"""

from __future__ import annotations

import errno
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ecomstream.demo.dashboard import Dashboard
from ecomstream.errors import EcomstreamError

HOST = "127.0.0.1"
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


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

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
                first = (str(exc).splitlines() or [""])[0]
                self._json(
                    {"error": f"{type(exc).__name__}: {first}"}, HTTPStatus.SERVICE_UNAVAILABLE
                )
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
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo's terminal is for its status lines."""


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

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
