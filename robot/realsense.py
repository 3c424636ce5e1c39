"""Intel RealSense colour + depth camera through pyrealsense2, implementing `robot.protocols.Camera`.

Depth is aligned to the colour image (`rs.align`), so `CameraFrame.depth_mm[v, u]` is the depth of colour pixel
(u, v). A frame timeout restarts the pipeline a bounded number of times before the timeout reaches the caller.
Units: pixels, millimetres (depth), seconds.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pyrealsense2 as rs

from robot.intrinsics import CameraIntrinsics
from robot.protocols import CameraFrame
from robot.realsense_frames import distortion_of, stream_intrinsics, to_camera_frame, to_intrinsics


class CameraNotFoundError(RuntimeError):
    """No RealSense device (or none with the requested serial number) is connected."""


class CameraTimeoutError(TimeoutError):
    """No frame arrived within the time limit, even after restarting the pipeline."""


def connected_serials(context: Any | None = None) -> list[str]:
    """Serial numbers of the RealSense devices `context` (default: a new `rs.context`) sees."""
    ctx = context if context is not None else rs.context()
    return [str(d.get_info(rs.camera_info.serial_number)) for d in ctx.query_devices()]


class RealSenseCamera:
    """A RealSense camera streaming rgb8 colour and (optionally) z16 depth.

    serial: the device to open (None: the only one connected); width, height: pixels; fps: frames per second;
    depth: also stream depth aligned to colour; depth_size: (width, height) pixels of the depth stream before
    alignment (default: the colour size); reconnect_attempts: pipeline restarts tried after a frame timeout
    before `read` raises; reconnect_backoff_s: seconds to wait before each restart; context: the `rs.context`
    to find the device in (tests pass one holding a software device).
    `open()` starts streaming (the constructor does not); use it as a context manager to close it.
    """

    def __init__(
        self,
        serial: str | None = None,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        depth: bool = True,
        depth_size: tuple[int, int] | None = None,
        reconnect_attempts: int = 3,
        reconnect_backoff_s: float = 0.2,
        context: Any | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"width, height (pixels) and fps must be positive, got {width}x{height} @ {fps}")
        if not 0 <= reconnect_attempts <= 20:
            raise ValueError(f"reconnect_attempts must be within 0..20, got {reconnect_attempts}")
        if not 0 <= reconnect_backoff_s <= 10:
            raise ValueError(f"reconnect_backoff_s must be within [0, 10] seconds, got {reconnect_backoff_s}")
        self.requested_serial = serial
        self.width, self.height, self.fps, self.depth = width, height, fps, depth
        self.depth_size = depth_size or (width, height)
        self.reconnect_attempts, self.reconnect_backoff_s = reconnect_attempts, reconnect_backoff_s
        self.context = context if context is not None else rs.context()
        self.reconnects = 0
        self.serial = ""
        self._pipeline: Any | None = None
        self._is_open = False  # open() succeeded and close() was not called since
        self._config: Any | None = None
        self._align = rs.align(rs.stream.color) if depth else None
        self._intrinsics: CameraIntrinsics | None = None
        self.distortion: tuple[str, tuple[float, ...]] = ("none", ())

    # ---------------------------------------------------------------- lifecycle
    def _resolve_serial(self) -> str:
        serials = connected_serials(self.context)
        if self.requested_serial is None:
            if len(serials) != 1:
                found = ", ".join(serials) if serials else "none"
                raise CameraNotFoundError(
                    f"pass the serial number of the camera to open; connected RealSense devices: {found}"
                )
            return serials[0]
        if self.requested_serial not in serials:
            found = ", ".join(serials) if serials else "none"
            raise CameraNotFoundError(
                f"no RealSense with serial {self.requested_serial!r} is connected; connected: {found}"
            )
        return self.requested_serial

    def open(self) -> None:
        """Find the device and start streaming; raises CameraNotFoundError naming the connected serials."""
        self.close()
        self._start()
        self._is_open = True

    def _start(self) -> None:
        serial = self._resolve_serial()
        config = rs.config()
        config.enable_device(serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, *self.depth_size, rs.format.z16, self.fps)
        pipeline = rs.pipeline(self.context)
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise CameraNotFoundError(
                f"cannot start RealSense {serial} at {self.width}x{self.height} @ {self.fps} fps "
                f"(colour rgb8{' + depth z16' if self.depth else ''}): {exc}"
            ) from exc
        intr = stream_intrinsics(profile, rs.stream.color)
        self._intrinsics = to_intrinsics(intr)
        self.distortion = distortion_of(intr)
        self._pipeline, self._config, self.serial = pipeline, config, serial

    def close(self) -> None:
        """Stop streaming; idempotent."""
        self._is_open = False
        self._stop()

    def _stop(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped (e.g. the device went away)
                pipeline.stop()

    def __enter__(self) -> RealSenseCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Colour stream intrinsics read from the started stream profile (pixels)."""
        if self._intrinsics is None:
            raise RuntimeError("the camera is not open: call open() first")
        return self._intrinsics

    # ---------------------------------------------------------------- frames
    def read(self, timeout_s: float) -> CameraFrame:
        """The next frame (depth aligned to colour). Waits `timeout_s` seconds; on a timeout restarts the pipeline
        up to `reconnect_attempts` times, waiting `timeout_s` after each restart, so the worst case is about
        (1 + reconnect_attempts) x (timeout_s + reconnect_backoff_s). Raises CameraTimeoutError after that."""
        if not 0 < timeout_s <= 60:
            raise ValueError(f"timeout_s must be within (0, 60] seconds, got {timeout_s}")
        if not self._is_open:
            raise RuntimeError("the camera is not open: call open() first (a closed camera stays closed)")
        frames = self._wait(timeout_s)
        attempt = 0
        while frames is None and attempt < self.reconnect_attempts:
            attempt += 1
            self._restart()
            frames = self._wait(timeout_s)
        if frames is None:
            raise CameraTimeoutError(
                f"no frame from RealSense {self.serial} within {timeout_s} s, {attempt} pipeline restart(s) tried"
            )
        if self._align is not None:
            frames = self._align.process(frames)
        return to_camera_frame(frames, self.intrinsics, self.depth)

    def _wait(self, timeout_s: float) -> Any | None:
        pipeline = self._pipeline
        if pipeline is None:
            return None
        try:
            ok, frames = pipeline.try_wait_for_frames(max(1, round(timeout_s * 1000)))
        except RuntimeError:
            return None  # the device went away mid-wait: handled as a timeout
        return frames if ok else None

    def _restart(self) -> None:
        """Stop the pipeline, wait the backoff, find the device again and restart streaming (best effort: a
        failure leaves no pipeline, and the next wait reads as a timeout)."""
        self.reconnects += 1
        self._stop()
        time.sleep(self.reconnect_backoff_s)
        try:
            self._start()
        except CameraNotFoundError:
            self._pipeline = None
