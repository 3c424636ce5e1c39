"""One motion of the real arm: chunks go through the runtime of `pipeline.runtime` (chunk queue, temporal ensembling,
the safety layer, the control tick on its own thread) to the drivers, behind an `ArmGate` that the stop path closes.

A `RealDrive` runs either a policy (a `PolicyLoop` on its own thread, with the perception watch) or a planned
motion queued as one chunk (the place motion). `ArmGate.close()` is the halt: after it returns no servo target and
no gripper move reaches the drivers, and the arm is told to stop (the UR5e's servoStop path).
Units: seconds, radians, metres.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.jobs.cell import PickOutcome
from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason, LoopResult
from pipeline.runtime.perception_watch import PerceptionWatch
from pipeline.runtime.policy_loop import ChunkPredictor, PolicyLoop, PolicyResult
from robot.protocols import Gripper, ReportsIOFailure, Robot, RobotStatus
from robot.safety import SafetyLayer

F64 = npt.NDArray[np.float64]
#: Returns (frame, state (7,): joint angles rad + gripper opening m); raises TimeoutError without a frame.
ObserveNow = Callable[[], tuple[Any, npt.NDArray[Any]]]
log = logging.getLogger(__name__)


class ArmGate:
    """The one way from the runtime to the arm and the gripper (both protocols in one object, so the control loop
    stops both through `stop`). Open, it forwards; `close()` (any thread) drops every later command and stops the
    arm, then the gripper. Counts what it forwarded and what it dropped.

    After `close()`, a command that was being forwarded has finished: `servo_joints` and `move` hold the gate's
    lock while they forward, and `close` takes it before it stops the drivers.
    """

    def __init__(self, robot: Robot, gripper: Gripper | None) -> None:
        self.robot, self.gripper = robot, gripper
        self._lock = threading.Lock()
        self._open = False
        self.sent = 0  # servo targets forwarded
        self.dropped = 0  # commands dropped because the gate was closed
        self.gripper_moves = 0
        self.last_q: F64 | None = None
        self.last_width: float | None = None  # the last gripper opening commanded, metres

    @property
    def is_open(self) -> bool:
        """True while commands are forwarded."""
        return self._open

    def open(self) -> None:
        """Forward commands again (at the start of a motion)."""
        with self._lock:
            self._open = True
            self.last_width = None

    def close(self) -> None:
        """Drop every later command, then stop the arm (servoStop) and the gripper; idempotent, any thread."""
        with self._lock:
            self._open = False
        self.stop()

    # Robot
    def joint_positions(self) -> F64:
        """Measured joint angles, (6,) radians."""
        return np.asarray(self.robot.joint_positions(), dtype=np.float64)

    def servo_joints(self, q: F64) -> None:
        """Forward one safety-checked joint target (6, radians) while open."""
        with self._lock:
            if not self._open:
                self.dropped += 1
                return
            self.robot.servo_joints(q)
            self.sent += 1
            self.last_q = np.array(q, dtype=np.float64)

    def status(self) -> RobotStatus:
        """The arm's controller state."""
        return self.robot.status()

    def stop(self) -> None:
        """Halt the arm, then the fingers (where they are: a held object stays held)."""
        try:
            self.robot.stop()
        finally:
            if self.gripper is not None:
                try:
                    self.gripper.stop()
                except Exception:
                    log.exception("gripper stop failed")

    # Gripper
    def io_failure(self) -> BaseException | None:
        """A failed gripper send of a gripper that sends from its own thread (`GripperWorker`), else None."""
        return self.gripper.io_failure() if isinstance(self.gripper, ReportsIOFailure) else None

    def width(self) -> float:
        """Measured gripper opening, metres (the stroke when there is no gripper)."""
        return 0.085 if self.gripper is None else float(self.gripper.width())

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        """Forward one safety-checked gripper move while open."""
        with self._lock:
            if not self._open:
                self.dropped += 1
                return
            self.last_width = float(width_m)
            if self.gripper is not None:
                self.gripper.move(width_m, speed_m_s, force_n)
                self.gripper_moves += 1


@dataclass(frozen=True)
class DriveEnd:
    """How a drive ended: the control loop's result and, for a policy drive, the policy loop's."""

    control: LoopResult
    policy: PolicyResult | None


class RealDrive:
    """One motion through the runtime: `predictor` with `observe` (a policy drive; each observation is stamped with
    the control tick it was made at) or `plan` (K, 7) played from the first tick, one action per tick, ending after
    its last action (a planned drive). period_s: control period, seconds (the safety layer's); max_s: seconds a policy
    motion may take; watch: the perception watch of a policy drive (predictions come at most once per period);
    hold_s: seconds the last command is held while no prediction covers the tick, before "policy_stalled".
    """

    def __init__(
        self,
        gate: ArmGate,
        safety: SafetyLayer,
        *,
        period_s: float,
        max_s: float,
        predictor: ChunkPredictor | None = None,
        observe: ObserveNow | None = None,
        plan: F64 | None = None,
        watch: PerceptionWatch | None = None,
        ensemble_m: float = 0.01,
        hold_s: float = 0.5,
        first_prediction_timeout_s: float = 10.0,
    ) -> None:
        if (predictor is None) == (plan is None) or (predictor is not None and observe is None):
            raise ValueError("a drive needs either a predictor with observe(), or a plan")
        self.gate = gate
        self.queue = ChunkQueue()
        config = ControlConfig(
            period_s=period_s,
            hold_timeout_s=hold_s,
            first_prediction_timeout_s=first_prediction_timeout_s,
            ensemble_m=ensemble_m,
            max_ticks=max(1, math.ceil(max_s / period_s)) if plan is None else len(plan),
        )
        self.control = ControlLoop(gate, self.queue, safety, gripper=gate, config=config)
        self.policy: PolicyLoop | None = None
        if predictor is not None and observe is not None:
            see = observe

            def stamped() -> tuple[Any, npt.NDArray[Any], int]:
                frame, state = see()
                return frame, state, self.control.current_tick

            self.policy = PolicyLoop(predictor, stamped, self.queue, self.control, watch=watch, min_interval_s=period_s)
        self._plan = plan
        self.started_at: float | None = None  # epoch seconds

    @property
    def done(self) -> bool:
        """True once the control loop has ended."""
        return self.control.done

    def start(self) -> None:
        """Open the gate and start the control loop (and the policy loop)."""
        if self._plan is not None:
            self.queue.put(self._plan, 0)
        self.gate.open()
        self.started_at = time.time()
        self.control.start()
        if self.policy is not None:
            self.policy.start()

    def halt(self) -> None:
        """Stop now (any thread): the gate closes first, so nothing reaches the arm after this returns, and the
        arm is told to stop; then the loops end with "stop_requested"."""
        self.gate.close()
        self.end(EndReason.STOP_REQUESTED, "stop requested")

    def end(self, reason: EndReason, detail: str) -> None:
        """End the motion with `reason` (the first reason given wins); the control loop stops the arm."""
        self.control.stop(reason, detail)
        if self.policy is not None:
            self.policy.stop()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` seconds for the end; True once ended."""
        return self.control.join(timeout_s) is not None

    def finish(self, timeout_s: float = 5.0) -> DriveEnd:
        """Wait for both loops (up to `timeout_s` seconds each), close the gate and return how the drive ended."""
        result = self.control.join(timeout_s)
        if result is None:
            self.halt()
            result = self.control.join(timeout_s)
        policy = None
        if self.policy is not None:
            self.policy.stop()
            policy = self.policy.join(timeout_s)
        self.gate.close()
        if result is None:
            raise RuntimeError(f"the control loop did not end within {timeout_s} s of being told to stop")
        return DriveEnd(result, policy)


#: Control-loop ends and the pick outcome reason they become.
_REASONS: dict[EndReason, str] = {
    EndReason.MAX_TICKS: "timeout",
    EndReason.TRACKER_LOST: "tracker_lost",
    EndReason.CAMERA_LOST: "camera_lost",
    EndReason.PROTECTIVE_STOP: "protective_stop",
    EndReason.EMERGENCY_STOP: "emergency_stop",
    EndReason.DISCONNECTED: "robot_disconnected",
    EndReason.POLICY_FAILED: "policy_failed",
    EndReason.POLICY_STALLED: "policy_stalled",
    EndReason.COMMAND_TIMEOUT: "command_timeout",
    EndReason.SAFETY_VIOLATION: "safety_violation",
    EndReason.ROBOT_ERROR: "robot_error",
}


def real_pick_outcome(end: DriveEnd, halted: bool, lifted: bool) -> PickOutcome:
    """How a pick on the real arm ended, as the job sees it: success (`lifted`: the object was held lifted),
    stopped, or the runtime's reason (timeout, tracker_lost, camera_lost, protective_stop, ...)."""
    result = end.control
    if lifted:
        return PickOutcome(True, "", f"held lifted after {result.ticks} control ticks")
    if halted or result.reason == EndReason.STOP_REQUESTED:
        return PickOutcome(False, "stopped", "stop requested")
    detail = result.detail or result.reason.value
    if end.policy is not None and end.policy.detail and end.policy.detail not in detail:
        detail = f"{detail}; policy: {end.policy.detail}"
    return PickOutcome(False, _REASONS.get(result.reason, result.reason.value), detail)
