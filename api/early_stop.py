"""Stop at the socket: the halt of `POST /stop` starts as soon as its bytes arrive, not when its turn comes.

With many clients polling, the server's event loop runs a long queue of callbacks on every turn, and an ordinary
request waits for several turns before its endpoint runs (its task is created, then the middleware, the routing
and the hand-over to a thread each wait). The server's HTTP protocol here looks at every chunk of bytes as it is
received; a chunk that begins with the request line of `POST /stop` hands the runner's stop to the stop lane at
once. The endpoint, when its turn comes, takes the report of that halt instead of halting a second time, unless a
job is running again by then, which it then stops as well. A chunk that only looks like a stop (a body too large,
say) still stops the arm: stopping is always allowed and needs no token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from pipeline.jobs.runner import JobRunner, StopReport

#: How a chunk of request bytes starts when it is a stop (with or without a query string).
STOP_REQUEST_LINES: tuple[bytes, ...] = (b"POST /stop ", b"POST /stop?")


class EarlyStop:
    """The halt started from the protocol, kept until the endpoint of its request takes it.

    stop: the runner's stop; lane: the executor stops run on (a single thread of their own);
    max_age_s: seconds after which an untaken halt is forgotten (its request never reached the endpoint)."""

    def __init__(self, stop: Callable[[], StopReport], lane: Executor, max_age_s: float = 1.0) -> None:
        if not 0 < max_age_s <= 10:
            raise ValueError(f"max_age_s must be within (0, 10] seconds, got {max_age_s}")
        self._stop, self._lane, self.max_age_s = stop, lane, max_age_s
        self._lock = threading.Lock()
        self._pending: tuple[float, Future[StopReport]] | None = None
        self.started = 0  #: halts started from the protocol

    def signal(self) -> None:
        """Start a halt now, unless one started in the last `max_age_s` seconds is still waiting to be taken."""
        now = time.monotonic()
        with self._lock:
            if self._pending is not None and now - self._pending[0] <= self.max_age_s:
                return
            try:
                self._pending = (now, self._lane.submit(self._stop))
            except RuntimeError:  # the lane is shut down: the server is closing and halts the arm itself
                self._pending = None
                return
            self.started += 1

    def take(self) -> Future[StopReport] | None:
        """The waiting halt, if one started within `max_age_s` seconds (it is then no longer waiting)."""
        taken = self.take_timed()
        return None if taken is None else taken[1]

    def take_timed(self) -> tuple[float, Future[StopReport]] | None:
        """As `take`, with the moment (`time.monotonic()`, seconds) the stop's bytes were seen."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or time.monotonic() - pending[0] > self.max_age_s:
            return None
        return pending


async def stop_now(early: EarlyStop, runner: JobRunner, lane: Executor) -> tuple[StopReport, float]:
    """The endpoint's stop: the report of the halt the protocol started for this request, or a halt of its own;
    a job running again after the early halt (started in between) is stopped too. Also returns when the server
    saw this stop (`time.monotonic()`, seconds): the protocol's signal, or else the endpoint's start."""
    seen = time.monotonic()
    taken = early.take_timed()
    started = None if taken is None else taken[1]
    report = await asyncio.wrap_future(started if started is not None else lane.submit(runner.stop))
    if taken is not None:
        seen = taken[0]
        job = runner.current
        if job is not None and not job.done:
            report = await asyncio.wrap_future(lane.submit(runner.stop))
    return report, seen


def _base_protocol() -> type:
    """uvicorn's HTTP protocol as its "auto" setting picks it: httptools when installed, else h11."""
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def stop_first_protocol(early: EarlyStop, base: type | None = None) -> type:
    """A uvicorn HTTP protocol class (`uvicorn.Config(http=...)`) that starts `early`'s halt the moment a chunk
    beginning with `POST /stop` is received, then handles the bytes as `base` (default: uvicorn's choice) does."""
    parent: Any = base or _base_protocol()

    class StopFirstProtocol(parent):  # type: ignore[misc]
        def data_received(self, data: bytes) -> None:
            if data.startswith(STOP_REQUEST_LINES):
                early.signal()
            super().data_received(data)

    return StopFirstProtocol


def protocol_for(app: Any) -> type:
    """The HTTP protocol to serve `app` (from `api.app.create_app`) with, so that its stops start at the socket."""
    early = getattr(app.state, "early_stop", None)
    if not isinstance(early, EarlyStop):
        raise ValueError("the app has no early stop (app.state.early_stop): build it with api.app.create_app")
    return stop_first_protocol(early)
