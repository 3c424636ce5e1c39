"""What the runtime needs from an arm, a gripper and a camera, whether simulated (`robot.sim.sim_robot`) or real
(ur_rtde, the Robotiq URCap socket, pyrealsense2).

Units: joint angles in radians, lengths in metres, speeds in metres (or radians) per second, forces in newtons,
times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from robot.intrinsics import CameraIntrinsics

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RobotStatus:
    """Controller state read every control tick.

    connected: the controller answers; protective_stop: the controller halted the arm after a collision or a
    limit (motion resumes only after the stop is cleared); emergency_stop: an e-stop button is pressed;
    message: what the driver knows beyond the flags ("" when nothing to say).
    """

    connected: bool = True
    protective_stop: bool = False
    emergency_stop: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the arm may move: connected and no stop of either kind."""
        return self.connected and not self.protective_stop and not self.emergency_stop


@dataclass(frozen=True)
class CameraFrame:
    """One camera image.

    rgb: (H, W, 3) uint8; depth_mm: (H, W) uint16 millimetres aligned to rgb, or None without depth;
    timestamp_s: capture time in seconds (the driver's clock: monotonic wall time for real cameras, simulated
    time for the simulated one); intrinsics: pinhole intrinsics of `rgb`.
    """

    rgb: npt.NDArray[np.uint8]
    depth_mm: npt.NDArray[np.uint16] | None
    timestamp_s: float
    intrinsics: CameraIntrinsics

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be an (H, W, 3) uint8 image, got {self.rgb.shape} {self.rgb.dtype}")
        if self.depth_mm is not None and self.depth_mm.shape != self.rgb.shape[:2]:
            raise ValueError(f"depth_mm must be (H, W) = {self.rgb.shape[:2]}, got {self.depth_mm.shape}")


@runtime_checkable
class Robot(Protocol):
    """A 6-joint arm streamed joint targets, like ur_rtde's servoJ."""

    def joint_positions(self) -> F64:
        """Measured joint angles, (6,) radians."""
        ...

    def servo_joints(self, q: F64) -> None:
        """Stream one joint target, (6,) radians; the arm servos towards it until the next one arrives.

        Callers pass only targets that went through `robot.safety.SafetyLayer.check`."""
        ...

    def stop(self) -> None:
        """Halt the arm now (decelerate and hold). Idempotent; safe to call from any state, connected or not."""
        ...

    def status(self) -> RobotStatus:
        """Controller state: connection and protective/emergency stop flags."""
        ...


@runtime_checkable
class Gripper(Protocol):
    """A parallel gripper (Robotiq 2F-85 or the simulated one): opening from 0 (closed) to its stroke."""

    def width(self) -> float:
        """Measured opening, metres."""
        ...

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        """Start moving to an opening of `width_m` metres at `speed_m_s` metres per second, gripping with at most
        `force_n` newtons. Returns without waiting for the motion to end."""
        ...

    def stop(self) -> None:
        """Halt finger motion where the fingers are; must never open the gripper. Idempotent."""
        ...


@runtime_checkable
class ReportsIOFailure(Protocol):
    """A part whose I/O runs on another thread (`robot.gripper_worker.GripperWorker`, or a wrapper of one): the
    control loop asks it every tick whether a send failed there."""

    def io_failure(self) -> BaseException | None:
        """The exception a send raised on the I/O thread, or None while every send succeeded."""
        ...


@runtime_checkable
class Camera(Protocol):
    """A colour (optionally depth) camera."""

    def read(self, timeout_s: float) -> CameraFrame:
        """The next frame; raises TimeoutError when none arrives within `timeout_s` seconds."""
        ...
