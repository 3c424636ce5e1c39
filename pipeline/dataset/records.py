"""In-memory records of one demonstration episode, as the collector produces them and the writer stores them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from robot.camera_view import CameraView

#: Names of the 7 entries of `state` and `action`: six UR5e joint angles (radians) and the gripper opening (metres).
JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow",
    "wrist_1",
    "wrist_2",
    "wrist_3",
    "gripper_width",
)
#: Names of the 7 entries of `ee_pose`: TCP position (metres) and orientation as an axis-angle vector (radians),
#: followed by the gripper opening (metres).
EE_POSE_NAMES: tuple[str, ...] = ("x", "y", "z", "rx", "ry", "rz", "gripper_width")


@dataclass(frozen=True)
class Frame:
    """One recorded control step.

    rgb: (H, W, 3) uint8 colour image of the fixed camera.
    depth_mm: (H, W) uint16 depth of the fixed camera in millimetres, aligned to `rgb` (0 = no reading).
    state: (7,) float32 joint angles in radians + gripper opening in metres, measured before `action`.
    action: (7,) float32 the expert's joint-position targets (radians) + gripper opening target (metres).
    ee_pose: (7,) float32 TCP pose in the robot base frame: xyz metres, axis-angle radians, gripper metres.
    target_box: (4,) float32 x0, y0, x1, y1 in pixels of the target's visible mask (all zeros when not visible).
    target_mask: (H, W) bool visible pixels of the target.
    timestamp: seconds since the episode start.
    wrist_rgb: (h, w, 3) uint8 wrist-camera image, or None when the wrist camera is off.
    learn: `action` is a label to learn; False on frames a policy drove before the expert took over, whose labels
    continue into motion that was never executed (`sam2grasp dagger`).
    """

    rgb: npt.NDArray[np.uint8]
    depth_mm: npt.NDArray[np.uint16]
    state: npt.NDArray[np.float32]
    action: npt.NDArray[np.float32]
    ee_pose: npt.NDArray[np.float32]
    target_box: npt.NDArray[np.float32]
    target_mask: npt.NDArray[np.bool_]
    timestamp: float
    wrist_rgb: npt.NDArray[np.uint8] | None = None
    learn: bool = True


@dataclass(frozen=True)
class ObjectRecord:
    """One object of the episode's scene.

    name: human name ("red cup"); instance: unique id within the scene ("red_cup_1").
    position: (3,) metres in the world frame at episode start; quat: (4,) w, x, y, z.
    box: (4,) pixels x0, y0, x1, y1 of its visible mask in the first frame (zeros when hidden).
    """

    instance: str
    name: str
    colour: str
    shape: str
    position: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Episode:
    """A whole demonstration.

    task: the command text ("pick the left red cup"); target: instance id of the target object.
    seed: the scene seed; outcome: the environment's outcome ("success", "wrong_object", ...).
    fps: frames per second of `frames` (1 / control period).
    camera: the fixed camera's calibration during the episode (intrinsics at the recorded image size and its
    pose in the base frame), or None where it is not known.
    """

    task: str
    target: str
    seed: int
    outcome: str
    fps: float
    objects: tuple[ObjectRecord, ...]
    frames: tuple[Frame, ...] = field(repr=False)
    camera: CameraView | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        """Number of frames."""
        return len(self.frames)
