"""The perception watch on its own (scores and frames fed by hand, simulated seconds) and the control loop's hold,
tick by tick with a fake clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.faults.core import LimitChecker, RecordingRobot, ScenarioResult
from pipeline.runtime import ChunkQueue, ControlConfig, ControlLoop, EndReason
from pipeline.runtime.perception_watch import LossAction, PerceptionWatch, Verdict, WatchConfig
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET

BOX = np.array([10.0, 10.0, 30.0, 20.0])


@dataclass
class Frame:
    timestamp_s: float


def feed(watch: PerceptionWatch, scores: list[float], dt: float = 0.05, t0: float = 0.0) -> list[Verdict]:
    return [watch.check_track(s, BOX, t0 + i * dt, None).verdict for i, s in enumerate(scores)]


def test_loss_needs_n_consecutive_low_scores_then_fail_ends_with_tracker_lost() -> None:
    watch = PerceptionWatch(WatchConfig(lost_frames=3, on_loss=LossAction.FAIL))
    assert feed(watch, [1.0, -1.0, -1.0, 1.0, -1.0, -1.0]) == [Verdict.RUN] * 6  # a good frame resets the count
    assert watch.first_action_s is None
    end = watch.check_track(-1.0, BOX, 1.0, None)
    assert end.verdict == Verdict.END
    assert end.reason == "tracker_lost"
    assert watch.first_action_s == 1.0


def test_hold_waits_for_the_target_then_resumes_or_ends_after_hold_s() -> None:
    watch = PerceptionWatch(WatchConfig(lost_frames=2, hold_s=0.2))
    assert feed(watch, [-1.0, -1.0, -1.0]) == [Verdict.RUN, Verdict.HOLD, Verdict.HOLD]
    assert watch.holding
    assert watch.first_action_s == 0.05  # the second low frame began the hold
    assert watch.check_track(2.0, BOX, 0.15, None).verdict == Verdict.RUN
    assert not watch.holding
    verdicts = feed(watch, [-1.0] * 7, t0=1.0)  # lost at 1.05 s; the last frame at 1.30 s has held 0.25 s
    assert verdicts[-2:] == [Verdict.HOLD, Verdict.END]


def test_reground_is_bounded_and_a_failing_grounder_counts_as_an_attempt() -> None:
    calls: list[object] = []

    def ground(frame: object) -> np.ndarray | None:
        calls.append(frame)
        if len(calls) == 1:
            raise RuntimeError("grounder down")
        return BOX + 5.0

    watch = PerceptionWatch(WatchConfig(lost_frames=1, on_loss=LossAction.REGROUND, max_regrounds=2), ground)
    first = watch.check_track(-1.0, BOX, 0.0, "f0")
    assert first.verdict == Verdict.HOLD
    assert "grounder down" in first.detail
    second = watch.check_track(-1.0, BOX, 0.05, "f1")
    assert second.verdict == Verdict.REGROUND
    assert second.box is not None
    np.testing.assert_array_equal(second.box, BOX + 5.0)
    last = watch.check_track(-1.0, BOX, 0.1, "f2")
    assert (last.verdict, last.reason) == (Verdict.END, "tracker_lost")
    assert watch.regrounds == 2
    with pytest.raises(ValueError, match="needs a reground callback"):
        PerceptionWatch(WatchConfig(on_loss="reground"))


def test_box_jump_counts_as_lost_when_checked() -> None:
    watch = PerceptionWatch(WatchConfig(lost_frames=1, on_loss="fail", max_box_jump_px=10.0))
    assert watch.check_track(3.0, BOX, 0.0, None).verdict == Verdict.RUN
    assert watch.check_track(3.0, BOX + 50.0, 0.05, None).verdict == Verdict.END


def test_camera_frozen_missing_and_late_frames_are_skipped_until_the_timeout() -> None:
    watch = PerceptionWatch(WatchConfig(camera_timeout_s=0.3, max_frame_age_s=0.1))
    assert watch.check_frame(Frame(0.0), 0.0).verdict == Verdict.RUN
    assert watch.check_frame(Frame(0.05), 0.1).verdict == Verdict.RUN  # 0.05 s late: within the bound
    assert watch.check_frame(Frame(0.05), 0.15).verdict == Verdict.SKIP  # frozen
    assert watch.check_frame(None, 0.2, "camera timed out").verdict == Verdict.SKIP
    assert watch.check_frame(Frame(0.1), 0.3).verdict == Verdict.SKIP  # 0.2 s late
    end = watch.check_frame(Frame(0.11), 0.45)
    assert (end.verdict, end.reason) == (Verdict.END, "camera_lost")
    assert "0.350 s" in end.detail
    assert watch.first_action_s == 0.45  # skipping frames is not acting; ending the run is


def test_config_errors_name_the_valid_values() -> None:
    with pytest.raises(ValueError, match="on_loss must be one of hold, reground, fail"):
        WatchConfig(on_loss="panic")
    with pytest.raises(ValueError, match="hold_s must be a finite number of seconds > 0"):
        WatchConfig(hold_s=0.0)
    with pytest.raises(ValueError, match="lost_frames and recover_frames must be >= 1"):
        WatchConfig(lost_frames=0)


class StillArm:
    """Mock arm: perfect tracking, nothing else."""

    def __init__(self) -> None:
        self.q = np.array(HOME_Q)

    def joint_positions(self) -> np.ndarray:
        return self.q.copy()

    def servo_joints(self, q: np.ndarray) -> None:
        self.q = np.array(q)

    def stop(self) -> None:
        pass

    def status(self) -> RobotStatus:
        return RobotStatus()


def test_control_hold_keeps_the_arm_still_and_heartbeats_replace_predictions() -> None:
    arm = RecordingRobot(StillArm(), clock=lambda: 0.0)
    queue = ChunkQueue()
    loop = ControlLoop(arm, queue, SafetyLayer(SafetyLimits(), TCP_OFFSET, 0.01), config=ControlConfig(0.01, 0.05))
    ramp = np.hstack([np.asarray(HOME_Q) + 0.001 * np.arange(100)[:, None], np.full((100, 1), 0.05)])
    queue.put(ramp, 0)
    loop.begin(0.0)
    for n in range(5):
        assert loop.tick(n, n * 0.01) is None
    for n in range(5, 30):  # 0.25 s of hold, a heartbeat every tick: no stall, no motion
        loop.hold()
        assert loop.tick(n, n * 0.01) is None
    held = [q for _, q in arm.commands[5:]]
    assert all(np.array_equal(q, held[0]) for q in held)
    assert len(queue) == 0  # the queued chunk was dropped
    loop.resume()
    assert loop.tick(30, 0.30) is None  # nothing queued: holds, within the hold timeout
    assert [loop.tick(n, n * 0.01) for n in range(31, 40)][-1] == EndReason.POLICY_STALLED
    loop.finish()
    assert arm.violations == 0
    assert arm.stops


def test_limit_checker_catches_a_command_outside_the_limits() -> None:
    checker = LimitChecker(period_s=0.01)
    checker.seed(HOME_Q)
    checker.check(np.asarray(HOME_Q) + 0.001)
    assert checker.violations == []
    checker.check(np.asarray(HOME_Q) + 0.5)
    assert any("joint step" in v for v in checker.violations)
    checker.check(np.full(6, np.nan))
    assert any("non-finite" in v for v in checker.violations)


def test_scenario_rows_split_the_safe_stop_into_detection_and_reaction() -> None:
    held_first = ScenarioResult("s", "stopped", "stopped", "policy_stalled", safe_stop_ms=60.0, detect_ms=150.0)
    assert held_first.react_ms == 0.0  # already holding still when the runtime decided
    slow = ScenarioResult("s", "stopped", "stopped", "robot_error", safe_stop_ms=203.64, detect_ms=200.0)
    assert slow.react_ms == pytest.approx(3.64)
    row = slow.row()
    assert (row["safe_stop_ms"], row["detect_ms"], row["react_ms"]) == (203.6, 200.0, 3.6)
    unknown = ScenarioResult("s", "stopped", "stopped", "x", safe_stop_ms=5.0)
    assert math.isnan(unknown.react_ms)
    assert unknown.row()["detect_ms"] is None
    assert unknown.row()["react_ms"] is None
