"""ChArUco calibration board: definition, printable image, detection and board pose by solvePnP (OpenCV).

Board frame: OpenCV's, origin at a chessboard corner, x along the squares' rows, z out of the board plane. Camera
frame: OpenCV's (x right, y down, z forward). Lengths in metres, image coordinates in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from robot.intrinsics import CameraIntrinsics

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: squares_x by squares_y squares of square_m metres, ArUco markers of marker_m metres from
    the OpenCV dictionary named `dictionary` (e.g. "DICT_4X4_50")."""

    squares_x: int = 6
    squares_y: int = 5
    square_m: float = 0.030
    marker_m: float = 0.022
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if not (3 <= self.squares_x <= 20 and 3 <= self.squares_y <= 20):
            raise ValueError(f"board must have 3..20 squares per side, got {self.squares_x}x{self.squares_y}")
        if not 0.005 <= self.square_m <= 0.2:
            raise ValueError(f"square_m must be within [0.005, 0.2] m, got {self.square_m}")
        if not 0 < self.marker_m < self.square_m:
            raise ValueError(f"marker_m must be positive and smaller than square_m, got {self.marker_m}")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r}; use one like DICT_4X4_50, DICT_5X5_100")

    @property
    def size_m(self) -> tuple[float, float]:
        """Width and height of the chessboard area, metres."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def cv_board(self) -> Any:
        """The `cv2.aruco.CharucoBoard`."""
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary)

    def image(self, px_per_square: int = 100, margin_squares: float = 0.5) -> npt.NDArray[np.uint8]:
        """Greyscale image of the board with a white margin of `margin_squares` squares on every side (print it,
        or texture a plate with it, at (squares + 2 * margin) * square_m metres wide)."""
        margin = round(px_per_square * margin_squares)
        w = self.squares_x * px_per_square + 2 * margin
        h = self.squares_y * px_per_square + 2 * margin
        img: npt.NDArray[np.uint8] = self.cv_board().generateImage((w, h), marginSize=margin, borderBits=1)
        return img


@dataclass(frozen=True)
class BoardPose:
    """A board seen in one image.

    T_camera_board: 4x4 pose of the board frame in the camera frame (metres); image_points: (N, 2) detected
    corner pixels; object_points: (N, 3) the same corners in the board frame (metres); rms_px: reprojection RMS
    of the corners under that pose, pixels.
    """

    T_camera_board: F64
    image_points: F64
    object_points: F64
    rms_px: float


def pose_matrix(rvec: npt.ArrayLike, tvec: npt.ArrayLike) -> F64:
    """4x4 transform from an OpenCV rotation vector and translation."""
    rot, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.asarray(tvec, dtype=np.float64).reshape(3)
    return out


def project_points(points: F64, pose: F64, intrinsics: CameraIntrinsics) -> F64:
    """Pixels (N, 2) of points (N, 3) given in a frame whose pose in the camera frame is `pose`."""
    cam = points @ pose[:3, :3].T + pose[:3, 3]
    uv = cam[:, :2] / cam[:, 2:3]
    return np.stack([intrinsics.fx * uv[:, 0] + intrinsics.cx, intrinsics.fy * uv[:, 1] + intrinsics.cy], axis=1)


def detect_board(
    rgb: npt.NDArray[np.uint8], board: BoardSpec, intrinsics: CameraIntrinsics, min_corners: int = 6
) -> BoardPose | None:
    """The board's pose in an RGB image, or None when fewer than `min_corners` corners are found (or they are
    collinear). The image is assumed undistorted (RealSense colour streams report zero distortion)."""
    cv_board = board.cv_board()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(cv_board).detectBoard(gray)
    if ids is None or len(ids) < min_corners or cv_board.checkCharucoCornersCollinear(ids):
        return None
    obj = np.asarray(cv_board.getChessboardCorners(), dtype=np.float64)[ids.reshape(-1)]
    img = corners.reshape(-1, 2).astype(np.float64)
    k = intrinsics.matrix()
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, None, rvec, tvec)
    pose = pose_matrix(rvec, tvec)
    residual = project_points(obj, pose, intrinsics) - img
    return BoardPose(pose, img, obj, float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))))
