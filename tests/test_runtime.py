"""The asynchronous runtime: chunk queue, ensembler, control loop, policy loop and the lockstep simulation mode.

No timing assertions (timing lives in bench/runtime.py): the control-loop logic is driven tick by tick with a
fake clock, and the threaded tests only check order and end states. `FakeRobot` is a mock of the `Robot`
protocol that records every command and checks it against the safety limits itself.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.runtime import (
    ChunkQueue,
    ControlConfig,
    ControlLoop,
    EndReason,
    PolicyEnd,
    PolicyLoop,
    ensemble,
    ensemble_weights,
)
from pipeline.runtime.lockstep import LockstepConfig, run_lockstep
from robot.protocols import Camera, Gripper, Robot, RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import HOME_Q, CellConfig
from robot.sim.env import PickEnv, StepInfo
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.outcome import Outcome
from robot.sim.scene import SceneRequest
from robot.sim.sim_robot import SimCamera, SimRobot

F64 = npt.NDArray[np.float64]
HOME = np.array(HOME_Q)
PERIOD = 0.01


class FakeRobot:
    """Mock `Robot`: perfect tracking, records commands, checks each against `limits` (violations collected)."""

    def __init__(self, limits: SafetyLimits | None = None, fail_on_command: int | None = None) -> None:
        self.q = HOME.copy()
        self.commands: list[F64] = []
        self.bad: list[str] = []
        self.stops = 0
        self.commands_at_stop: list[int] = []
        self.status_value = RobotStatus()
        self.fail_on_command = fail_on_command
        self.stop_raises = False
        self._checker = SafetyLayer(limits or SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=PERIOD)

    def joint_positions(self) -> F64:
        return self.q.copy()

    def servo_joints(self, q: F64) -> None:
        if self.fail_on_command is not None and len(self.commands) + 1 >= self.fail_on_command:
            raise ConnectionError("RTDE link lost")
        lim = self._checker.limits
        lo, hi = lim.joint_bounds
        if not np.all(np.isfinite(q)) or np.any(q < lo) or np.any(q > hi):
            self.bad.append(f"joint limits: {q}")
        elif np.max(np.abs(q - self.q)) > self._checker.max_step + 1e-12:
            self.bad.append(f"joint step {np.max(np.abs(q - self.q))}")
        else:
            p0, p1 = self._checker.tcp_position(self.q), self._checker.tcp_position(q)
            if np.linalg.norm(p1 - p0) > self._checker.max_tcp_step + 1e-12:
                self.bad.append(f"tcp step {np.linalg.norm(p1 - p0)}")
            if np.any(p1 < np.array(lim.workspace_min)) or np.any(p1 > np.array(lim.workspace_max)):
                self.bad.append(f"workspace {p1}")
        self.commands.append(np.array(q))
        self.q = np.array(q)

    def stop(self) -> None:
        self.stops += 1
        self.commands_at_stop.append(len(self.commands))
        if self.stop_raises:
            raise ConnectionError("controller unreachable")

    def status(self) -> RobotStatus:
        return self.status_value


class FakeGripper:
    """Mock `Gripper` recording moves."""

    def __init__(self) -> None:
        self.opening = 0.085
        self.moves: list[tuple[float, float, float]] = []
        self.stops = 0

    def width(self) -> float:
        return self.opening

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        self.moves.append((width_m, speed_m_s, force_n))

    def stop(self) -> None:
        self.stops += 1


def make_loop(
    robot: FakeRobot | None = None, gripper: FakeGripper | None = None, limits: SafetyLimits | None = None, **cfg: Any
) -> tuple[ControlLoop, ChunkQueue, FakeRobot]:
    robot = robot or FakeRobot(limits)
    queue = ChunkQueue()
    safety = SafetyLayer(limits or SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=PERIOD)
    return ControlLoop(robot, queue, safety, gripper, ControlConfig(period_s=PERIOD, **cfg)), queue, robot


def hold_chunk(k: int, offset: float = 0.0, grip: float = 0.05) -> F64:
    return np.tile(np.append(HOME + offset, grip), (k, 1))


def drive(loop: ControlLoop, ticks: range, period: float = PERIOD) -> EndReason | None:
    """Run ticks with a fake clock (tick n at n·period seconds); the reason it ended, or None."""
    for n in ticks:
        reason = loop.tick(n, n * period)
        if reason is not None:
            return reason
    return None


# ---------------------------------------------------------------- queue and ensembler
def test_queue_indexes_predictions_by_tick_oldest_first() -> None:
    q = ChunkQueue()
    a = np.arange(5 * 7, dtype=float).reshape(5, 7)
    b = 100.0 + np.arange(5 * 7, dtype=float).reshape(5, 7)
    assert q.put(a, 10)
    assert q.put(b, 12)
    assert q.predictions_for(9) == []
    ((act, age),) = q.predictions_for(11)
    np.testing.assert_array_equal(act, a[1])
    assert age == 1
    got = q.predictions_for(13)
    assert [age for _, age in got] == [3, 1]
    np.testing.assert_array_equal(got[0][0], a[3])
    np.testing.assert_array_equal(got[1][0], b[1])
    assert [age for _, age in q.predictions_for(13, max_age=2)] == [1]
    assert q.drop_before(15) == 1  # a covers ticks 10..14
    assert [age for _, age in q.predictions_for(15)] == [3]


def test_queue_drops_stale_and_bounds_its_size() -> None:
    q = ChunkQueue(staleness_ticks=3, max_chunks=2)
    q.drop_before(20)
    assert not q.put(np.zeros((10, 7)), 16)  # 4 ticks old > 3
    assert q.put(np.zeros((10, 7)), 17)
    assert not q.put(np.zeros((2, 7)), 17)  # ends at tick 18, before the current tick 20
    assert q.stale_dropped == 2
    q.put(np.ones((10, 7)), 18)
    q.put(np.full((10, 7), 2.0), 19)
    assert len(q) == 2
    assert q.overflow_dropped == 1
    assert [age for _, age in q.predictions_for(20)] == [2, 1]
    with pytest.raises(ValueError, match="NaN"):
        q.put(np.full((3, 7), np.nan), 20)
    with pytest.raises(ValueError, match=r"shape \(K >= 1, 7\)"):
        q.put(np.zeros((3, 6)), 20)


def test_ensemble_matches_an_offline_computation() -> None:
    rng = np.random.default_rng(1)
    actions = rng.normal(size=(6, 7))
    preds = [(actions[i], 5 - i) for i in range(6)]  # oldest first
    for m in (0.0, 0.01, 0.5, -0.3):
        w = np.exp(-m * np.arange(6))
        np.testing.assert_allclose(ensemble(preds, m), (w[:, None] * actions).sum(0) / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(ensemble(preds, 0.0), actions.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ensemble(preds, 1e4), actions[0])  # all weight on the oldest, no overflow
    np.testing.assert_allclose(ensemble(preds, -1e4), actions[-1])
    np.testing.assert_allclose(ensemble_weights(3, 0.0), [1 / 3] * 3)
    with pytest.raises(ValueError, match="at least one prediction"):
        ensemble([], 0.01)


# ---------------------------------------------------------------- control loop, tick by tick
def test_holds_without_predictions_then_ends_policy_stalled() -> None:
    loop, queue, robot = make_loop(hold_timeout_s=0.055)
    loop.begin(0.0)
    queue.put(hold_chunk(10, offset=0.02), 0)
    reason = drive(loop, range(100))
    result = loop.finish()
    assert reason == result.reason == EndReason.POLICY_STALLED
    assert "no prediction" in result.detail
    assert result.predicted_ticks == 10
    assert result.held_ticks == 5  # ticks 10..14 held; tick 15 is 0.06 s after the last prediction
    last = robot.commands[9]
    for cmd in robot.commands[10:]:
        np.testing.assert_array_equal(cmd, last)  # holding: the arm does not move
    assert robot.stops == 1
    assert robot.commands_at_stop == [15]


def test_the_end_is_stamped_on_the_loops_clock_when_it_was_decided() -> None:
    now = [0.0]
    queue = ChunkQueue()
    safety = SafetyLayer(SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=PERIOD)
    config = ControlConfig(period_s=PERIOD, hold_timeout_s=0.055)
    loop = ControlLoop(FakeRobot(), queue, safety, None, config, clock=lambda: now[0])
    loop.begin(0.0)
    queue.put(hold_chunk(10, offset=0.02), 0)
    for n in range(100):
        now[0] = n * PERIOD
        if loop.tick(n, now[0]) is not None:
            break
    now[0] = 9.0
    loop.stop(EndReason.STOP_REQUESTED, "later")  # the first decision wins: reason and stamp stay
    result = loop.finish()
    assert result.reason == EndReason.POLICY_STALLED
    assert result.ended_s == pytest.approx(15 * PERIOD)  # tick 15 found the policy stalled
    undecided, _, _ = make_loop()
    undecided.begin(0.0)
    assert math.isnan(undecided.finish().ended_s)  # finished without a decided end: no stamp


def test_waits_for_the_first_prediction_within_its_own_timeout() -> None:
    loop, _, robot = make_loop(first_prediction_timeout_s=0.105, hold_timeout_s=0.0)
    loop.begin(0.0)
    assert drive(loop, range(100)) == EndReason.POLICY_STALLED
    assert len(robot.commands) == 11  # held at the measured joints for 0.1 s
    np.testing.assert_array_equal(robot.commands[-1], HOME)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (RobotStatus(protective_stop=True, message="collision"), EndReason.PROTECTIVE_STOP),
        (RobotStatus(emergency_stop=True), EndReason.EMERGENCY_STOP),
        (RobotStatus(connected=False), EndReason.DISCONNECTED),
    ],
)
def test_controller_stop_read_every_tick_halts(status: RobotStatus, reason: EndReason) -> None:
    loop, queue, robot = make_loop()
    loop.begin(0.0)
    queue.put(hold_chunk(100, offset=0.05), 0)
    assert drive(loop, range(3)) is None
    robot.status_value = status
    assert loop.tick(3, 0.03) == reason
    result = loop.finish()
    assert result.reason == reason
    assert result.ticks == len(robot.commands) == 3  # nothing sent on the tick that saw the stop
    assert robot.stops == 1


def test_every_command_passed_the_safety_layer() -> None:
    rng = np.random.default_rng(2)
    limits = SafetyLimits(workspace_max=(0.85, 0.55, 0.32))
    loop, queue, robot = make_loop(limits=limits)
    loop.begin(0.0)
    wild = np.concatenate([HOME + rng.normal(0, 2.0, (80, 6)), rng.uniform(-0.1, 0.2, (80, 1))], axis=1)
    wild[::7, :6] = 10.0  # far outside the joint limits
    queue.put(wild, 0)
    assert drive(loop, range(80)) is None
    result = loop.finish()
    assert len(robot.commands) == 80
    assert robot.bad == []
    assert result.clamped_ticks > 40


def test_refused_command_ends_with_safety_violation() -> None:
    loop, queue, robot = make_loop(limits=SafetyLimits(violation_mode="refuse"))
    loop.begin(0.0)
    queue.put(hold_chunk(10, offset=0.5), 0)
    assert drive(loop, range(10)) == EndReason.SAFETY_VIOLATION
    result = loop.finish()
    assert "joint_step" in result.detail
    assert robot.commands == []
    assert robot.stops == 1


def test_a_stalled_loop_trips_the_command_timeout() -> None:
    loop, queue, robot = make_loop()
    loop.begin(0.0)
    queue.put(hold_chunk(100), 0)
    assert loop.tick(0, 0.0) is None
    assert loop.tick(1, 0.15) == EndReason.COMMAND_TIMEOUT  # 150 ms since the last command > 100 ms
    assert loop.finish().reason == EndReason.COMMAND_TIMEOUT
    assert len(robot.commands) == 1


def test_gripper_moves_only_when_its_target_changes() -> None:
    gripper = FakeGripper()
    loop, queue, _ = make_loop(gripper=gripper, gripper_force_n=100.0)
    loop.begin(0.0)
    chunk = hold_chunk(10, grip=0.085)
    chunk[5:, 6] = 0.0
    queue.put(chunk, 0)
    drive(loop, range(10))
    loop.finish()
    assert [m[0] for m in gripper.moves] == [0.0]
    assert gripper.moves[0][2] == 60.0  # the force is capped by the safety layer
    assert gripper.stops == 1


# ---------------------------------------------------------------- threaded
#: Threaded tests run on a loaded 2-core machine: a generous command timeout keeps a descheduled control thread
#: from ending a test early with "command_timeout" (that path is tested tick by tick above).
RELAXED = SafetyLimits(command_timeout=5.0)


def wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def test_stop_from_another_thread_halts_and_stops_the_robot() -> None:
    loop, queue, robot = make_loop(limits=RELAXED)
    queue.put(hold_chunk(100_000), 0)
    loop.start()
    try:
        wait_for(lambda: len(robot.commands) >= 3)
    finally:
        assert loop.stop()
    sent = len(robot.commands)
    result = loop.join(10.0)
    assert result is not None
    assert result.reason == EndReason.STOP_REQUESTED
    assert len(robot.commands) == sent  # nothing sent after stop() returned
    assert robot.stops == 1
    errors = loop.period_errors()
    assert errors.size >= 3
    assert math.isfinite(result.period_error_p99_s)


def test_robot_stop_is_called_even_when_the_sink_raises() -> None:
    robot = FakeRobot(RELAXED, fail_on_command=3)
    robot.stop_raises = True
    gripper = FakeGripper()
    loop, queue, _ = make_loop(robot=robot, gripper=gripper, limits=RELAXED)
    queue.put(hold_chunk(100_000), 0)
    loop.start()
    result = loop.join(20.0)
    assert result is not None
    assert result.reason == EndReason.ROBOT_ERROR
    assert "RTDE link lost" in result.detail
    assert "robot.stop() raised" in result.detail
    assert robot.stops == 1
    assert gripper.stops == 1  # still stopped although robot.stop() raised
    assert len(robot.commands) == 2


class ScriptedPredictor:
    """Returns `good` hold chunks, then fails the configured way."""

    def __init__(self, good: int, failure: str) -> None:
        self.good, self.failure, self.calls = good, failure, 0

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[Any]:
        self.calls += 1
        if self.calls <= self.good:
            return hold_chunk(50, offset=0.001 * self.calls)
        if self.failure == "raise":
            raise RuntimeError("CUDA error: device-side assert")
        if self.failure == "nan":
            bad = hold_chunk(50)
            bad[3, 2] = np.nan
            return bad
        return np.zeros((50, 6))


@pytest.mark.parametrize(
    ("failure", "reason"),
    [("raise", PolicyEnd.PREDICTOR_ERROR), ("nan", PolicyEnd.NON_FINITE), ("shape", PolicyEnd.BAD_SHAPE)],
)
def test_bad_prediction_ends_both_loops_without_moving_on_it(failure: str, reason: PolicyEnd) -> None:
    loop, queue, robot = make_loop(limits=RELAXED, hold_timeout_s=60.0)
    predictor = ScriptedPredictor(good=3, failure=failure)

    def observe() -> tuple[Any, npt.NDArray[Any], int]:
        return None, np.append(robot.q, 0.05), loop.current_tick

    policy = PolicyLoop(predictor, observe, queue, control=loop, min_interval_s=0.02)
    loop.start()
    policy.start()
    presult = policy.join(20.0)
    assert presult is not None
    sent_when_failed = len(robot.commands)
    result = loop.join(10.0)
    assert result is not None
    assert presult.reason == reason
    assert presult.chunks == 3
    assert result.reason == EndReason.POLICY_FAILED
    assert reason.value in result.detail
    assert len(robot.commands) == sent_when_failed  # no command after the bad chunk
    assert robot.stops == 1
    assert all(np.all(np.isfinite(c)) for c in robot.commands)
    assert robot.bad == []
    assert policy.inference_times().size == 4


class UnseenPredictor:
    """Hold chunks of 5 ticks; `visible` says whether the tracker saw the target in the last predicted frame."""

    def __init__(self, coast_unseen: bool) -> None:
        self.coast_unseen, self.visible = coast_unseen, True

    @property
    def last_step(self) -> Any:
        return type("Step", (), {"object_score": 3.0 if self.visible else -3.0, "box": None, "visible": self.visible})

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return hold_chunk(5)


def test_chunks_from_frames_without_the_target_are_left_out_while_earlier_chunks_cover_the_tick() -> None:
    queue = ChunkQueue(7)
    predictor = UnseenPredictor(coast_unseen=True)
    tick = [0]
    policy = PolicyLoop(predictor, lambda: (None, np.zeros(7), tick[0]), queue)
    for t, visible in [(0, True), (1, False), (4, False), (5, False), (6, True)]:
        tick[0], predictor.visible = t, visible
        assert policy.step() is None
    # tick 0 queued; 1 and 4 coast on it; at 5 nothing covers the tick, so that chunk is queued; 6 is seen
    assert (policy.chunks, policy.coasted, queue.put_count) == (3, 2, 3)
    asked = UnseenPredictor(coast_unseen=False)
    every = PolicyLoop(asked, lambda: (None, np.zeros(7), tick[0]), ChunkQueue(7))
    for t, visible in [(0, True), (1, False)]:
        tick[0], asked.visible = t, visible
        every.step()
    assert (every.chunks, every.coasted) == (2, 0)


def test_policy_loop_ends_when_the_control_loop_ends() -> None:
    loop, queue, robot = make_loop(limits=RELAXED, max_ticks=5)
    predictor = ScriptedPredictor(good=10**9, failure="raise")
    policy = PolicyLoop(predictor, lambda: (None, robot.q, 0), queue, loop, min_interval_s=0.005)
    policy.start()
    loop.start()
    result = loop.join(20.0)
    presult = policy.join(20.0)
    assert result is not None
    assert presult is not None
    assert result.reason == EndReason.MAX_TICKS
    assert presult.reason == PolicyEnd.CONTROL_ENDED


def test_stop_called_twice_and_from_many_threads_is_harmless() -> None:
    loop, queue, robot = make_loop(limits=RELAXED)
    queue.put(hold_chunk(100_000), 0)
    loop.start()
    wait_for(lambda: len(robot.commands) >= 1)
    threads = [threading.Thread(target=loop.stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = loop.join(10.0)
    assert result is not None
    assert result.reason == EndReason.STOP_REQUESTED
    assert robot.stops == 1


def test_config_errors_say_what_is_valid() -> None:
    with pytest.raises(ValueError, match=r"realtime_priority must be None or within 1\.\.99"):
        ControlConfig(realtime_priority=100)
    with pytest.raises(ValueError, match="must equal the control period"):
        ControlLoop(FakeRobot(), ChunkQueue(), SafetyLayer(period_s=0.02), config=ControlConfig(period_s=0.01))
    with pytest.raises(ValueError, match="shorter than the command timeout"):
        ControlLoop(FakeRobot(), ChunkQueue(), SafetyLayer(period_s=0.2), config=ControlConfig(period_s=0.2))


def test_fakes_satisfy_the_protocols() -> None:
    assert isinstance(FakeRobot(), Robot)
    assert isinstance(FakeGripper(), Gripper)


# ---------------------------------------------------------------- simulation (render-free cell)
@pytest.fixture
def sim() -> SimRobot:
    env = PickEnv(CellConfig(render=False, scene=SceneRequest(n_objects=(3, 3))))
    obs, _ = env.reset(0)
    return SimRobot(env, obs)


class TowardsGoal:
    """Predicts chunks that all point at one joint goal with the gripper open."""

    def __init__(self, goal: F64) -> None:
        self.goal = goal

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.tile(np.append(self.goal, 0.08), (10, 1))


def test_sim_robot_satisfies_the_protocols_and_holds_on_stop(sim: SimRobot) -> None:
    assert isinstance(sim, Robot)
    assert isinstance(sim, Gripper)
    assert sim.status().ok
    sim.servo_joints(sim.joint_positions() + 0.1)
    sim.advance(2 * sim.control_dt)
    assert sim.time == pytest.approx(2 * sim.control_dt)
    sim.stop()
    np.testing.assert_array_equal(sim.joint_target, sim.joint_positions())
    before = sim.joint_positions()
    sim.advance(sim.control_dt)
    assert np.max(np.abs(sim.joint_positions() - before)) < 0.02  # decelerates and holds
    with pytest.raises(ValueError, match="whole multiple of control_dt"):
        sim.advance(0.03)
    with pytest.raises(ValueError, match="6 finite angles"):
        sim.servo_joints(np.full(6, np.nan))
    with pytest.raises(RuntimeError, match=r"render=True"):
        SimCamera(sim).read(0.1)
    sim.last_info = StepInfo(Outcome.COLLISION, 1.0, 0.0)
    assert sim.status().protective_stop


@pytest.mark.render
def test_sim_camera_reads_the_last_rendered_frame() -> None:
    env = PickEnv(CellConfig(image_width=64, image_height=48, scene=SceneRequest(n_objects=(3, 3))))
    obs, _ = env.reset(0)
    try:
        robot = SimRobot(env, obs)
        camera = SimCamera(robot)
        assert isinstance(camera, Camera)
        frame = camera.read(0.1)
        assert frame.rgb.shape == (48, 64, 3)
        assert frame.depth_mm is not None
        assert frame.intrinsics.width == 64
        robot.advance(robot.control_dt)
        assert camera.read(0.1).timestamp_s == pytest.approx(robot.control_dt)
    finally:
        env.close()


def test_lockstep_drives_the_sim_through_the_runtime(sim: SimRobot) -> None:
    goal = np.array(HOME_Q) + np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = run_lockstep(sim, TowardsGoal(goal), LockstepConfig(max_ticks=20))
    assert out.loop.reason == EndReason.MAX_TICKS
    assert out.chunks == 20
    assert out.loop.held_ticks == 0
    assert out.sim_time_s == pytest.approx(20 * sim.control_dt)
    assert np.max(np.abs(sim.joint_positions() - goal)) < 0.02
    assert sim.stop_count == 1


def test_lockstep_latency_delays_each_chunk(sim: SimRobot) -> None:
    goal = np.array(HOME_Q) + np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = run_lockstep(sim, TowardsGoal(goal), LockstepConfig(max_ticks=20, latency=0.12))
    assert out.loop.reason == EndReason.MAX_TICKS
    assert out.loop.held_ticks == 3  # the first chunk is usable 0.12 s (3 ticks of 0.05 s) after its observation
    assert out.chunks == 7  # observations at ticks 0, 3, ..., 18: the policy is busy in between


def test_lockstep_measured_latency_and_a_failing_policy(sim: SimRobot) -> None:
    goal = np.array(HOME_Q)
    measured = run_lockstep(sim, TowardsGoal(goal), LockstepConfig(max_ticks=6, latency="measured"))
    assert measured.loop.reason == EndReason.MAX_TICKS
    assert measured.loop.held_ticks >= 1
    failing = run_lockstep(sim, ScriptedPredictor(good=2, failure="nan"), LockstepConfig(max_ticks=20))
    assert failing.loop.reason == EndReason.POLICY_FAILED
    assert "non_finite_chunk" in failing.loop.detail
    assert failing.loop.ticks == 2


def test_a_stop_requested_from_another_thread_holds_from_the_next_simulated_step(sim: SimRobot) -> None:
    goal = np.array(HOME_Q) + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
    sim.servo_joints(goal)
    sim.advance(2 * sim.control_dt)  # under way towards the goal
    moving = sim.joint_positions()
    sim.request_stop()
    assert sim.stop_count == 0  # nothing applied to the simulation from the requesting thread ...
    np.testing.assert_array_equal(sim.joint_target, moving)  # ... but the hold is latched and reported at once
    sim.request_stop()  # a second request keeps the first hold
    sim.advance(sim.control_dt)
    assert sim.stop_count == 1
    assert np.max(np.abs(sim.joint_target - moving)) < 1e-12  # the hold is the pose where that step began
    sim.servo_joints(goal)  # a request is applied once, not again at every step
    sim.advance(sim.control_dt)
    np.testing.assert_array_equal(sim.joint_target, goal)
    assert sim.stop_count == 1


def test_a_drive_stop_returns_while_the_simulation_lock_is_held(sim: SimRobot) -> None:
    """A stop must not wait for the step being simulated (and rendered) under the cell's lock: it ends the control
    loop and the robot holds from the next simulated step."""
    from pipeline.jobs.sim_drive import SimDrive

    lock = threading.RLock()
    goal = np.array(HOME_Q) + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
    drive = SimDrive(sim, TowardsGoal(goal), SafetyLayer(period_s=sim.control_dt), lock, pace=0.0, max_ticks=10**6)
    runner = threading.Thread(target=drive.run)
    runner.start()
    wait_for(lambda: sim.time > 0.2)
    held = threading.Event()
    release = threading.Event()
    frozen: list[F64] = []

    def hold_the_lock() -> None:
        with lock:
            frozen.append(sim.joint_positions())  # the simulation cannot step while this thread holds the lock
            held.set()
            release.wait(10.0)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(10.0)
    t0 = time.monotonic()
    drive.stop()
    waited = time.monotonic() - t0
    release.set()
    holder.join()
    runner.join(20.0)
    assert not runner.is_alive()
    assert waited < 5.0  # it did not wait for the 10-s lock holder
    assert drive.loop.result is not None
    assert drive.loop.result.reason == EndReason.STOP_REQUESTED
    np.testing.assert_allclose(sim.joint_target, sim.joint_positions(), atol=0.02)  # holding ...
    np.testing.assert_allclose(sim.joint_positions(), frozen[0], atol=0.02)  # ... where it was when stopped


def test_after_a_drive_stop_returns_the_reported_target_no_longer_changes() -> None:
    """What the cell reports after a stop returns (the joint target) must already be the hold: a reader right
    after the stop and one after the drive has ended see the same target, wherever in the drive's cycle the stop
    landed."""
    from pipeline.jobs.sim_drive import SimDrive

    lock = threading.RLock()
    goal = np.array(HOME_Q) + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
    for delay in (0.05, 0.11, 0.23):  # stops landing at different points of the drive's cycle
        env = PickEnv(CellConfig(render=False, scene=SceneRequest(n_objects=(3, 3))))
        sim = SimRobot(env, env.reset(0)[0])
        drive = SimDrive(sim, TowardsGoal(goal), SafetyLayer(period_s=sim.control_dt), lock, pace=0.0, max_ticks=10**6)
        runner = threading.Thread(target=drive.run)
        runner.start()
        start = sim.time
        moved_on = start + delay
        wait_for(lambda r=sim, t=moved_on: r.time > t)
        drive.stop()
        right_after = sim.joint_target.copy()
        runner.join(20.0)
        assert not runner.is_alive()
        np.testing.assert_array_equal(sim.joint_target, right_after)
        assert np.max(np.abs(right_after - goal)) > 0.05  # it held short of the goal, not at the goal


class _Seen:
    def __init__(self, visible: bool) -> None:
        self.visible, self.object_score, self.box = visible, 3.0 if visible else -3.0, None


class Flickering:
    """Sees the target on every third frame only; chunks of 5 ticks holding the state."""

    def __init__(self, coast_unseen: bool) -> None:
        self.coast_unseen, self.calls = coast_unseen, 0
        self.last_step: _Seen | None = None

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        self.last_step = _Seen(self.calls % 3 == 0)
        self.calls += 1
        return np.tile(np.asarray(state, dtype=np.float64), (5, 1))


@pytest.mark.parametrize(("coast", "chunks", "coasted"), [(True, 4, 8), (False, 12, 0)])
def test_a_drive_coasts_through_frames_without_the_target(
    sim: SimRobot, coast: bool, chunks: int, coasted: int
) -> None:
    """Through the cell's drive (the predictor wrapped for pacing), chunks from frames where the tracker did not see
    the target are left out while earlier ones cover the tick (ticks 0, 3, 6, 9 are seen and queued, the 8 others
    coast on them), when the predictor asks for coasting."""
    from pipeline.jobs.sim_drive import SimDrive

    drive = SimDrive(
        sim,
        Flickering(coast),
        SafetyLayer(period_s=sim.control_dt),
        threading.RLock(),
        pace=0.0,
        max_ticks=12,
        stop_on_episode_end=False,
        watch=None,
    )
    drive.run()
    assert (drive.policy.chunks, drive.policy.coasted) == (chunks, coasted)
