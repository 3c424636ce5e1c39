"""Configuration of the simulated cell (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from robot.intrinsics import CameraIntrinsics, D435_COLOUR_640x480
from robot.kinematics import UR5E_MAX_JOINT_SPEED
from robot.sim.outcome import OutcomeRules
from robot.sim.scene import SceneRequest

#: Arm start pose (radians): TCP about 30 cm above the table at x = 0.45 m, pointing down.
HOME_Q: tuple[float, ...] = (-0.3007, -1.7140, 1.7997, -1.6565, -1.5708, -0.3007)


class ActionMode(StrEnum):
    """How `step` reads an action of 7 numbers."""

    JOINT = "joint"  # six joint position targets (radians) + gripper opening (metres)
    EE = "ee"  # TCP pose x, y, z (metres), axis-angle rx, ry, rz (radians) in the base frame + gripper (metres)


def parse_action_mode(value: str) -> ActionMode:
    """The action mode named `value`, or an error listing the valid modes."""
    try:
        return ActionMode(value)
    except ValueError:
        raise ValueError(
            f"unknown action mode {value!r}; valid modes: {', '.join(m.value for m in ActionMode)}"
        ) from None


@dataclass(frozen=True)
class CellConfig:
    """Settings of the simulated cell.

    control_dt: seconds per `step` (one action); physics_dt: seconds per physics step (divides control_dt);
    image_width, image_height: pixels of the fixed camera (D435 intrinsics scaled to this size);
    render: produce images in observations; depth: add the depth image; wrist_camera: add the wrist image
    (wrist_width x wrist_height pixels); action_mode: how actions are read; grip_force: newtons;
    max_joint_speed: rad/s cap on joint targets (UR5e: 180°/s); gripper_speed: m/s of the opening target;
    start_jitter: radians of uniform noise on the home pose at reset; settle_s: seconds of physics at reset.
    """

    control_dt: float = 0.05
    physics_dt: float = 0.002
    image_width: int = 640
    image_height: int = 480
    render: bool = True
    depth: bool = True
    wrist_camera: bool = False
    wrist_width: int = 320
    wrist_height: int = 240
    action_mode: ActionMode = ActionMode.JOINT
    grip_force: float = 40.0
    max_joint_speed: float = UR5E_MAX_JOINT_SPEED
    gripper_speed: float = 0.15
    start_jitter: float = 0.03
    settle_s: float = 0.2
    rules: OutcomeRules = field(default_factory=OutcomeRules)
    scene: SceneRequest = field(default_factory=SceneRequest)

    def __post_init__(self) -> None:
        if not 0.0002 <= self.physics_dt <= 0.01:
            raise ValueError(f"physics_dt must be within [0.0002, 0.01] s, got {self.physics_dt}")
        if not self.physics_dt <= self.control_dt <= 1.0:
            raise ValueError(f"control_dt must be within [physics_dt, 1] s, got {self.control_dt}")
        ratio = self.control_dt / self.physics_dt
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"control_dt ({self.control_dt} s) must be a whole multiple of physics_dt ({self.physics_dt} s)"
            )
        for name in ("image_width", "image_height", "wrist_width", "wrist_height"):
            value = getattr(self, name)
            if not 16 <= value <= 1920 or value % 2:
                raise ValueError(f"{name} must be an even number of pixels within 16..1920, got {value}")
        if not isinstance(self.action_mode, ActionMode):
            object.__setattr__(self, "action_mode", parse_action_mode(str(self.action_mode)))
        if not 1.0 <= self.grip_force <= 235.0:
            raise ValueError(f"grip_force must be within [1, 235] N (the 2F-85's range), got {self.grip_force}")
        if not 0 < self.max_joint_speed <= UR5E_MAX_JOINT_SPEED:
            raise ValueError(f"max_joint_speed must be within (0, {UR5E_MAX_JOINT_SPEED:.4f}] rad/s")
        if not 0 < self.gripper_speed <= 0.5:
            raise ValueError(f"gripper_speed must be within (0, 0.5] m/s, got {self.gripper_speed}")
        if not 0 <= self.start_jitter <= 0.2 or not 0 <= self.settle_s <= 2:
            raise ValueError("start_jitter must be within [0, 0.2] rad and settle_s within [0, 2] s")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return round(self.control_dt / self.physics_dt)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Fixed-camera intrinsics at the configured image size: square pixels and the D435's vertical field of
        view (as MuJoCo renders it), which at 640x480 is the D435's own fx = fy = 615 px."""
        fy = (self.image_height / 2) / np.tan(np.radians(self.fovy_deg) / 2)
        return CameraIntrinsics(
            self.image_width, self.image_height, fy, fy, self.image_width / 2, self.image_height / 2
        )

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view of the fixed camera, degrees."""
        return float(np.degrees(2 * np.arctan(D435_COLOUR_640x480.height / (2 * D435_COLOUR_640x480.fy))))
