"""The UR5e as the calibration routine's pose source: moveJ to each pose, flange pose from the joint angles.

The flange pose comes from the measured joint angles through the UR5e's published kinematics
(`robot.kinematics.forward`), the same model the simulated cell is built from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from robot.kinematics import forward
from robot.ur5e import UR5e

F64 = npt.NDArray[np.float64]


class UR5ePoseSource:
    """Adapts a connected `UR5e` to `robot.calibration_routine.ArmPoseSource`."""

    def __init__(self, robot: UR5e) -> None:
        self.robot = robot

    def move_to(self, q: F64) -> None:
        """moveJ (blocking) to `q`, (6,) radians; refused outside the joint limits or while stopped."""
        self.robot.move_joints(tuple(float(v) for v in np.asarray(q, dtype=np.float64).reshape(-1)))

    def flange_pose(self) -> F64:
        """4x4 flange pose in the base frame (metres) from the measured joint angles."""
        return forward(self.robot.joint_positions())


def load_pose_file(path: Path | str) -> list[F64]:
    """Joint poses for calibration from a JSON file: {"poses": [[q1..q6], ...]} in radians (at least 4).

    Teach them once on the real cell (the board facing the camera at varied tilts) and keep the file with the cell.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"pose file {p} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"pose file {p} is not valid JSON: {e}") from None
    poses = doc.get("poses") if isinstance(doc, dict) else None
    if not isinstance(poses, list) or len(poses) < 4:
        raise ValueError(
            f'pose file {p} must hold {{"poses": [[6 joint angles in radians], ...]}} with at least 4 poses'
        )
    out = []
    for i, q in enumerate(poses):
        arr = np.asarray(q, dtype=np.float64) if isinstance(q, list) else np.zeros(0)
        if arr.shape != (6,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"pose {i} in {p} must be 6 finite joint angles in radians, got {q!r}")
        if np.any(np.abs(arr) > 2 * np.pi + 1e-9):
            raise ValueError(f"pose {i} in {p} has angles beyond ±2π: radians are expected, not degrees")
        out.append(arr)
    return out
