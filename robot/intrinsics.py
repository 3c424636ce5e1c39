"""Pinhole camera intrinsics and projection (pixels, metres)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image `width` x `height` pixels.

    fx, fy: focal lengths in pixels; cx, cy: principal point in pixels.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive pixels, got fx={self.fx}, fy={self.fy}")

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view in degrees (for a centred principal point)."""
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera resampled to `width` x `height` pixels."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)

    def matrix(self) -> npt.NDArray[np.float64]:
        """3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


#: RealSense D435-like colour intrinsics at 640x480 (square pixels, centred principal point).
D435_COLOUR_640x480 = CameraIntrinsics(width=640, height=480, fx=615.0, fy=615.0, cx=320.0, cy=240.0)


def look_at(position: npt.ArrayLike, target: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """3x3 camera-to-world rotation of a camera at `position` looking at `target` (OpenGL axes: x right, y up,
    z backwards), with world +z up. Raises ValueError when the view direction is vertical or zero."""
    p = np.asarray(position, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    fwd = t - p
    norm = float(np.linalg.norm(fwd))
    if norm < 1e-9:
        raise ValueError("camera position and target coincide")
    fwd /= norm
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("camera must not look straight up or down")
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return np.stack([right, up, -fwd], axis=1)


def project(
    points_world: npt.ArrayLike,
    cam_position: npt.ArrayLike,
    cam_rotation: npt.NDArray[np.float64],
    intrinsics: CameraIntrinsics,
) -> npt.NDArray[np.float64]:
    """Pixel coordinates (N, 2) of world points (N, 3) seen by a camera (OpenGL axes, rotation camera-to-world).

    Image u grows to the right and v downwards. Points behind the camera give NaN.
    """
    pts = np.atleast_2d(np.asarray(points_world, dtype=np.float64))
    cam = (pts - np.asarray(cam_position, dtype=np.float64)) @ cam_rotation  # world -> camera coordinates
    depth = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.cx + intrinsics.fx * cam[:, 0] / depth
        v = intrinsics.cy - intrinsics.fy * cam[:, 1] / depth
    out = np.stack([u, v], axis=1)
    out[depth <= 0] = np.nan
    return out
