"""The grasping expert as a feedback law: from wherever the arm is, the next joint target toward the grasp.

`ScriptedExpert` follows a plan in time from the pose it started at, so it can label only the states of its own
plan. Training on those alone leaves a policy that has never seen its own mistakes: once its motion leaves the
demonstrated states (a close 3 cm beside the object), nothing it learned says how to come back. This expert
decides from the cell's state instead (privileged: the target's pose is read from the simulator), so it can label
any state a policy drives the arm into (DAgger-style data: the policy drives, the expert labels).

The law, every control step, from the commanded TCP pose (the pose the arm is servoing to):
- approach: above the object's top plus `approach_height`; a TCP lower than that and more than `descend_xy`
  beside the grasp point first rises straight up, so the open fingers never sweep across an object;
- descend: within `descend_xy` of the grasp point (horizontally) the TCP goes down to the grasp height while the
  horizontal error is corrected;
- close: within `align_xy` horizontally, `close_z` vertically and `close_yaw` of the grasp yaw (measured pose), with
  the fingers still wider than the object, the gripper closes and the TCP holds for `close_s`;
- lift: once the fingers have closed in on something, the TCP rises `lift_height`; fingers that closed on
  nothing (measured opening under `empty_width`) open again and the approach starts over.
Translation moves toward the phase's goal at distance / `settle_s`, capped at `max_speed` and changed by at most
`max_accel` per second from the previous command's speed; rotation turns toward the grasp yaw (tool pointing
down) at most `max_turn_speed`. The result goes through damped least-squares IK from the commanded joints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from robot.kinematics import IKError, axis_angle_to_matrix, forward, matrix_to_axis_angle, solve_ik, tool_yaw
from robot.sim.env import PickEnv
from robot.sim.expert import Phase, down_rotation, grasp_height, nearest_axis_yaw
from robot.sim.mjcf import GRIPPER_STROKE, TCP_OFFSET

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CorrectiveConfig:
    """Settings of the feedback law (see the module doc).

    approach_height: metres above the object's top for the approach; lift_height: metres the TCP rises from the
    grasp; max_speed: m/s, TCP speed cap; max_accel: m/s^2, largest speed change per second; settle_s: seconds,
    time constant of the approach to a goal (speed = distance / settle_s under the cap); max_turn_speed: rad/s;
    align_xy, descend_xy, close_z: metres (see the module doc); close_yaw: radians; close_s: seconds the gripper
    closes before the lift; empty_width: metres of measured opening under which the fingers hold nothing.
    """

    approach_height: float = 0.10
    lift_height: float = 0.20
    max_speed: float = 0.20
    max_accel: float = 0.5
    settle_s: float = 0.35
    max_turn_speed: float = 1.0
    align_xy: float = 0.004
    descend_xy: float = 0.012
    close_z: float = 0.005
    close_yaw: float = 0.06
    close_s: float = 0.8
    empty_width: float = 0.004

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CorrectiveConfig.{f.name} must be a positive number, got {value}")
        if self.align_xy >= self.descend_xy:
            raise ValueError(
                f"align_xy ({self.align_xy} m) must be below descend_xy ({self.descend_xy} m): the close happens "
                "inside the region where the descent is allowed"
            )
        if self.max_speed > 0.25:
            raise ValueError(
                f"max_speed must be within (0, 0.25] m/s (the safety layer's TCP cap), got {self.max_speed}"
            )


class CorrectiveExpert:
    """Labels the state of `env` with the expert's next action. Call `reset` after `env.reset`, then `label`
    once per control step, before the step is taken."""

    def __init__(self, env: PickEnv, config: CorrectiveConfig | None = None) -> None:
        self.env = env
        self.config = config or CorrectiveConfig()
        self.phase = Phase.APPROACH
        self._closing_steps = 0
        self._close_pos: F64 | None = None
        self._prev_pos: F64 | None = None

    def reset(self) -> None:
        """Start a new episode (the target is `env.target`)."""
        obj = self.env.scene.find(self.env.target) if self.env.scene is not None else None
        if obj is None:
            raise RuntimeError("reset the environment before the corrective expert")
        self._spec = obj.kind.spec
        self.phase = Phase.APPROACH
        self._closing_steps = 0
        self._close_pos = None
        self._prev_pos = None

    # ------------------------------------------------------------ state
    def _grasp_point(self) -> F64:
        p = self.env.object_position(self.env.target)
        return np.array([p[0], p[1], grasp_height(self._spec)])

    def _approach_z(self) -> float:
        return 2 * self._spec.half_extents[2] + self.config.approach_height

    def _aligned(self, measured: F64, grasp: F64, goal_yaw: float) -> bool:
        cfg = self.config
        xy = float(np.linalg.norm(measured[:2, 3] - grasp[:2]))
        yaw = abs(math.remainder(tool_yaw(measured[:3, :3]) - goal_yaw, 2 * math.pi))
        down = measured[2, 2] < -math.cos(cfg.close_yaw)  # tool z within close_yaw of straight down
        return xy <= cfg.align_xy and measured[2, 3] <= grasp[2] + cfg.close_z and yaw <= cfg.close_yaw and down

    def _update_phase(self, measured: F64, grasp: F64, goal_yaw: float) -> None:
        cfg = self.config
        dt = self.env.config.control_dt
        width = self.env.gripper_width
        if self.phase in (Phase.CLOSE, Phase.LIFT):
            closed_on_nothing = width < cfg.empty_width
            drifted = self._close_pos is not None and (
                float(np.linalg.norm(measured[:2, 3] - self._close_pos[:2])) > cfg.descend_xy
            )
            if closed_on_nothing or (self.phase is Phase.CLOSE and drifted):
                self.phase, self._closing_steps, self._close_pos = Phase.APPROACH, 0, None
        if self.phase is Phase.CLOSE:
            self._closing_steps += 1
            if self._closing_steps * dt >= cfg.close_s - 1e-9 and width < GRIPPER_STROKE - 0.005:
                self.phase = Phase.LIFT
        elif self.phase is not Phase.LIFT:
            xy = float(np.linalg.norm(measured[:2, 3] - grasp[:2]))
            # the fingers must still be wider than the object, else they would come down on it
            if self._aligned(measured, grasp, goal_yaw) and width >= self._spec.grasp_width - 0.005:
                self.phase, self._closing_steps, self._close_pos = Phase.CLOSE, 0, grasp.copy()
            else:
                self.phase = Phase.DESCEND if xy <= cfg.descend_xy else Phase.APPROACH

    def _goal(self, commanded: F64, grasp: F64) -> F64:
        if self.phase is Phase.CLOSE and self._close_pos is not None:
            return self._close_pos.copy()
        if self.phase is Phase.LIFT and self._close_pos is not None:
            lifted: F64 = self._close_pos + np.array([0.0, 0.0, self.config.lift_height])
            return lifted
        if self.phase is Phase.DESCEND:
            return grasp
        approach_z = self._approach_z()
        pos = commanded[:3, 3]
        if pos[2] < approach_z - 0.015:  # low beside the object: rise straight up first
            return np.array([pos[0], pos[1], approach_z])
        return np.array([grasp[0], grasp[1], approach_z])

    # ------------------------------------------------------------ action
    def label(self) -> npt.NDArray[np.float32]:
        """The expert's next action (7: joint targets radians + gripper opening metres) from the current state."""
        cfg = self.config
        dt = self.env.config.control_dt
        q_cmd = self.env.joint_command
        commanded = forward(q_cmd, TCP_OFFSET)
        measured = forward(self.env.joints, TCP_OFFSET)
        grasp = self._grasp_point()
        goal_yaw = nearest_axis_yaw(self.env, tool_yaw(commanded[:3, :3]))
        self._update_phase(measured, grasp, goal_yaw)

        pos = commanded[:3, 3]
        goal = self._goal(commanded, grasp)
        offset = goal - pos
        distance = float(np.linalg.norm(offset))
        speed = min(cfg.max_speed, distance / cfg.settle_s)
        wanted = offset / distance * speed if distance > 1e-9 else np.zeros(3)
        previous = (pos - self._prev_pos) / dt if self._prev_pos is not None else np.zeros(3)
        change = wanted - previous
        limit = cfg.max_accel * dt
        norm = float(np.linalg.norm(change))
        velocity = previous + (change * (limit / norm) if norm > limit else change)
        if float(np.linalg.norm(velocity)) > cfg.max_speed:
            velocity *= cfg.max_speed / float(np.linalg.norm(velocity))
        target = np.eye(4)
        # a step longer than the way left would overshoot the goal: stop on it
        target[:3, 3] = goal if float(np.linalg.norm(velocity)) * dt >= distance else pos + velocity * dt
        turn = matrix_to_axis_angle(commanded[:3, :3].T @ down_rotation(goal_yaw))
        angle = float(np.linalg.norm(turn))
        step = min(angle, cfg.max_turn_speed * dt, angle * dt / cfg.settle_s + 1e-3)
        target[:3, :3] = commanded[:3, :3] @ axis_angle_to_matrix(turn * (step / angle) if angle > 1e-9 else turn)
        self._prev_pos = pos.copy()  # the command of this step: the next step's speed is measured from it
        try:
            q = solve_ik(target, q_cmd, tcp_offset=TCP_OFFSET)
        except IKError:
            q = q_cmd  # unreachable waypoint: hold
        grip = 0.0 if self.phase in (Phase.CLOSE, Phase.LIFT) else GRIPPER_STROKE
        return np.append(q, grip).astype(np.float32)
