"""The HTTP side of the stop guard: a server that answers `POST /stop` and nothing else, on threads of its own.

It runs inside the stop guard's process (`api.stop_guard`), which carries each stop out without waiting for the
API server's threads. Answers are those of the API's `POST /stop` (`api.schemas.StopResponse`); stopping needs no
token. Odd requests (a body too large, a bad length) still stop; anything that is not `POST /stop` is refused and
stops nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from api.error_body import error_body

if TYPE_CHECKING:
    from pipeline.jobs.runner import StopReport

#: The only request this port serves.
STOP_PATH = "/stop"
#: Most connections kept open at once (a page's stop button each); beyond them a connection serves one request.
MAX_CONNECTIONS = 32
#: Seconds an idle kept-alive connection stays open.
IDLE_TIMEOUT_S = 30.0
#: Largest request body read (bytes); a stop needs none.
MAX_BODY_BYTES = 1024


def check_stop_port(port: int) -> None:
    """ValueError unless `port` is a TCP port or 0 (any free one)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"stop port must be within 0..65535 (0: any free port), got {port}")


def stop_answer(report: StopReport, seen: float) -> dict[str, Any]:
    """The JSON of a stop's answer (`api.schemas.StopResponse`), on either port; `seen`: `time.monotonic()` seconds
    when the server saw the stop."""
    return {
        "halted": True,
        "halt_s": round(report.halt_s, 6),
        "job": report.job,
        "cancelled": report.cancelled,
        "halted_monotonic_s": report.halted_monotonic_s,
        "received_monotonic_s": seen,
    }


class StopPort:
    """Serves `POST /stop` on `host:port` (port 0: a free one, see `port`) from threads of its own.

    carry_out: carries one stop out, given `time.monotonic()` seconds when its request was read; returns the HTTP
    status and JSON answer; origins: page origins allowed to read the answer cross-origin besides pages of the
    same machine name (the stop itself is carried out whatever the origin)."""

    def __init__(
        self,
        carry_out: Callable[[float], tuple[int, dict[str, Any]]],
        host: str = "127.0.0.1",
        port: int = 0,
        origins: tuple[str, ...] = (),
    ) -> None:
        check_stop_port(port)
        self._carry_out, self._origins = carry_out, origins
        self._open = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.served = 0  #: stops carried out through this port
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((host, port), handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Begin serving (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="stop-port", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop listening (idempotent; a stop being served finishes)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()

    def halt(self) -> tuple[int, dict[str, Any]]:
        """Carry out one stop: (HTTP status, JSON answer)."""
        status, answer = self._carry_out(time.monotonic())
        if status == 200:
            self.served += 1
        return status, answer

    def allow_origin(self, origin: str | None, host: str | None) -> str | None:
        """The origin to name in Access-Control-Allow-Origin, if `origin` may read the answer: one of `origins`, or a
        page served by the same machine name this request was sent to (`host`: its Host header), such as the
        API's own page on the next port."""
        if origin is None:
            return None
        if origin in self._origins:
            return origin
        try:
            same = host is not None and urlsplit(origin).hostname == urlsplit("//" + host).hostname
        except ValueError:
            return None
        return origin if same else None

    def enter(self) -> bool:
        """Count a connection in; False when `MAX_CONNECTIONS` are open."""
        return self._open.acquire(blocking=False)

    def leave(self) -> None:
        """Count a connection out."""
        self._open.release()


def _handler_for(port: StopPort) -> type[BaseHTTPRequestHandler]:
    class StopHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections: a stop button's next stop needs no handshake
        timeout = IDLE_TIMEOUT_S
        server_version = "sam2grasp-stop"

        def setup(self) -> None:
            super().setup()
            self._counted = port.enter()

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                if self._counted:
                    port.leave()

        def handle(self) -> None:
            if self._counted:
                super().handle()
            else:  # over the limit: this connection's one request is still served (a stop is always carried out)
                self.handle_one_request()

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != STOP_PATH:
                self._wrong()
                return
            status, answer = port.halt()  # first: a stop is carried out whatever else is wrong with the request
            length = self.headers.get("Content-Length")
            try:
                n = int(length) if length is not None else 0
            except ValueError:
                n = -1
            if 0 < n <= MAX_BODY_BYTES:
                self.rfile.read(n)  # a body is not needed; read it so the connection stays in step
            elif n != 0:
                self.close_connection = True
            self._send(status, answer)

        def do_OPTIONS(self) -> None:
            if self.path.split("?", 1)[0] != STOP_PATH:
                self._wrong()
                return
            self.send_response(204)
            self._cors()
            if not self._counted:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self._wrong()

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

        def _wrong(self) -> None:
            what = f"{self.command} {self.path}"
            self._send(
                404 if self.command == "POST" else 405,
                error_body("not_found", f"{what}: this port serves POST /stop only"),
            )

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Malformed requests (the server's parser): the project's JSON error, with a status line even when the
            request line was not HTTP."""
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.0"
            self.close_connection = True
            what = message or "bad request"
            self._send(code, error_body("bad_request", f"{what}: this port serves POST /stop only"))

        def _cors(self) -> None:
            headers = getattr(self, "headers", None)  # absent when the request line itself was malformed
            if headers is None:
                return
            allowed = port.allow_origin(headers.get("Origin"), headers.get("Host"))
            if allowed is not None:
                self.send_header("Access-Control-Allow-Origin", allowed)
                self.send_header("Vary", "Origin")

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 405:
                self.send_header("Allow", "POST, OPTIONS")
            if not self._counted:
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the API logs stops as events; one line per stop here would only repeat them

    return StopHandler
