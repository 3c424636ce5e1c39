"""Conversions from pyrealsense2 objects to the project's types: stream intrinsics to `CameraIntrinsics`, an
aligned frameset to a `CameraFrame` (RGB uint8, depth in millimetres, timestamp in seconds)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyrealsense2 as rs

from robot.intrinsics import CameraIntrinsics
from robot.protocols import CameraFrame


def to_intrinsics(intr: Any) -> CameraIntrinsics:
    """`CameraIntrinsics` (pixels) of an `rs.intrinsics`."""
    return CameraIntrinsics(
        width=int(intr.width),
        height=int(intr.height),
        fx=float(intr.fx),
        fy=float(intr.fy),
        cx=float(intr.ppx),
        cy=float(intr.ppy),
    )


def distortion_of(intr: Any) -> tuple[str, tuple[float, ...]]:
    """Distortion model name and its coefficients of an `rs.intrinsics` (D4xx colour streams: Brown-Conrady,
    usually all zero)."""
    return str(intr.model).rsplit(".", 1)[-1], tuple(float(c) for c in intr.coeffs)


def stream_intrinsics(profile: Any, stream: Any) -> Any:
    """The `rs.intrinsics` of `stream` (e.g. `rs.stream.color`) in a started pipeline's `profile`."""
    return profile.get_stream(stream).as_video_stream_profile().get_intrinsics()


def depth_to_mm(raw: npt.NDArray[np.uint16], units_m: float) -> npt.NDArray[np.uint16]:
    """Depth image in millimetres (uint16, 0 = no reading) from raw z16 values of `units_m` metres each."""
    if not units_m > 0:
        raise ValueError(f"depth units must be positive metres, got {units_m}")
    if abs(units_m - 0.001) < 1e-9:
        return np.array(raw, dtype=np.uint16, copy=True)
    mm = np.round(raw.astype(np.float64) * (units_m * 1000.0))
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def to_camera_frame(frames: Any, intrinsics: CameraIntrinsics, with_depth: bool) -> CameraFrame:
    """A `CameraFrame` from a frameset whose depth (when `with_depth`) is already aligned to colour.

    The timestamp is the colour frame's, converted from milliseconds to seconds (RealSense global time: the host
    clock the driver maps the camera's clock onto)."""
    colour = frames.get_color_frame()
    if not colour:
        raise RuntimeError("the frameset holds no colour frame")
    fmt = colour.get_profile().format()
    if fmt != rs.format.rgb8:
        raise RuntimeError(f"colour stream format must be rgb8, got {fmt}")
    rgb = np.array(np.asanyarray(colour.get_data()), dtype=np.uint8, copy=True)
    if rgb.shape != (intrinsics.height, intrinsics.width, 3):
        raise RuntimeError(
            f"colour frame is {rgb.shape}, the stream profile says {intrinsics.width}x{intrinsics.height}"
        )
    depth_mm = None
    if with_depth:
        depth = frames.get_depth_frame()
        if not depth:
            raise RuntimeError("the frameset holds no depth frame")
        depth_mm = depth_to_mm(np.asanyarray(depth.get_data()), float(depth.get_units()))
    return CameraFrame(rgb, depth_mm, float(colour.get_timestamp()) / 1000.0, intrinsics)
