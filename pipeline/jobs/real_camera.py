"""The real cell's camera feed: a thread reads the camera continuously and keeps the newest frame, stamped with the
time it arrived, for grounding, the policy, the stream and the health report.

Frames are stamped on this machine's monotonic clock when they arrive (`LiveFrame.timestamp_s`), so the perception
watch judges frozen and late frames on the same clock as its own. Units: seconds, pixels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robot.protocols import Camera

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveFrame:
    """One camera image: rgb (H, W, 3) uint8; timestamp_s: monotonic seconds when it arrived; seq: 1, 2, ... in
    arrival order; camera_time_s: the camera's own timestamp (seconds)."""

    rgb: npt.NDArray[np.uint8]
    timestamp_s: float
    seq: int
    camera_time_s: float


class CameraFeed:
    """Reads `camera` on its own thread; `latest()` is the newest frame. A read that times out or fails is
    recorded in `error` (cleared by the next frame) and retried after `retry_s` seconds.

    timeout_s: seconds per read; on_frame: called on the feed thread with each new frame (keep it short);
    clock: monotonic seconds.
    """

    def __init__(
        self,
        camera: Camera,
        timeout_s: float,
        on_frame: Callable[[LiveFrame], None] | None = None,
        retry_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < timeout_s <= 60:
            raise ValueError(f"timeout_s must be within (0, 60] s, got {timeout_s}")
        self.camera, self.timeout_s, self.on_frame, self.retry_s, self.clock = (
            camera,
            timeout_s,
            on_frame,
            retry_s,
            clock,
        )
        self._lock = threading.Lock()
        self._latest: LiveFrame | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""
        self.failures = 0

    @property
    def frames(self) -> int:
        """Frames received so far."""
        latest = self.latest()
        return 0 if latest is None else latest.seq

    def latest(self) -> LiveFrame | None:
        """The newest frame, or None before the first."""
        with self._lock:
            return self._latest

    def age_s(self) -> float | None:
        """Seconds since the newest frame arrived (None before the first)."""
        latest = self.latest()
        return None if latest is None else self.clock() - latest.timestamp_s

    def start(self) -> None:
        """Start the feed thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="camera-feed", daemon=True)
            self._thread.start()

    def wait_first(self, timeout_s: float) -> LiveFrame | None:
        """Wait up to `timeout_s` seconds for a first frame; the newest frame or None."""
        deadline = self.clock() + timeout_s
        while self.latest() is None and self.clock() < deadline and not self._closing.is_set():
            time.sleep(0.01)
        return self.latest()

    def close(self, timeout_s: float = 5.0) -> None:
        """End the feed thread (waits up to `timeout_s` seconds for a read in progress). The camera stays open."""
        self._closing.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        seq = 0
        while not self._closing.is_set():
            try:
                frame = self.camera.read(self.timeout_s)
            except Exception as exc:  # a timeout, or a device that went away: recorded, then retried
                self.failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                if self.failures == 1 or self.failures % 50 == 0:
                    log.warning("camera read failed (%d so far): %s", self.failures, self.error)
                self._closing.wait(self.retry_s)
                continue
            seq += 1
            live = LiveFrame(frame.rgb, self.clock(), seq, frame.timestamp_s)
            with self._lock:
                self._latest = live
            self.error = ""
            if self.on_frame is not None:
                try:
                    self.on_frame(live)
                except Exception:
                    log.exception("camera frame callback failed")
