"""A calibrated fixed camera: intrinsics plus its pose in the robot base frame, and pixel rays onto a plane.

`CameraView` is what a policy needs to turn an image position into a base-frame position: the pinhole intrinsics
of the image it reads and `T_base_camera` (4x4, metres, OpenCV camera axes: x right, y down, z forward), the same
transform the calibration file (`robot.calibration`) stores. In the simulated cell it is the scene camera's true
pose; on the real cell, the hand-eye calibration's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from robot.calibration import CalibrationFileError, validate_transform
from robot.intrinsics import CameraIntrinsics, look_at

F64 = npt.NDArray[np.float64]
#: OpenGL camera axes (x right, y up, z backwards) to OpenCV ones (x right, y down, z forward).
GL_TO_CV: F64 = np.diag([1.0, -1.0, -1.0])


class CameraViewError(ValueError):
    """A camera view that cannot be used (bad pose, bad intrinsics, malformed record)."""


@dataclass(frozen=True)
class CameraView:
    """A calibrated camera. intrinsics: pixels of the images it gives; T_base_camera: (4, 4) camera-to-base
    transform, metres, OpenCV camera axes."""

    intrinsics: CameraIntrinsics
    T_base_camera: F64

    def __post_init__(self) -> None:
        try:
            validate_transform(self.T_base_camera)  # the calibration file's own check of the same transform
        except CalibrationFileError as exc:
            raise CameraViewError(str(exc)) from None
        object.__setattr__(self, "T_base_camera", np.asarray(self.T_base_camera, dtype=np.float64))

    @classmethod
    def from_look_at(cls, position: npt.ArrayLike, target: npt.ArrayLike, intrinsics: CameraIntrinsics) -> CameraView:
        """The view of a camera at `position` looking at `target` (metres, base frame; world +z up)."""
        t = np.eye(4)
        t[:3, :3] = look_at(position, target) @ GL_TO_CV
        t[:3, 3] = np.asarray(position, dtype=np.float64)
        return cls(intrinsics, t)

    def scaled(self, width: int, height: int) -> CameraView:
        """The same camera with its images resampled to `width` x `height` pixels."""
        return CameraView(self.intrinsics.scaled(width, height), self.T_base_camera)

    def pixel_to_plane(self, uv: npt.ArrayLike, z: float) -> F64:
        """Base-frame points (N, 3) where the rays through pixels `uv` (N, 2; u right, v down) meet the horizontal
        plane at height `z` metres. Rays parallel to the plane or meeting it behind the camera give NaN."""
        px = np.atleast_2d(np.asarray(uv, dtype=np.float64))
        if px.ndim != 2 or px.shape[1] != 2:
            raise CameraViewError(f"pixels must be (N, 2) u, v, got shape {px.shape}")
        k = self.intrinsics
        rays_cam = np.stack([(px[:, 0] - k.cx) / k.fx, (px[:, 1] - k.cy) / k.fy, np.ones(len(px))], axis=1)
        rays = rays_cam @ self.T_base_camera[:3, :3].T
        origin = self.T_base_camera[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z - origin[2]) / rays[:, 2]
        s = np.where(np.isfinite(s) & (s > 0), s, np.nan)
        return origin + s[:, None] * rays

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: width, height, fx, fy, cx, cy (pixels) and T_base_camera (4 rows of 4)."""
        k = self.intrinsics
        return {
            "width": k.width,
            "height": k.height,
            "fx": k.fx,
            "fy": k.fy,
            "cx": k.cx,
            "cy": k.cy,
            "T_base_camera": self.T_base_camera.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CameraView:
        """A view from `to_dict`'s record, or a CameraViewError naming what is missing or wrong."""
        keys = ("width", "height", "fx", "fy", "cx", "cy", "T_base_camera")
        if not isinstance(data, dict):
            raise CameraViewError(f"a camera view record must be an object with {', '.join(keys)}, got {data!r}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise CameraViewError(f"camera view record lacks {missing}; it needs {', '.join(keys)}")
        try:
            k = CameraIntrinsics(
                int(data["width"]),
                int(data["height"]),
                float(data["fx"]),
                float(data["fy"]),
                float(data["cx"]),
                float(data["cy"]),
            )
            pose = np.asarray(data["T_base_camera"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CameraViewError(f"camera view record is malformed: {exc}") from None
        if not all(math.isfinite(v) for v in (k.fx, k.fy, k.cx, k.cy)):
            raise CameraViewError("camera view intrinsics must be finite numbers")
        return cls(k, pose)
