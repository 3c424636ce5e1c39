"""Policy fault scenarios on the threaded runtime in real time: the control loop at 100 Hz, the policy loop beside
it, and a MOCK arm (perfect tracking, no I/O: no real arm here) behind a `RecordingRobot`. The predictor is a
stand-in that returns chunks towards a nearby joint goal, then stalls (a sleep is injected), raises, or returns
NaN. Times are measured with `time.perf_counter` (seconds), so they vary with the machine's load.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.faults.core import RecordingRobot, ScenarioResult
from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop
from pipeline.runtime.policy_loop import PolicyLoop
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET

F64 = npt.NDArray[np.float64]
PERIOD = 0.01
HOLD_TIMEOUT_S = 0.1
CHUNK = 10  # ticks per chunk: 0.1 s of motion queued at most
#: A generous command timeout: a descheduled control thread on a loaded machine must not end the run early with
#: "command_timeout" (that path has its own tests in tests/test_runtime.py).
LIMITS = SafetyLimits(command_timeout=5.0)


class MockArm:
    """MOCK `Robot`: reaches every target at once; records nothing itself (the `RecordingRobot` does)."""

    def __init__(self) -> None:
        self.q = np.array(HOME_Q)

    def joint_positions(self) -> F64:
        return self.q.copy()

    def servo_joints(self, q: F64) -> None:
        self.q = np.array(q)

    def stop(self) -> None:
        pass

    def status(self) -> RobotStatus:
        return RobotStatus()


class FaultyPredictor:
    """Stand-in policy: `good` chunks creeping towards a goal, then `failure` ("stall", "raise", "nan");
    `fault_at` is the perf_counter time the failing call began."""

    def __init__(self, good: int, failure: str, stall_s: float = 2.0) -> None:
        self.good, self.failure, self.stall_s = good, failure, stall_s
        self.calls = 0
        self.fault_at: float | None = None
        self.release = threading.Event()

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        self.calls += 1
        if self.calls <= self.good:
            ramp = 0.001 * self.calls + 0.0001 * np.arange(CHUNK)[:, None]  # every row differs: holding shows
            return np.hstack([np.asarray(HOME_Q) + ramp, np.full((CHUNK, 1), 0.05)])
        self.fault_at = time.perf_counter()
        if self.failure == "stall":
            self.release.wait(self.stall_s)  # an inference that hangs (injected sleep)
            return np.tile(np.append(np.asarray(HOME_Q), 0.05), (CHUNK, 1))
        if self.failure == "raise":
            raise RuntimeError("inference failed (injected)")
        bad = np.tile(np.append(np.asarray(HOME_Q), 0.05), (CHUNK, 1))
        bad[2, 1] = np.nan
        return bad


def policy_fault(failure: str) -> ScenarioResult:
    """Run until the stand-in policy fails the given way; the control loop must halt and stop the arm."""
    arm = RecordingRobot(MockArm(), time.perf_counter, limits=LIMITS, period_s=PERIOD)
    queue = ChunkQueue()
    safety = SafetyLayer(LIMITS, tcp_offset=TCP_OFFSET, period_s=PERIOD)
    config = ControlConfig(period_s=PERIOD, hold_timeout_s=HOLD_TIMEOUT_S, first_prediction_timeout_s=10.0)
    control = ControlLoop(arm, queue, safety, config=config)
    predictor = FaultyPredictor(good=5, failure=failure)

    def observe() -> tuple[Any, npt.NDArray[Any], int]:
        return None, np.append(arm.robot.joint_positions(), 0.05), control.current_tick

    policy = PolicyLoop(predictor, observe, queue, control, min_interval_s=0.03)
    control.start()
    policy.start()
    result = control.join(30.0)
    predictor.release.set()
    presult = policy.join(10.0)
    if result is None:
        control.stop()
        result = control.join(5.0)
    if result is None:
        raise RuntimeError("the control loop did not end within 35 s")
    fault = predictor.fault_at
    # safe: the arm holds still (the queued motion ran out) or was stopped, whichever came first
    still = None if fault is None else arm.first_still_after(fault)
    safe = float("nan") if fault is None or still is None else (still - fault) * 1000.0
    stop = float("nan") if fault is None or not arm.stops else (arm.stops[0] - fault) * 1000.0
    detect = float("nan") if fault is None else (result.ended_s - fault) * 1000.0
    held_for = float("nan") if still is None or not arm.stops else (arm.stops[0] - still) * 1000.0
    return ScenarioResult(
        scenario=f"policy_{failure}",
        expected_end_state="stopped",
        end_state="stopped" if arm.stops else "running",
        reason=result.reason.value,
        safe_stop_ms=safe,
        detect_ms=detect,
        limit_violations=arm.violations,
        stop_called=bool(arm.stops),
        moved_after_stop=arm.moved_after_stop(),
        detail=result.detail,
        extra={
            "stop_ms": stop,
            "halt_after_hold_ms": held_for,
            "hold_timeout_ms": HOLD_TIMEOUT_S * 1000.0,
            "policy_end": None if presult is None else presult.reason.value,
        },
    )


POLICY = {f"policy_{f}": (lambda f=f: policy_fault(f)) for f in ("stall", "raise", "nan")}
