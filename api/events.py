"""Job and robot events fanned out to WebSocket clients.

Producers are threads (the job runner); consumers are WebSocket handlers on the server's event loop. Each client
has a bounded queue: a client too slow to keep up loses its oldest events, never blocks the robot.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

#: Events kept per client before the oldest are dropped.
CLIENT_QUEUE = 256


class EventBus:
    """Thread-safe publish, asyncio subscribe."""

    def __init__(self) -> None:
        self._subs: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = set()
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]:
        """A new subscription on the running event loop (call from a coroutine)."""
        sub = (asyncio.get_running_loop(), asyncio.Queue[str](maxsize=CLIENT_QUEUE))
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]) -> None:
        """End a subscription."""
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        """Connected clients."""
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send `{"kind", "time", "data"}` to every client (from any thread)."""
        message = json.dumps({"kind": kind, "time": time.time(), "data": data}, default=str)
        self.published += 1
        with self._lock:
            subs = list(self._subs)
        for loop, queue in subs:
            try:
                loop.call_soon_threadsafe(_put_latest, queue, message)
            except RuntimeError:  # that client's loop has closed
                self.unsubscribe((loop, queue))


def _put_latest(queue: asyncio.Queue[str], message: str) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(message)
