"""Scripted grasping expert with privileged state: approach, descend, close, lift, hold.

The expert follows a time-parameterised Cartesian plan (minimum-jerk segments, tool pointing down, grasp yaw
taken from the object) solved to joint targets by damped least-squares IK. While approaching and descending it
re-reads the target's pose every step, so a nudged object is followed. With probability `noise_prob` an episode
gets smooth perturbations of the executed motion (DART-style): the recorded label stays the clean plan, so the
data holds recoveries back onto it. With probability `miss_prob` the first grasp is executed beside the target and
closes on nothing; the expert then opens, rises clear of the object and grasps again from where the arm is, so the
data also shows what follows a missed grasp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from robot.kinematics import IKError, axis_angle_to_matrix, forward, matrix_to_axis_angle, solve_ik, tool_yaw
from robot.sim.catalogue import ShapeSpec
from robot.sim.env import PickEnv
from robot.sim.mjcf import GRIPPER_STROKE, TCP_OFFSET

F64 = npt.NDArray[np.float64]


class Phase(StrEnum):
    """Stages of the expert's plan."""

    APPROACH = "approach"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"
    HOLD = "hold"


@dataclass(frozen=True)
class ExpertConfig:
    """Expert plan settings.

    approach_height: metres above the object's top for the pre-grasp pose; max_tcp_speed: m/s, the peak TCP speed
    of every planned segment (kept under the safety layer's default 0.25 m/s cap, so a policy that imitates the
    expert is never slowed by it); min_approach_s, descend_s, close_s, lift_s: shortest seconds per phase;
    lift_height: metres the TCP rises from the grasp; noise_prob: share of episodes with perturbations;
    noise_pos: metres, largest perturbation; noise_yaw: radians, largest yaw perturbation; miss_prob: share of
    episodes whose first grasp closes beside the target (across the finger axis, 1-2.5 cm clear of the object)
    before the expert grasps again (these episodes get no other perturbation).
    """

    approach_height: float = 0.10
    max_tcp_speed: float = 0.20
    min_approach_s: float = 1.2
    descend_s: float = 1.0
    close_s: float = 0.8
    lift_s: float = 1.4
    lift_height: float = 0.20
    noise_prob: float = 0.3
    noise_pos: float = 0.03
    noise_yaw: float = 0.15
    miss_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("approach_height", "max_tcp_speed", "min_approach_s", "descend_s", "close_s", "lift_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExpertConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.10 < self.lift_height <= 0.4:
            raise ValueError(f"lift_height must be within (0.10, 0.4] m to count as a lift, got {self.lift_height}")
        if not 0 <= self.noise_prob <= 1 or not 0 <= self.noise_pos <= 0.1 or not 0 <= self.noise_yaw <= 0.5:
            raise ValueError("noise_prob within [0, 1], noise_pos within [0, 0.1] m, noise_yaw within [0, 0.5] rad")
        if not 0 <= self.miss_prob <= 1:
            raise ValueError(f"miss_prob must be a share within [0, 1], got {self.miss_prob}")


@dataclass(frozen=True)
class ExpertStep:
    """One decision: `label` is the clean action to learn (7: joints radians + gripper metres), `executed` the
    action actually sent (differs from the label while a perturbation is active)."""

    label: npt.NDArray[np.float32]
    executed: npt.NDArray[np.float32]
    phase: Phase


#: Peak speed of a minimum-jerk segment, as a multiple of its mean speed.
_MIN_JERK_PEAK = 1.875


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


def down_rotation(axis_yaw: float) -> F64:
    """Tool rotation pointing down whose finger (y) axis lies along `axis_yaw` radians in the table plane."""
    c, s = math.cos(axis_yaw), math.sin(axis_yaw)
    return np.array([[-s, c, 0.0], [c, s, 0.0], [0.0, 0.0, -1.0]])


def grasp_height(shape: ShapeSpec) -> float:
    """TCP height (metres above the table) of a grasp on an object of `shape` resting on the table."""
    hz = shape.half_extents[2]
    return max(0.022, min(hz, 2 * hz - 0.025))


def nearest_axis_yaw(env: PickEnv, current: float) -> float:
    """The finger-axis yaw (radians) that grasps `env.target`, among its symmetric equivalents the closest to
    `current` radians (a shape that looks the same at every yaw takes `current` itself, modulo pi)."""
    obj = env.scene.find(env.target) if env.scene is not None else None
    if obj is None:
        raise RuntimeError("reset the environment first")
    spec = obj.kind.spec
    base = current if spec.yaw_symmetric else env.object_yaw(env.target) + spec.grasp_axis_yaw
    return base + round((current - base) / spec.grasp_period) * spec.grasp_period


class ScriptedExpert:
    """Grasps `env.target`. Call `reset` after `env.reset`, then `act` once per control step."""

    def __init__(self, env: PickEnv, config: ExpertConfig | None = None) -> None:
        self.env = env
        self.config = config or ExpertConfig()

    def reset(self, seed: int) -> None:
        """Plan from the arm's current pose; `seed` draws the perturbations."""
        env = self.env
        cfg = self.config
        obj = env.scene.find(env.target) if env.scene is not None and env.model is not None else None
        if obj is None:
            raise RuntimeError("reset the environment before the expert")
        self._rng = np.random.default_rng([seed, 2])
        self._q_label = env.joint_command
        start = forward(self._q_label, TCP_OFFSET)
        self._start_pos, self._start_rot = start[:3, 3].copy(), start[:3, :3].copy()
        self._t = 0.0
        self._grasp_pos: F64 | None = None
        self._shape = obj.kind.spec
        pre = self._pregrasp_pos()
        dist = float(np.linalg.norm(pre - self._start_pos))
        # a minimum-jerk segment over distance d in T seconds peaks at 1.875 d / T
        self._approach_s = max(cfg.min_approach_s, _MIN_JERK_PEAK * dist / cfg.max_tcp_speed)
        descent = float(pre[2] - self._grasp_z())
        self._descend_s = max(cfg.descend_s, _MIN_JERK_PEAK * descent / cfg.max_tcp_speed)
        self._lift_s = max(cfg.lift_s, _MIN_JERK_PEAK * cfg.lift_height / cfg.max_tcp_speed)
        self._axis_yaw = self._choose_axis_yaw()
        self._perturb: tuple[float, float, F64, float] | None = None
        if self._rng.random() < cfg.noise_prob:
            t0 = float(self._rng.uniform(0.2, 0.8) * self._approach_s)
            dur = float(self._rng.uniform(0.5, 1.0))
            offset = self._rng.uniform(-cfg.noise_pos, cfg.noise_pos, size=3)
            offset[2] = abs(offset[2])  # never push down into the scene
            self._perturb = (t0, dur, offset, float(self._rng.uniform(-cfg.noise_yaw, cfg.noise_yaw)))
        self._q_exec = self._q_label.copy()
        self._retrying = False
        self._miss: F64 | None = None
        if cfg.miss_prob > 0 and self._rng.random() < cfg.miss_prob:
            side = self._axis_yaw + math.pi / 2  # across the finger axis: both fingers come down beside the object
            clear = max(self._shape.half_extents[:2]) + float(self._rng.uniform(0.01, 0.025))
            sign = 1.0 if self._rng.random() < 0.5 else -1.0
            self._miss = sign * clear * np.array([math.cos(side), math.sin(side), 0.0])
            self._perturb = None

    # ------------------------------------------------------------ geometry of the grasp
    def _target_pos(self) -> F64:
        return self.env.object_position(self.env.target)

    def _grasp_z(self) -> float:
        return grasp_height(self._shape)

    def _pregrasp_pos(self) -> F64:
        p = self._target_pos()
        return np.array([p[0], p[1], 2 * self._shape.half_extents[2] + self.config.approach_height])

    def _choose_axis_yaw(self) -> float:
        """Finger axis yaw for the object, among its symmetric equivalents the closest to the current tool."""
        return nearest_axis_yaw(self.env, tool_yaw(self._start_rot))

    def _rotation(self, s: float) -> F64:
        goal = down_rotation(self._axis_yaw)
        delta = matrix_to_axis_angle(self._start_rot.T @ goal)
        return self._start_rot @ axis_angle_to_matrix(delta * s)

    # ------------------------------------------------------------ plan
    def _plan(self, t: float) -> tuple[F64, F64, float, Phase]:
        """Clean TCP position, rotation and gripper opening at plan time `t` seconds."""
        cfg = self.config
        t_desc = self._approach_s
        t_close = t_desc + self._descend_s
        t_lift = t_close + cfg.close_s
        t_hold = t_lift + self._lift_s
        rot = self._rotation(_min_jerk(t / self._approach_s))
        if t < t_desc:
            u = t / self._approach_s
            pre = self._pregrasp_pos()
            pos = self._start_pos + _min_jerk(u) * (pre - self._start_pos)
            if self._retrying:  # from beside the object: rise above it in the first half, before crossing it
                pos[2] = self._start_pos[2] + _min_jerk(2 * u) * (pre[2] - self._start_pos[2])
            return pos, rot, GRIPPER_STROKE, Phase.APPROACH
        obj = self._target_pos()
        grasp = np.array([obj[0], obj[1], self._grasp_z()])
        if t < t_close:
            s = _min_jerk((t - t_desc) / self._descend_s)
            pre = self._pregrasp_pos()
            self._grasp_pos = pre + s * (grasp - pre)
            return self._grasp_pos.copy(), rot, GRIPPER_STROKE, Phase.DESCEND
        if self._grasp_pos is None:  # a control period longer than the descent skipped it
            self._grasp_pos = grasp
        if t < t_lift:
            return self._grasp_pos.copy(), rot, 0.0, Phase.CLOSE
        s = _min_jerk((t - t_lift) / self._lift_s)
        pos = self._grasp_pos + np.array([0.0, 0.0, s * cfg.lift_height])
        return pos, rot, 0.0, Phase.LIFT if t < t_hold else Phase.HOLD

    def act(self) -> ExpertStep:
        """The next action, advancing the plan by one control period."""
        dt = self.env.config.control_dt
        self._t += dt
        pos, rot, grip, phase = self._plan(self._t)
        if self._miss is not None and not self._retrying and phase is Phase.LIFT:
            self._retry()  # the missed close is over: grasp again
            pos, rot, grip, phase = self._plan(self._t)
        target = np.eye(4)
        target[:3, :3], target[:3, 3] = rot, pos
        self._q_label = self._ik(target, self._q_label)
        q_exec = self._q_label
        if self._miss is not None and not self._retrying:
            missed = target.copy()
            missed[:3, 3] += _min_jerk(self._t / self._approach_s) * self._miss
            q_exec = self._ik(missed, self._q_exec)
        elif self._perturb is not None:
            t0, dur, offset, dyaw = self._perturb
            if t0 <= self._t <= t0 + dur:
                bump = math.sin(math.pi * (self._t - t0) / dur)
                noisy = target.copy()
                noisy[:3, 3] += bump * offset
                c, s = math.cos(bump * dyaw), math.sin(bump * dyaw)
                noisy[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ rot
                q_exec = self._ik(noisy, self._q_label)
        self._q_exec = q_exec
        label = np.append(self._q_label, grip).astype(np.float32)
        executed = np.append(q_exec, grip).astype(np.float32)
        return ExpertStep(label, executed, phase)

    def _retry(self) -> None:
        """Plan a new grasp from where the arm really is after the missed close (the gripper opens at once)."""
        cfg = self.config
        self._retrying = True
        self._q_label = self._q_exec.copy()
        start = forward(self._q_label, TCP_OFFSET)
        self._start_pos, self._start_rot = start[:3, 3].copy(), start[:3, :3].copy()
        self._t = self.env.config.control_dt
        self._grasp_pos = None
        pre = self._pregrasp_pos()
        # the rise takes half the approach: size the approach so that the rise also keeps the speed cap
        dist = max(float(np.linalg.norm(pre - self._start_pos)), 2.0 * abs(float(pre[2] - self._start_pos[2])))
        self._approach_s = max(cfg.min_approach_s, _MIN_JERK_PEAK * dist / cfg.max_tcp_speed)
        self._axis_yaw = self._choose_axis_yaw()

    @staticmethod
    def _ik(target: F64, q_init: F64) -> F64:
        try:
            return solve_ik(target, q_init, tcp_offset=TCP_OFFSET)
        except IKError:
            return q_init  # unreachable waypoint: hold; the episode then times out and is reported as such


def axis_yaw_error(env: PickEnv) -> float:
    """Radians between the tool's finger axis and the target's grasp axis, modulo the object's symmetry."""
    tool = tool_yaw(forward(env.joints, TCP_OFFSET)[:3, :3])
    return abs(tool - nearest_axis_yaw(env, tool))
