"""Settings of the real cell session (UR5e + Robotiq 2F-85 + RealSense) and the seams its drivers are built through.

Units: metres, radians, seconds, pixels, hertz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.jobs.place import drop_zones
from pipeline.jobs.sim_config import MODELS
from pipeline.runtime.perception_watch import LossAction, WatchConfig
from robot.safety import SafetyLimits

#: Port of the Robotiq URCap gripper server on the UR controller.
URCAP_PORT = 63352
#: Seconds per action of the shipped head's chunks: it was trained on the simulated cell's 0.05 s control period.
SHIPPED_ACTION_PERIOD_S = 0.05
#: TCP offset of the 2F-85 on the UR5e flange (metres along the flange z axis), as in the simulated cell.
GRIPPER_TCP_OFFSET_M = 0.150


@dataclass(frozen=True)
class RealCellConfig:
    """Settings of the real cell.

    robot_ip: the UR controller's IP address; calibration: the camera-to-base calibration file (`sam2grasp
    calibrate`), required; camera_serial: the RealSense to open (None: the calibration file's camera);
    width, height, fps: colour stream (pixels, frames per second); frame_timeout_s: seconds a camera read may wait;
    gripper_host: address of the URCap gripper server (None: robot_ip); gripper_port: its TCP port;
    connect_timeout_s: seconds each connection probe may take; action_period_s: seconds per action of the policy's
    chunks (it must match the data the head was trained on); control_period_s: seconds per control tick (chunks are
    resampled to it; the UR5e's servo thread streams the latest target at 500 Hz); policy_hold_s: seconds the arm
    holds the last command while no prediction covers the tick, before the pick ends with "policy_stalled";
    max_pick_s: seconds a
    pick may take; lift_success_m: TCP rise (metres) with an object held in the gripper that counts as lifted;
    place_settle_s: seconds a place motion may take beyond its plan; tcp_offset: metres from the flange to the TCP;
    safety: limits of the control-rate safety layer and of the driver's servo thread; watch: the perception watch
    of the method; head, tracker: the method's checkpoints; zones: named release positions (x, y, z metres, robot
    base frame; default: the simulated cell's layout, set your own cell's).
    """

    robot_ip: str
    calibration: Path
    camera_serial: str | None = None
    width: int = 640
    height: int = 480
    fps: int = 30
    frame_timeout_s: float = 0.5
    gripper_host: str | None = None
    gripper_port: int = URCAP_PORT
    connect_timeout_s: float = 2.0
    action_period_s: float = SHIPPED_ACTION_PERIOD_S
    control_period_s: float = 0.01
    policy_hold_s: float = 0.5
    max_pick_s: float = 30.0
    lift_success_m: float = 0.10
    place_settle_s: float = 3.0
    tcp_offset: float = GRIPPER_TCP_OFFSET_M
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    watch: WatchConfig = field(default_factory=WatchConfig)
    head: Path = MODELS / "sam2grasp_head"
    tracker: Path = MODELS / "tracker_compact.safetensors"
    zones: tuple[tuple[str, tuple[float, float, float]], ...] = field(
        default_factory=lambda: tuple(drop_zones().items())
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", Path(self.calibration))
        if self.width <= 0 or self.height <= 0 or not 1 <= self.fps <= 90:
            raise ValueError(
                f"camera width and height must be positive pixels and fps within 1..90, got "
                f"{self.width}x{self.height} @ {self.fps}"
            )
        if not 1 <= self.gripper_port <= 65535:
            raise ValueError(f"gripper_port must be within 1..65535, got {self.gripper_port}")
        for name in ("frame_timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if not 0 < value <= 60:
                raise ValueError(f"{name} must be within (0, 60] s, got {value}")
        if not 0.002 <= self.control_period_s < self.safety.command_timeout:
            raise ValueError(
                f"control_period_s must be within [0.002 s, the safety command timeout {self.safety.command_timeout} s)"
                f", got {self.control_period_s}"
            )
        if not self.control_period_s <= self.action_period_s <= 1.0:
            raise ValueError(
                f"action_period_s must be within [control_period_s {self.control_period_s} s, 1 s], got "
                f"{self.action_period_s}"
            )
        if not 0.05 <= self.policy_hold_s <= 30:
            raise ValueError(f"policy_hold_s must be within [0.05, 30] s, got {self.policy_hold_s}")
        if not 1 <= self.max_pick_s <= 600:
            raise ValueError(f"max_pick_s must be within [1, 600] s, got {self.max_pick_s}")
        if not 0.02 <= self.lift_success_m <= 0.5:
            raise ValueError(f"lift_success_m must be within [0.02, 0.5] m, got {self.lift_success_m}")
        if not 0 <= self.place_settle_s <= 60:
            raise ValueError(f"place_settle_s must be within [0, 60] s, got {self.place_settle_s}")
        if not 0 <= self.tcp_offset <= 0.5:
            raise ValueError(f"tcp_offset must be within [0, 0.5] m, got {self.tcp_offset}")
        if self.watch.on_loss == LossAction.REGROUND:
            raise ValueError(
                'the real cell\'s perception watch supports on_loss "hold" and "fail", not "reground" (re-grounding '
                "during a pick is not wired on the real cell)"
            )
        for name, where in self.zones:
            if len(where) != 3 or not all(math.isfinite(v) for v in where):
                raise ValueError(f"drop zone {name!r} must be 3 finite coordinates (x, y, z metres), got {where}")

    @property
    def gripper_address(self) -> str:
        """Where the URCap gripper server listens: gripper_host, else the robot's address."""
        return self.gripper_host or self.robot_ip

    @property
    def drop_zones(self) -> dict[str, tuple[float, float, float]]:
        """Named release positions (metres, robot base frame)."""
        return dict(self.zones)


@dataclass(frozen=True)
class DriverSeams:
    """How the drivers are built. The defaults reach real hardware; tests pass their doubles here.

    rtde_factory: builds the ur_rtde interfaces (a `robot.ur5e_boundary.RtdeFactory`; None: the real ur_rtde);
    probe: checks the controller before ur_rtde is built (None: `robot.ur5e_connect.probe_controller`);
    realsense_context: the `pyrealsense2.context` to find the camera in (None: a new one, the real devices).
    """

    rtde_factory: Any = None
    probe: Any = None
    realsense_context: Any = None
