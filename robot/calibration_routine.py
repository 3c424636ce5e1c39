"""The calibration routine: drive the arm through poses with the ChArUco board on the flange, photograph the board
with the fixed camera at each, and solve the camera-to-base transform.

The arm and the camera are parameters (`ArmPoseSource`, `robot.protocols.Camera`): the simulated cell
(`robot.calibration_sim`) stands in for the real UR5e and RealSense. Units: radians, metres, seconds, pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from robot.calibration import CameraCalibration
from robot.calibration_solve import MIN_VIEWS, CalibrationSolveError, solve_camera_to_base
from robot.charuco import BoardPose, BoardSpec, detect_board
from robot.protocols import Camera

F64 = npt.NDArray[np.float64]


@runtime_checkable
class ArmPoseSource(Protocol):
    """An arm that can be sent to joint poses and reports its flange pose."""

    def move_to(self, q: F64) -> None:
        """Move to joint angles `q` ((6,) radians) and return once the arm is still there."""
        ...

    def flange_pose(self) -> F64:
        """Measured flange pose, 4x4 in the base frame (metres)."""
        ...


@dataclass(frozen=True)
class CalibrationRun:
    """What a run produced: the calibration, how many poses were visited and used, and per-view board RMS."""

    calibration: CameraCalibration
    T_flange_board: F64
    poses_visited: int
    views_used: int
    view_rms_px: list[float] = field(default_factory=list)


def run_calibration(
    arm: ArmPoseSource,
    camera: Camera,
    poses: Sequence[F64],
    camera_serial: str,
    *,
    board: BoardSpec | None = None,
    settle_s: float = 0.0,
    frame_timeout_s: float = 2.0,
    progress: Callable[[int, int, bool], None] | None = None,
) -> CalibrationRun:
    """Visit `poses` (joint angles, radians), detect the board at each, and solve T_base_camera.

    settle_s: seconds to wait after each move before taking the image (vibration); progress: called with
    (pose index, pose count, board found). Raises CalibrationSolveError when fewer than MIN_VIEWS views show
    the board or the views do not determine the transform.
    """
    spec = board or BoardSpec()
    flanges: list[F64] = []
    views: list[BoardPose] = []
    intrinsics = None
    for i, q in enumerate(poses):
        arm.move_to(np.asarray(q, dtype=np.float64))
        if settle_s > 0:
            time.sleep(settle_s)
        frame = camera.read(frame_timeout_s)
        intrinsics = frame.intrinsics
        seen = detect_board(frame.rgb, spec, frame.intrinsics)
        if seen is not None:
            flanges.append(arm.flange_pose())
            views.append(seen)
        if progress is not None:
            progress(i, len(poses), seen is not None)
    if intrinsics is None or len(views) < MIN_VIEWS:
        raise CalibrationSolveError(
            f"the board was detected in {len(views)} of {len(poses)} poses; at least {MIN_VIEWS} are needed: "
            "check that the board faces the camera and is lit"
        )
    solution = solve_camera_to_base(flanges, views, intrinsics)
    calibration = CameraCalibration(
        camera_serial=camera_serial,
        T_base_camera=solution.T_base_camera,
        reprojection_rms_px=solution.rms_px,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        n_views=len(views),
    )
    return CalibrationRun(calibration, solution.T_flange_board, len(poses), len(views), [v.rms_px for v in views])


def pose_error(estimate: F64, truth: F64) -> tuple[float, float]:
    """Translation error (millimetres) and rotation error (degrees) between two 4x4 poses."""
    dt = float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3])) * 1000.0
    rel = estimate[:3, :3].T @ truth[:3, :3]
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))))
    return dt, angle
