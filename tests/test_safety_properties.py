"""Property tests of the safety layer where it guards an arm: 10,000 random and adversarial action chunks (NaN,
inf, huge jumps, out-of-box targets, bursts, silence gaps) in total, half through the control loop into the
simulated cell (`SimRobot`), half through the UR5e driver over the MOCK ur_rtde boundary (tests/fake_rtde.py,
checking the servoJ arguments it receives). Not one command may leave the limits."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fake_rtde import manual_driver
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop
from robot.safety import SafetyLayer, SafetyLimits, SafetyViolation
from robot.sim.config import HOME_Q, CellConfig
from robot.sim.env import PickEnv
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.sim_robot import SimRobot
from robot.ur5e_config import UR5eConfig

F64 = npt.NDArray[np.float64]
EXAMPLES = 25
CHUNKS_PER_EXAMPLE = 200  # 2 paths x 25 examples x 200 chunks = 10,000 chunks
LIMITS = SafetyLimits(workspace_min=(0.25, -0.4, 0.08), workspace_max=(0.7, 0.4, 0.5), max_tcp_speed=0.25)
KINDS = ("random", "nan", "inf", "jump", "out_of_box", "drift", "burst", "silence")
EPS = 1e-9

segment = st.tuples(
    st.sampled_from(KINDS),
    st.integers(1, 3),  # rows per chunk
    st.integers(0, 2**31 - 1),  # seed of the bulk numbers
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]),
    st.floats(-2.0, 2.0),  # gripper request, metres
    st.floats(-500.0, 500.0),  # gripper force request, newtons
)
scripts = st.lists(segment, min_size=CHUNKS_PER_EXAMPLE, max_size=CHUNKS_PER_EXAMPLE)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # shrinking 200-chunk scripts takes minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_chunk(seg: tuple[Any, ...], q_now: F64) -> F64:
    """A (K, 7) chunk of the segment's kind around the current joints `q_now`."""
    kind, k, seed, special, grip, _ = seg
    rng = np.random.default_rng(seed)
    chunk = np.empty((k, 7))
    chunk[:, 6] = grip
    if kind == "random":
        chunk[:, :6] = rng.uniform(-10.0, 10.0, (k, 6))
    elif kind == "jump":
        chunk[:, :6] = q_now + rng.uniform(-100.0, 100.0, (k, 6))
    elif kind == "out_of_box":
        push = np.zeros(6)
        push[rng.integers(0, 3)] = rng.choice([-1.5, 1.5])
        chunk[:, :6] = q_now + push
    else:  # drift, nan, inf, burst, silence: plausible motion, then spoiled or timed as the kind says
        steps = rng.normal(0.0, 0.02, (k, 6)).cumsum(axis=0)
        chunk[:, :6] = q_now + steps
        if kind in ("nan", "inf"):
            chunk[rng.integers(0, k), rng.integers(0, 7)] = math.nan if kind == "nan" else special
    return chunk


class Checker:
    """Checks each command against the previous one (or the measured seed) for every limit."""

    def __init__(self, layer: SafetyLayer) -> None:
        self.layer = layer
        self.lo, self.hi = LIMITS.joint_bounds
        self.box_lo, self.box_hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
        self.prev: F64 | None = None
        self.count = 0

    def seed(self, q: F64) -> None:
        self.prev = np.asarray(q, dtype=np.float64).copy()

    def outside_by(self, p: F64) -> float:
        return float(np.linalg.norm(np.maximum(self.box_lo - p, 0.0) + np.maximum(p - self.box_hi, 0.0)))

    def command(self, q_in: Any) -> None:
        q = np.asarray(q_in, dtype=np.float64)
        prev = self.prev
        assert prev is not None
        assert np.all(np.isfinite(q)), q
        assert np.all(q >= self.lo - EPS), q
        assert np.all(q <= self.hi + EPS), q
        assert np.max(np.abs(q - prev)) <= self.layer.max_step + EPS
        tcp, tcp_prev = self.layer.tcp_position(q), self.layer.tcp_position(prev)
        assert np.linalg.norm(tcp - tcp_prev) <= self.layer.max_tcp_step + EPS
        assert self.outside_by(tcp) <= max(self.outside_by(tcp_prev), 0.0) + EPS, tcp
        self.prev = q
        self.count += 1


class RecordingSim(SimRobot):
    """SimRobot that hands every servo target and gripper move to the checker."""

    checker: Checker

    def servo_joints(self, q: F64) -> None:
        self.checker.command(q)
        super().servo_joints(q)

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        assert LIMITS.gripper_width_range[0] <= width_m <= LIMITS.gripper_width_range[1]
        assert 0.0 <= force_n <= LIMITS.max_gripper_force
        super().move(width_m, speed_m_s, force_n)


@pytest.fixture(scope="module")
def env() -> Iterator[PickEnv]:
    cell = PickEnv(CellConfig(render=False, control_dt=0.01, start_jitter=0.0))
    yield cell
    cell.close()


@pytest.mark.slow
@SETTINGS
@given(script=scripts)
def test_sim_cell_receives_only_commands_within_the_limits(env: PickEnv, script: list[tuple[Any, ...]]) -> None:
    obs, _ = env.reset(0)
    robot = RecordingSim(env, obs)
    period = 0.01
    cfg = ControlConfig(period_s=period, hold_timeout_s=0.05, first_prediction_timeout_s=0.05, gripper_force_n=40.0)

    def new_loop() -> tuple[ControlLoop, ChunkQueue]:
        queue = ChunkQueue()
        layer = SafetyLayer(LIMITS, tcp_offset=TCP_OFFSET, period_s=period)
        loop = ControlLoop(robot, queue, layer, gripper=robot, config=cfg)
        loop.begin(robot.time)
        robot.checker = Checker(layer)
        robot.checker.seed(layer.last_q)  # type: ignore[arg-type]
        return loop, queue

    loop, queue = new_loop()
    tick, sent = 0, 0
    for seg in script:
        kind, k = seg[0], seg[1]
        for _ in range(3 if kind == "burst" else 1):
            chunk = make_chunk(seg, robot.joint_positions())
            if np.all(np.isfinite(chunk)):
                queue.put(chunk, tick)
                continue
            with pytest.raises(ValueError, match="NaN or inf"):  # the queue refuses it, and so would the layer
                queue.put(chunk, tick)
            bad = chunk[int(np.flatnonzero(~np.all(np.isfinite(chunk), axis=1))[0])]
            with pytest.raises(SafetyViolation, match="non_finite"):
                loop.safety.check(bad[:6], float(bad[6]), robot.time, seg[5])
        ticks = 8 if kind == "silence" else k
        for _ in range(ticks):
            if loop.tick(tick, robot.time) is not None:
                loop.finish()
                sent += robot.checker.count
                loop, queue = new_loop()
                tick = 0
                break
            robot.advance(period)
            tick += 1
    sent += robot.checker.count
    loop.finish()
    assert sent > 0


@pytest.mark.slow
@SETTINGS
@given(script=scripts)
def test_ur5e_driver_sends_only_servoj_targets_within_the_limits(script: list[tuple[Any, ...]]) -> None:
    robot, ctl = manual_driver(UR5eConfig(host="10.0.0.2", handle_signals=False, safety=LIMITS))
    try:
        layer = robot.servo.safety
        checker = Checker(layer)
        checker.seed(np.array(HOME_Q))
        submits: list[float] = []
        refused = 0
        for seg in script:
            kind = seg[0]
            if kind == "silence":
                ctl.run_ticks(52)  # 104 ms: past the command timeout
                continue
            chunk = make_chunk(seg, np.array(ctl.q))
            for row in np.repeat(chunk, 3, axis=0) if kind == "burst" else chunk:
                try:
                    robot.servo_joints(row[:6])
                    submits.append(ctl.now)
                except SafetyViolation:
                    refused += 1
                ctl.run_ticks(1)
        with ctl.lock:
            sent = list(ctl.servoj)
            calls = list(ctl.calls)
        for t, q in sent:
            checker.command(q)
            last_submit = max(s for s in submits if s <= t)
            assert t - last_submit <= LIMITS.command_timeout + EPS  # nothing streamed after 100 ms of silence
        for name, args in calls:
            if name == "servoJ":
                assert args[1:] == (0.0, 0.0, 0.002, 0.1, 300.0)
        assert len(sent) > 0
        nan_rows = sum(1 for s in script if s[0] in ("nan", "inf"))
        assert refused <= nan_rows
    finally:
        robot.close()
