"""The real cell (UR5e over ur_rtde, Robotiq 2F-85 over the URCap socket, RealSense camera) for `serve --backend
ur5e`. The drivers are imported only here and in `pipeline.jobs.real_connect`, so the simulated product runs
without them.

Controller: "method" only. Grounding runs on the camera's newest frame; the SAM2 tracker is prompted with the
grounded box; the ACT head's chunks go through the runtime (`pipeline.jobs.real_drive`: chunk queue, ensembling,
the safety layer at the control rate) to the UR5e driver, whose 500 Hz servo thread passes every target through
its own safety layer again before servoJ. The perception watch ends a pick whose target or camera is lost. The
scripted expert reads privileged simulator state and is refused here. Units: metres, radians, seconds, pixels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection
from pipeline.jobs.agent_slot import AgentSlot
from pipeline.jobs.cell import CellUnavailable, OverlayFrame, PickOutcome, StateCallback, TargetError
from pipeline.jobs.chunk_predictors import PacedPredictor
from pipeline.jobs.real_camera import CameraFeed, LiveFrame
from pipeline.jobs.real_config import DriverSeams, RealCellConfig
from pipeline.jobs.real_connect import (
    close_quietly,
    connect_arm,
    connect_gripper,
    open_camera,
    read_calibration,
    require_drivers,
)
from pipeline.jobs.real_drive import ArmGate, RealDrive, real_pick_outcome
from pipeline.jobs.real_view import MethodView, health_json, motion_json, plan_of_place
from pipeline.jobs.sim_config import GRASP_CLOSE_SHARE, LIFTING_RISE
from pipeline.jobs.state import Controller, JobState, Placement, Target
from pipeline.runtime.control_loop import EndReason
from pipeline.runtime.perception_watch import PerceptionWatch
from robot.calibration import CameraCalibration
from robot.camera_view import CameraView
from robot.gripper_worker import GripperWorker
from robot.kinematics import forward
from robot.protocols import RobotStatus
from robot.safety import MAX_GRIPPER_WIDTH, SafetyLayer
from robot.stop_signal import StopSignal

#: Why the expert is refused on the real arm.
EXPERT_REFUSED = (
    "the expert controller reads privileged simulator state (object poses) and exists only in the simulated cell; "
    "the ur5e backend runs the method controller (SAM2Grasp): use --controller method"
)
#: Seconds a pick waits for a first camera frame.
FIRST_FRAME_S = 5.0


class RealCell:
    """The real `Cell`: the connected arm (`robot.ur5e.UR5e`), gripper (`robot.robotiq.RobotiqGripper`) and
    camera (`robot.realsense.RealSenseCamera`), validated `calibration`. Use `connect_real_cell` to build one.
    Thread-safe: `halt` may come from any thread while a pick runs on the job runner's."""

    controllers = frozenset({Controller.METHOD})
    #: the arm runs on towards its last servoJ target until the servo thread, a thread of the server, gets its
    #: turn to send servoStop: a stop raised by the guard halts it then, not at once
    halts_on_raised_stop = False

    def __init__(
        self, config: RealCellConfig, calibration: CameraCalibration, arm: Any, camera: Any, gripper: Any
    ) -> None:
        self.config, self.calibration = config, calibration
        self.arm, self.camera, self.gripper = arm, camera, gripper
        self.safety = SafetyLayer(config.safety, config.tcp_offset, config.control_period_s)
        # gripper moves go out from their own thread: a silent gripper never holds the control tick or a halt
        self.gripper_io = GripperWorker(gripper, name="robotiq-io")
        self.gate = ArmGate(arm, self.gripper_io)
        self.view = MethodView(calibration, camera.intrinsics, config.tcp_offset)
        self._motion = threading.Lock()  # starting a drive and halting it
        self._drive: RealDrive | None = None
        self._agents = AgentSlot(
            self.config.head, self.config.tracker, "the method needs the head and tracker checkpoints"
        )
        self._closed = False
        self.last_halt_s: float | None = None
        self.last_motion: dict[str, Any] | None = None  # how the last motion's control loop ran (GET /health)
        self.last_first_command_at: float | None = None
        self.feed = CameraFeed(camera, config.frame_timeout_s, on_frame=self.view.publish)
        self.feed.start()

    # ------------------------------------------------------------------ Cell
    def camera_image(self) -> npt.NDArray[np.uint8]:
        """The camera's newest image, (H, W, 3) uint8 RGB (waits up to 5 s for the first one)."""
        frame = self.feed.wait_first(FIRST_FRAME_S)
        if frame is None:
            raise RuntimeError(f"the camera gave no image within {FIRST_FRAME_S} s: {self.feed.error or 'no frames'}")
        return frame.rgb.copy()

    def robot_status(self) -> RobotStatus:
        """The arm's connection and stop flags, read by the driver's servo thread every tick."""
        status: RobotStatus = self.arm.status()
        return status

    def prepare(self, detection: Detection) -> Target:
        """The pick target of a grounded box (pixels); TargetError when the box is degenerate or off the image."""
        x0, y0, x1, y1 = (float(v) for v in detection.box_xyxy_px)
        width, height = self.config.width, self.config.height
        if not all(np.isfinite([x0, y0, x1, y1])) or x1 - x0 < 2 or y1 - y0 < 2:
            raise TargetError(f"the grounded box {[x0, y0, x1, y1]} is not a box of at least 2x2 pixels")
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise TargetError(f"the grounded box {[x0, y0, x1, y1]} lies outside the {width}x{height} image")
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        return Target(detection.phrase, box, detection.score)

    def pick(
        self, target: Target, controller: Controller, on_state: StateCallback, halt: threading.Event
    ) -> PickOutcome:
        """Grasp and lift `target` with the method: see the module doc. Success: an object held in the gripper
        (the gripper reports contact) with the TCP `lift_success_m` above where the gripper closed."""
        if controller != Controller.METHOD:
            raise CellUnavailable(
                EXPERT_REFUSED if controller == Controller.EXPERT else f"unknown controller {controller!r}"
            )
        if halt.is_set():
            return PickOutcome(False, "stopped", "stop requested before the motion began")
        status = self.robot_status()
        if not status.ok:
            return PickOutcome(False, "robot_blocked", status.message or "the arm is stopped or disconnected")
        on_state(JobState.TRACKING)
        try:
            agent = self.load_agent()
        except (OSError, ValueError, RuntimeError) as exc:
            return PickOutcome(False, "models_unavailable", str(exc))
        from policy.agent import AgentChunkPredictor

        cfg = self.config
        view = CameraView(self.camera.intrinsics, self.calibration.T_base_camera)
        from policy.grasp_yaw import named_shape

        method = AgentChunkPredictor(agent, np.asarray(target.box, dtype=np.float64), view, named_shape(target.phrase))
        predictor = self.view.watching(PacedPredictor(method, cfg.action_period_s, cfg.control_period_s))
        drive = RealDrive(
            self.gate,
            self.safety,
            period_s=cfg.control_period_s,
            max_s=cfg.max_pick_s,
            predictor=predictor,
            observe=self._observe,
            watch=PerceptionWatch(cfg.watch),
            hold_s=cfg.policy_hold_s,
            ensemble_m=_ensemble_m(agent, cfg),
        )
        if not self._start(drive, halt):
            return PickOutcome(False, "stopped", "stop requested before the motion began")
        phase, grasp_z, lifted = JobState.TRACKING, None, False
        try:
            while not drive.wait(0.05):
                if halt.is_set():
                    self.halt()
                    break
                width = self.gate.last_width
                if phase == JobState.TRACKING and width is not None and width < GRASP_CLOSE_SHARE * MAX_GRIPPER_WIDTH:
                    phase, grasp_z = JobState.GRASPING, self._tcp_z()
                    on_state(phase)
                if grasp_z is None:
                    continue
                rise = self._tcp_z() - grasp_z
                if phase == JobState.GRASPING and rise >= LIFTING_RISE:
                    phase = JobState.LIFTING
                    on_state(phase)
                if rise >= cfg.lift_success_m and self._holding():
                    lifted = True
                    drive.end(EndReason.EPISODE_DONE, f"held lifted {rise:.3f} m")
                    break
            end = drive.finish()
        finally:
            self._end_motion(drive)
        return real_pick_outcome(end, halt.is_set(), lifted)

    def place(self, placement: Placement, halt: threading.Event) -> PickOutcome:
        """Carry the held object to `placement`, release it and go back to the start pose, as one planned motion
        through the safety layer."""
        if placement.position is not None:
            release = placement.position
        else:
            zones = self.config.drop_zones
            if placement.zone not in zones:
                raise ValueError(f"unknown drop zone {placement.zone!r}; valid zones: {', '.join(zones)}")
            release = zones[placement.zone]
        q0 = self.gate.joint_positions()
        period = self.config.control_period_s
        plan = plan_of_place(q0, self.gate.width(), release, period, self.config.place_settle_s)
        drive = RealDrive(self.gate, self.safety, period_s=period, max_s=0.0, plan=plan)
        if not self._start(drive, halt):
            return PickOutcome(False, "stopped", "stop requested before the place motion began")
        try:
            while not drive.wait(0.05):
                if halt.is_set():
                    self.halt()
                    break
            end = drive.finish()
        finally:
            self._end_motion(drive)
        if halt.is_set() or end.control.reason == EndReason.STOP_REQUESTED:
            return PickOutcome(False, "stopped", "stopped while placing")
        if end.control.reason != EndReason.MAX_TICKS:
            return PickOutcome(False, "place_failed", f"place motion ended with {end.control.reason.value}")
        where = [round(float(v), 3) for v in release]
        return PickOutcome(True, "", f"released at {where} m (base frame); the camera does not check where it fell")

    def attach_stop_signal(self, signal: StopSignal | None) -> None:
        """Let the arm's servo thread read `signal` (a stop raised by the stop guard) at every tick: while pending,
        it sends servoStop and drops its target. The server's stop then closes the gate and ends the loops."""
        if hasattr(self.arm, "stop_signal"):
            self.arm.stop_signal = signal

    def halt(self) -> float:
        """Stop all motion now (any thread): the gate closes (no further command reaches the arm), servoStop and a
        gripper halt are sent, and the loops end. Returns the seconds it took."""
        t0 = time.monotonic()
        with self._motion:
            drive = self._drive
            if drive is not None:
                drive.halt()
            else:
                self.gate.close()
        self.last_halt_s = time.monotonic() - t0
        return self.last_halt_s

    def show_candidates(self, boxes: tuple[tuple[float, float, float, float], ...]) -> None:
        """Draw these boxes on the stream while a person chooses."""
        self.view.candidates = boxes

    def overlay_frame(self) -> OverlayFrame | None:
        """The newest camera image and its overlays."""
        return self.view.frame()

    def health(self) -> dict[str, Any]:
        """Robot, gripper, camera, models, safety and calibration facts read from the drivers."""
        method = self._agents.status()
        return health_json(self, method)

    @property
    def moving(self) -> bool:
        """True while a motion runs."""
        return self._drive is not None

    def close(self) -> None:
        """Halt, then end the camera feed and close the camera, the gripper and the arm (servoStop, stopScript,
        disconnect). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.halt()
        finally:
            self.feed.close()
            close_quietly(self.camera, "camera")
            close_quietly(self.gripper_io, "gripper worker")
            close_quietly(self.gripper, "gripper")
            close_quietly(self.arm, "arm")

    # ------------------------------------------------------------------ internals
    def load_agent(self) -> Any:
        """The method's agent, loaded once (FileNotFoundError naming a missing checkpoint)."""
        return self._agents.get()

    def _observe(self) -> tuple[LiveFrame, npt.NDArray[np.float32]]:
        frame = self.feed.latest()
        if frame is None:
            raise TimeoutError(f"no camera frame yet ({self.feed.error or 'waiting'})")
        q = self.gate.joint_positions()
        return frame, np.append(q, self.gate.width()).astype(np.float32)

    def _start(self, drive: RealDrive, halt: threading.Event) -> bool:
        with self._motion:
            if halt.is_set() or self._closed:
                return False
            self._drive = drive
            self.view.drive = drive
            drive.start()
        self.last_first_command_at = drive.started_at
        return True

    def _end_motion(self, drive: RealDrive) -> None:
        with self._motion:
            if self._drive is drive:
                self._drive = None
        drive.gate.close()
        self.last_motion = motion_json(drive)

    def _tcp_z(self) -> float:
        return float(forward(self.gate.joint_positions(), self.config.tcp_offset)[2, 3])

    def _holding(self) -> bool:
        try:
            return bool(self.gripper.object_detected())
        except Exception:
            return False


def _ensemble_m(agent: Any, config: RealCellConfig) -> float:
    """The ensembling coefficient per control tick: the head's (per action; 0.01 when it has none) scaled by the
    control ticks per action."""
    coeff = getattr(agent.head.config, "temporal_ensemble_coeff", None)
    per_action = 0.01 if coeff is None else float(coeff)
    return per_action * config.control_period_s / config.action_period_s


def connect_real_cell(
    robot_ip: str | None,
    camera: str,
    calibration: Path | str | None = None,
    *,
    controller: Controller | str = Controller.METHOD,
    settings: Mapping[str, Any] | None = None,
    seams: DriverSeams | None = None,
) -> RealCell:
    """Connect the real arm, gripper and camera with the calibration file `calibration`.

    settings: further `RealCellConfig` fields (gripper port, camera size, limits, ...); seams: how the drivers are
    built (tests pass their doubles). Raises CellUnavailable saying what is missing; nothing moves before it
    returns (the gripper's fingers move only if it must be activated)."""
    if not robot_ip:
        raise CellUnavailable("the ur5e backend needs --robot-ip ADDRESS (the UR controller's address)")
    if camera != "realsense":
        raise CellUnavailable(f"camera {camera!r} is not supported; valid: realsense")
    if str(controller) == Controller.EXPERT.value:
        raise CellUnavailable(EXPERT_REFUSED)
    calib = read_calibration(None if calibration is None else Path(calibration))
    require_drivers()
    config = RealCellConfig(robot_ip=robot_ip, calibration=Path(str(calibration)), **dict(settings or {}))
    seams = seams or DriverSeams()
    arm = cam = None
    try:
        arm = connect_arm(config, seams)
        cam = open_camera(config, seams, calib)
        gripper = connect_gripper(config)
    except BaseException:
        close_quietly(cam, "camera")
        close_quietly(arm, "arm")
        raise
    return RealCell(config, calib, arm, cam, gripper)
