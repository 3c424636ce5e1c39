"""A RealSense software device: frames from the simulated cell (or any images) fed through the real pyrealsense2
library, so `robot.realsense.RealSenseCamera` runs its real pipeline, alignment and conversion without hardware.

The device registers a colour sensor (rgb8) and a depth sensor (z16, millimetre units) with the given
intrinsics, identity extrinsics between them (one optical centre, as the simulated camera has), and joins an
`rs.context` where a pipeline finds it by serial number. Feed one frame pair at a time: a pipeline keeps only the
newest frameset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyrealsense2 as rs

from robot.intrinsics import CameraIntrinsics

#: Depth units of the software depth sensor, metres per z16 count (the D4xx default).
DEPTH_UNITS_M = 0.001


def _rs_intrinsics(intr: CameraIntrinsics) -> Any:
    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.cx, intr.cy
    out.model = rs.distortion.none
    out.coeffs = [0.0] * 5
    return out


def _video_stream(kind: Any, uid: int, intr: CameraIntrinsics, fmt: Any, bpp: int, fps: int) -> Any:
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = kind, 0, uid
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = intr.width, intr.height, fps, bpp, fmt
    vs.intrinsics = _rs_intrinsics(intr)
    return vs


class SoftwareRealSense:
    """A software RealSense device with a colour and a depth stream, added to `context`.

    serial: serial number it reports; colour: colour stream intrinsics; depth: depth stream intrinsics (default
    the colour ones); fps: nominal frame rate of both streams. Keep this object alive while any pipeline of
    `context` may stream from it: the library does not own the software device.
    """

    def __init__(
        self,
        context: Any,
        serial: str,
        colour: CameraIntrinsics,
        depth: CameraIntrinsics | None = None,
        fps: int = 30,
    ) -> None:
        self.colour, self.depth = colour, depth or colour
        self._seen: list[Any] = []  # device-infos announced by the context, kept alive for the pipeline
        context.set_devices_changed_callback(self._seen.append)
        dev = rs.software_device()
        dev.register_info(rs.camera_info.serial_number, serial)
        dev.register_info(rs.camera_info.name, "sam2grasp software RealSense")
        self._depth_sensor = dev.add_sensor("Depth")
        self._colour_sensor = dev.add_sensor("Color")
        self._depth_profile = self._depth_sensor.add_video_stream(
            _video_stream(rs.stream.depth, 0, self.depth, rs.format.z16, 2, fps)
        )
        self._colour_profile = self._colour_sensor.add_video_stream(
            _video_stream(rs.stream.color, 1, self.colour, rs.format.rgb8, 3, fps)
        )
        self._depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS_M)
        identity = rs.extrinsics()
        identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        identity.translation = [0.0, 0.0, 0.0]
        self._depth_profile.register_extrinsics_to(self._colour_profile, identity)
        dev.create_matcher(rs.matchers.default)
        dev.add_to(context)
        self.device = dev
        self.serial = serial
        self.frames_fed = 0

    def feed(self, rgb: npt.NDArray[np.uint8], depth_mm: npt.NDArray[np.uint16], timestamp_s: float) -> None:
        """Deliver one colour frame (H, W, 3 uint8) and one depth frame (h, w uint16 millimetres) stamped
        `timestamp_s` seconds (system-time domain)."""
        c, d = self.colour, self.depth
        if rgb.shape != (c.height, c.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({c.height}, {c.width}, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if depth_mm.shape != (d.height, d.width) or depth_mm.dtype != np.uint16:
            raise ValueError(f"depth_mm must be ({d.height}, {d.width}) uint16, got {depth_mm.shape} {depth_mm.dtype}")
        n = self.frames_fed
        stamp_ms = timestamp_s * 1000.0
        depth_frame = rs.software_video_frame()
        depth_frame.pixels = np.ascontiguousarray(depth_mm)
        depth_frame.stride, depth_frame.bpp = d.width * 2, 2
        depth_frame.timestamp, depth_frame.domain, depth_frame.frame_number = stamp_ms, _SYSTEM_TIME, n
        depth_frame.profile = self._depth_profile.as_video_stream_profile()
        depth_frame.depth_units = DEPTH_UNITS_M
        self._depth_sensor.on_video_frame(depth_frame)
        colour_frame = rs.software_video_frame()
        colour_frame.pixels = np.ascontiguousarray(rgb)
        colour_frame.stride, colour_frame.bpp = c.width * 3, 3
        colour_frame.timestamp, colour_frame.domain, colour_frame.frame_number = stamp_ms, _SYSTEM_TIME, n
        colour_frame.profile = self._colour_profile.as_video_stream_profile()
        self._colour_sensor.on_video_frame(colour_frame)
        self.frames_fed += 1


_SYSTEM_TIME = rs.timestamp_domain.system_time
