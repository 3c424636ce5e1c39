"""ASGI middleware of the API: a request body size limit (413) and security headers on every response."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_body import error_body

#: Content Security Policy of the web page: its own scripts, styles, images and WebSocket only (and the stop
#: guard, see `csp`).
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def csp(host: str | None, stop_port: int | None) -> str:
    """The page's policy; with a stop guard, `connect-src` also allows its port on the machine name the page was
    reached by (`host`: the request's Host header), so that the stop button can send there."""
    if stop_port is None or not host:
        return CSP
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return CSP
    if not name or not all(c.isalnum() or c in ".-:" for c in name):
        return CSP
    where = f"[{name}]" if ":" in name else name
    return CSP.replace("connect-src 'self'", f"connect-src 'self' http://{where}:{stop_port}", 1)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(error_body("too_large", f"request body over {limit} bytes")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length announces them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                announced = self.limit + 1
            if announced > self.limit:
                await _too_large(send, self.limit)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Add no-sniff, frame, referrer and content-security-policy headers to every HTTP response; `stop_port`:
    the stop guard's port while it runs (None: none), which the policy lets the page connect to."""

    def __init__(self, app: ASGIApp, stop_port: Callable[[], int | None] = lambda: None) -> None:
        self.app, self.stop_port = app, stop_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        port = self.stop_port()
        host = None if port is None else dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        policy = csp(host, port).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: list[Any] = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", policy),
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
