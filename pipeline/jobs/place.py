"""The scripted place motion of the simulated cell: carry the held object up, over to its place, lower it, open
the gripper, rise, and go back to the start pose, so that the next pick starts where every pick starts.

Cartesian segments (minimum-jerk, tool orientation kept) are solved to joint targets by IK; the return to the
start pose is interpolated in joint space. Each call to `predict` advances the plan by one control period; the
commands still pass the safety layer in the control loop. Units: metres, radians, seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from robot.kinematics import IKError, forward, solve_ik
from robot.sim.config import HOME_Q
from robot.sim.mjcf import BIN_CENTRE, BIN_HALF, GRIPPER_STROKE, TCP_OFFSET

F64 = npt.NDArray[np.float64]
#: Height (metres) of the TCP while carrying an object across the cell.
CARRY_Z = 0.30
#: TCP height (metres) at which an object is released over the drop bin (its walls are 0.05 m tall).
BIN_RELEASE_Z = 0.17
#: Peak TCP speed (m/s) of the place segments, under the safety layer's 0.25 m/s cap.
PLACE_TCP_SPEED = 0.18
#: Peak joint speed (rad/s) of the return to the start pose.
HOME_JOINT_SPEED = 0.6
#: Seconds the gripper is given to open.
OPEN_S = 0.7
_MIN_JERK_PEAK = 1.875  # peak / mean speed of a minimum-jerk segment


def drop_zones() -> dict[str, tuple[float, float, float]]:
    """Named places an object can be put: name → release TCP position (x, y, z metres, base frame)."""
    return {"bin": (BIN_CENTRE[0], BIN_CENTRE[1], BIN_RELEASE_Z)}


def in_drop_zone(name: str, position: npt.ArrayLike) -> bool:
    """True when an object centre at `position` (metres) lies inside the drop zone `name` (seen from above)."""
    if name != "bin":
        raise ValueError(f"unknown drop zone {name!r}; valid zones: {', '.join(drop_zones())}")
    p = np.asarray(position, dtype=np.float64)
    return bool(abs(p[0] - BIN_CENTRE[0]) <= BIN_HALF[0] and abs(p[1] - BIN_CENTRE[1]) <= BIN_HALF[1])


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


@dataclass(frozen=True)
class _Segment:
    start: F64  # TCP position (metres), or joints (radians) for a joint segment
    end: F64
    grip: float  # gripper opening (metres) commanded during the segment
    seconds: float
    joint_space: bool = False


class PlacePredictor:
    """A `ChunkPredictor` that plays the place motion, one action (a chunk of one) per call, from the measured
    joints `q_start` and gripper opening `grip_start` to the release position `release` (metres)."""

    def __init__(self, q_start: npt.ArrayLike, grip_start: float, release: tuple[float, float, float], dt: float):
        q0 = np.asarray(q_start, dtype=np.float64)
        pose = forward(q0, TCP_OFFSET)
        self._rot = pose[:3, :3].copy()
        self.dt = dt
        self.ik_failures = 0
        p0 = pose[:3, 3].copy()
        rx, ry, rz = release
        up = np.array([p0[0], p0[1], max(p0[2], CARRY_Z)])
        over = np.array([rx, ry, max(CARRY_Z, rz)])
        down = np.array([rx, ry, rz])
        closed = min(max(grip_start, 0.0), GRIPPER_STROKE)
        self._segments = [
            self._cart(p0, up, closed),
            self._cart(up, over, closed),
            self._cart(over, down, closed),
            _Segment(down, down, GRIPPER_STROKE, OPEN_S),
            self._cart(down, over, GRIPPER_STROKE),
        ]
        self._q_home = np.asarray(HOME_Q, dtype=np.float64)
        self._q = q0.copy()
        self._t = 0.0
        self._home: _Segment | None = None
        self.total_s = sum(s.seconds for s in self._segments)

    @staticmethod
    def _cart(a: F64, b: F64, grip: float) -> _Segment:
        dist = float(np.linalg.norm(b - a))
        return _Segment(a, b, grip, max(0.3, _MIN_JERK_PEAK * dist / PLACE_TCP_SPEED))

    @property
    def finished(self) -> bool:
        """True once the whole plan, the return home included, has been played."""
        return self._home is not None and self._t >= self.total_s

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        """(1, 7): the next joint targets (radians) and gripper opening (metres) of the plan."""
        self._t += self.dt
        t = self._t
        for seg in self._segments:
            if t <= seg.seconds:
                return self._cartesian(seg, t)
            t -= seg.seconds
        if self._home is None:  # plan the joint-space return from where the Cartesian part ended
            dq = float(np.max(np.abs(self._q_home - self._q)))
            dist = float(np.linalg.norm(forward(self._q_home, TCP_OFFSET)[:3, 3] - forward(self._q, TCP_OFFSET)[:3, 3]))
            # a joint-space path is longer than the straight line: budget 1.5x its length at the TCP speed
            seconds = max(0.5, _MIN_JERK_PEAK * dq / HOME_JOINT_SPEED, _MIN_JERK_PEAK * 1.5 * dist / PLACE_TCP_SPEED)
            self._home = _Segment(self._q.copy(), self._q_home, GRIPPER_STROKE, seconds, joint_space=True)
            self.total_s += seconds
        seg = self._home
        s = _min_jerk(t / seg.seconds)
        q = seg.start + s * (seg.end - seg.start)
        return np.append(q, seg.grip)[None, :]

    def _cartesian(self, seg: _Segment, t: float) -> F64:
        s = _min_jerk(t / seg.seconds)
        target = np.eye(4)
        target[:3, :3] = self._rot
        target[:3, 3] = seg.start + s * (seg.end - seg.start)
        try:
            self._q = solve_ik(target, self._q, tcp_offset=TCP_OFFSET)
        except IKError:
            self.ik_failures += 1  # hold the last reachable joints for this step
        return np.append(self._q, seg.grip)[None, :]


def release_height_ok(z: float) -> bool:
    """True when `z` metres is a sensible release height for the TCP (above objects, below the carry height)."""
    return math.isfinite(z) and 0.05 <= z <= CARRY_Z
