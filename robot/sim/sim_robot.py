"""The simulated cell behind the `Robot`, `Gripper` and `Camera` protocols, so the runtime drives it exactly as it
drives the real UR5e.

Simulated time advances only in `SimRobot.advance` (lockstep evaluation): `servo_joints` and `move` only store
targets, as a real controller would receive them between its own cycles. Units: radians, metres, seconds.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt

from robot.protocols import CameraFrame, RobotStatus
from robot.sim.env import Observation, PickEnv, StepInfo
from robot.sim.mjcf import GRIPPER_STROKE
from robot.sim.outcome import Outcome
from robot.stop_signal import StopSignal

F64 = npt.NDArray[np.float64]


class SimRobot:
    """`Robot` and `Gripper` over a `PickEnv` that has been `reset`.

    `first_observation`: the observation `env.reset` returned, so that `last_observation` (and `SimCamera`) has
    a frame before the first `advance`. A collision outcome of the episode reads as a protective stop, as the
    UR controller would report it.
    """

    def __init__(self, env: PickEnv, first_observation: Observation | None = None) -> None:
        if env.model is None:
            raise RuntimeError("SimRobot needs an environment after reset(seed): call env.reset first")
        self.env = env
        self._q_target = env.joint_command
        self._grip_target = env.gripper_width
        self.last_observation: Observation | None = first_observation
        self.last_info: StepInfo | None = None
        self.terminated = False
        self.truncated = False
        self.stop_count = 0
        # the pose a stop requested from another thread holds (joints rad, gripper m), latched at the request;
        # set while that stop waits for the next simulated control step
        self._held: tuple[F64, float] | None = None
        self._held_lock = threading.Lock()
        #: a stop raised by another process (the stop guard): every control step holds while it is pending
        self.stop_signal: StopSignal | None = None
        self._guard_hold: tuple[F64, float] | None = None  # the pose held for it, latched at the first such step

    @property
    def control_dt(self) -> float:
        """Seconds of simulated time per `env.step`."""
        return self.env.config.control_dt

    @property
    def time(self) -> float:
        """Simulated seconds since the env's reset."""
        data = self.env.data
        return 0.0 if data is None else float(data.time)

    @property
    def joint_target(self) -> F64:
        """The joint target, radians: the stored one, or the hold of a requested stop from the moment of the
        request (the simulation applies it from its next control step)."""
        held = self._guard_hold or self._held
        return held[0].copy() if held is not None else self._q_target.copy()

    @property
    def gripper_target(self) -> float:
        """The gripper opening target, metres (as `joint_target`, the hold of a requested stop once requested)."""
        held = self._guard_hold or self._held
        return held[1] if held is not None else self._grip_target

    # ------------------------------------------------------------------ Robot
    def joint_positions(self) -> F64:
        """Measured joint angles, (6,) radians."""
        return self.env.joints

    def servo_joints(self, q: F64) -> None:
        """Store a joint target (6, radians); the arm moves towards it in `advance`."""
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != (6,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"joint target must be 6 finite angles (radians), got {arr.tolist()}")
        self._q_target = arr.copy()

    def stop(self) -> None:
        """Halt: hold the measured joint positions and gripper opening as targets (or, when a stop was requested
        from another thread, the pose latched by that request). Idempotent. Call it where the simulation is not
        stepping (under the cell's lock); from any other thread use `request_stop`."""
        with self._held_lock:
            held, self._held = self._held, None
        self._q_target, self._grip_target = held if held is not None else self._measured_pose()
        self.stop_count += 1

    def request_stop(self) -> None:
        """Halt from any thread without waiting for the simulation to finish the step it is in: the measured pose
        is latched now as the hold, which `joint_target` reports at once, and the next simulated control step (of
        the `advance` in progress, or of the next one) starts holding it, so the arm gets no further motion than
        the step under way when the request came (at most `control_dt` seconds of simulated time), and returns to
        the latched pose from there. A second request before that step keeps the first hold. Returns at once."""
        with self._held_lock:
            if self._held is None:
                self._held = self._measured_pose()

    def status(self) -> RobotStatus:
        """Connected; a protective stop once the episode's outcome is a collision."""
        info = self.last_info
        if info is not None and info.outcome == Outcome.COLLISION:
            return RobotStatus(protective_stop=True, message="simulated collision with the table or bin")
        return RobotStatus()

    # ------------------------------------------------------------------ Gripper
    def width(self) -> float:
        """Measured gripper opening, metres."""
        return self.env.gripper_width

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        """Store an opening target (metres). The simulated gripper moves at the cell's configured speed and force;
        `speed_m_s` (m/s) and `force_n` (N) are validated only."""
        if not math.isfinite(width_m) or not 0.0 <= width_m <= GRIPPER_STROKE:
            raise ValueError(f"gripper width must be within [0, {GRIPPER_STROKE}] m, got {width_m}")
        if not math.isfinite(speed_m_s) or speed_m_s <= 0.0 or not math.isfinite(force_n) or force_n <= 0.0:
            raise ValueError(f"gripper speed (m/s) and force (N) must be positive, got {speed_m_s}, {force_n}")
        self._grip_target = float(width_m)

    # ------------------------------------------------------------------ simulation
    def advance(self, dt_s: float) -> Observation:
        """Step the simulation `dt_s` seconds (a whole number of `control_dt`) towards the stored targets; returns
        the last observation. `terminated` / `truncated` / `last_info` hold the episode's state afterwards."""
        n = dt_s / self.control_dt
        if not math.isfinite(n) or round(n) < 1 or abs(n - round(n)) > 1e-6:
            raise ValueError(f"dt_s must be a positive whole multiple of control_dt ({self.control_dt} s), got {dt_s}")
        obs: Observation | None = None
        for _ in range(round(n)):
            if self._held is not None:  # a stop requested from another thread
                self.stop()
            obs, _, terminated, truncated, info = self.env.step(self._action())
            self.last_info = info
            self.terminated |= terminated
            self.truncated |= truncated
        if obs is None:
            raise RuntimeError("advance stepped nothing")
        self.last_observation = obs
        return obs

    def _measured_pose(self) -> tuple[F64, float]:
        """The measured joint angles (radians) and gripper opening (metres)."""
        return self.env.joints, self.env.gripper_width

    def _action(self) -> F64:
        """The command of the next control step: the targets, or while a stop raised by another process is
        pending (`stop_signal`) the pose where the arm was at the first step that saw it."""
        signal = self.stop_signal
        if signal is not None and signal.pending:
            if self._guard_hold is None:
                self._guard_hold = self._measured_pose()
            return np.append(*self._guard_hold)
        self._guard_hold = None
        return np.append(self._q_target, self._grip_target)


class SimCamera:
    """`Camera` over a `SimRobot`: returns its last observation's image (simulated timestamp, cell intrinsics).

    Needs a cell configured with `render=True`; frames change only when the simulation advances."""

    def __init__(self, robot: SimRobot) -> None:
        self.robot = robot

    def read(self, timeout_s: float) -> CameraFrame:
        """The last rendered frame; `timeout_s` is unused (a frame is always ready once the cell has rendered).
        Raises RuntimeError when rendering is off or no observation exists yet."""
        obs = self.robot.last_observation
        if obs is None:
            raise RuntimeError("no observation yet: pass env.reset's observation to SimRobot or call advance first")
        if obs.rgb is None:
            raise RuntimeError("the simulated cell renders no images: build it with CellConfig(render=True)")
        return CameraFrame(obs.rgb, obs.depth_mm, obs.time, self.robot.env.config.intrinsics)
