"""Gripper moves sent from their own thread, so that a slow or silent gripper never stalls the control tick.

A real gripper answers each request over a socket (the Robotiq URCap: a reply timeout of 0.2 s by default). Sent
from the control thread, a gripper that stops answering holds that thread for the whole timeout: no servo target
goes to the arm meanwhile and, behind the arm gate's lock, a halt waits too. `GripperWorker` wraps any `Gripper`:
`move` only records the newest request (a newer one replaces a request not yet sent: the fingers follow the latest
target) and returns at once; a worker thread sends it. A failed send is kept and reported — by `io_failure()`,
which the control loop reads every tick, and by the next `move`, which raises it — and no later move is sent.
`stop` drops the request not yet sent, then halts the fingers; `width` reads the gripper directly (it blocks, and
is for use outside the control tick).
Units: metres, metres per second, newtons, seconds.
"""

from __future__ import annotations

import logging
import threading

from robot.protocols import Gripper

log = logging.getLogger(__name__)


class GripperIOError(RuntimeError):
    """A gripper move failed on the worker thread (the cause is chained), or the worker was closed."""


class GripperWorker:
    """A `Gripper` whose moves go out from a worker thread (module doc). Call `close()` when done with it.

    sent: moves handed to the gripper; superseded: requests replaced by a newer one before they were sent.
    """

    def __init__(self, gripper: Gripper, *, name: str = "gripper-io", join_timeout_s: float = 2.0) -> None:
        if not join_timeout_s > 0:
            raise ValueError(f"join_timeout_s must be > 0 seconds, got {join_timeout_s}")
        self.gripper = gripper
        self.join_timeout_s = join_timeout_s
        self._cv = threading.Condition()
        self._io = threading.Lock()  # one request at a time reaches the gripper
        self._pending: tuple[float, float, float] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self.sent = 0
        self.superseded = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def io_failure(self) -> BaseException | None:
        """The exception a send raised on the worker thread, or None while every send succeeded."""
        with self._cv:
            return self._failure

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        """Queue a move to `width_m` metres at `speed_m_s` m/s with at most `force_n` N (replacing one not yet
        sent) and return at once; GripperIOError if an earlier send failed or the worker is closed."""
        with self._cv:
            if self._failure is not None:
                raise GripperIOError(
                    f"an earlier gripper move failed: {type(self._failure).__name__}: {self._failure}; "
                    "reconnect the gripper"
                ) from self._failure
            if self._closed:
                raise GripperIOError("the gripper worker is closed: no move is sent")
            if self._pending is not None:
                self.superseded += 1
            self._pending = (float(width_m), float(speed_m_s), float(force_n))
            self._cv.notify()

    def stop(self) -> None:
        """Drop the move not yet sent, then halt the fingers where they are (waits for a send in progress)."""
        with self._cv:
            self._pending = None
        with self._io:
            self.gripper.stop()

    def width(self) -> float:
        """Measured opening, metres, read from the gripper now (blocks: not for the control tick)."""
        with self._io:
            return float(self.gripper.width())

    def close(self) -> None:
        """Drop the move not yet sent and end the worker thread (waits at most `join_timeout_s`); idempotent.
        The wrapped gripper is not closed."""
        with self._cv:
            self._closed = True
            self._pending = None
            self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout_s)

    def __enter__(self) -> GripperWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                request, self._pending = self._pending, None
            if request is None:  # woken by close()
                return
            try:
                with self._io:
                    self.gripper.move(*request)
                self.sent += 1
            except Exception as exc:
                log.warning("gripper move to %.4f m failed: %s: %s", request[0], type(exc).__name__, exc)
                with self._cv:
                    self._failure = exc
                    self._pending = None
                return
