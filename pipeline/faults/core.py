"""What every fault scenario reports, and the recording arm that checks every command it receives.

`RecordingRobot` wraps any `Robot` (and optionally `Gripper`): it forwards every call, stamps each command and
each stop with the scenario's clock (seconds, simulated or wall), and checks each joint command against
`SafetyLimits` on its own — independently of the safety layer that produced it — so a scenario can assert that
no command outside the limits ever reached the arm. Units: seconds, radians, metres.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from robot.protocols import Gripper, ReportsIOFailure, Robot, RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.mjcf import TCP_OFFSET

F64 = npt.NDArray[np.float64]
#: Slack on the per-tick caps when re-checking commands, for rounding in the safety layer's bisection.
_EPS = 1e-9


@dataclass(frozen=True)
class ScenarioResult:
    """One fault scenario's outcome (a row of bench/faults.py).

    end_state: "running" (the fault did not end the run), "resumed" (it held or re-grounded, then went on),
    "stopped" (the run ended and the arm was stopped), "recovered" (stopped, then the next run started cleanly),
    "error" (a clear error, nothing corrupted); reason: the end reason or error; safe_stop_ms: milliseconds from
    the fault to the arm being safe (stop called or holding still; NaN where nothing had to stop); detect_ms:
    milliseconds from the fault to the moment the runtime acted on it (a hold began or the run's end was decided:
    the detection window, mostly a configured limit such as the camera's timeout; NaN where not observable);
    `react_ms` is what is left of safe_stop_ms after detect_ms (0 where the arm was already safe);
    data_intact: files on disk still valid (True where no files are involved); limit_violations: commands outside
    the safety limits; stop_called: robot.stop() ran at the end; moved_after_stop: commands sent after that.
    """

    scenario: str
    expected_end_state: str
    end_state: str
    reason: str
    safe_stop_ms: float = float("nan")
    detect_ms: float = float("nan")
    data_intact: bool = True
    limit_violations: int = 0
    stop_called: bool = True
    moved_after_stop: int = 0
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """The defined end state was reached safely."""
        return (
            self.end_state == self.expected_end_state
            and self.data_intact
            and self.limit_violations == 0
            and self.stop_called
            and self.moved_after_stop == 0
        )

    @property
    def react_ms(self) -> float:
        """Milliseconds from the runtime acting on the fault to the arm being safe (0 where the arm was safe
        before the runtime acted, e.g. holding once the queued motion ran out); NaN where either time is."""
        left = self.safe_stop_ms - self.detect_ms
        return left if math.isnan(left) else max(left, 0.0)

    def row(self) -> dict[str, Any]:
        """The JSON row of bench/faults.py."""
        out = asdict(self)
        for name in ("safe_stop_ms", "detect_ms", "react_ms"):
            value = getattr(self, name)
            out[name] = None if math.isnan(value) else round(value, 1)
        out["passed"] = self.passed
        return out


class LimitChecker:
    """Re-checks a stream of joint commands against `limits` at a control period of `period_s` seconds, the TCP
    `tcp_offset` metres beyond the flange (the offset of the safety layer that produced the commands)."""

    def __init__(
        self, limits: SafetyLimits | None = None, period_s: float = 0.01, tcp_offset: float = TCP_OFFSET
    ) -> None:
        self.layer = SafetyLayer(limits or SafetyLimits(), tcp_offset=tcp_offset, period_s=period_s)
        self.violations: list[str] = []
        self._last: F64 | None = None

    def seed(self, q: npt.ArrayLike) -> None:
        """The measured joints (radians) the first command is a step from."""
        self._last = np.asarray(q, dtype=np.float64).copy()

    def check(self, q: npt.ArrayLike) -> None:
        """Record every limit command `q` (radians) breaks."""
        arr = np.asarray(q, dtype=np.float64)
        lim, layer = self.layer.limits, self.layer
        lo, hi = lim.joint_bounds
        bad: list[str] = []
        if arr.shape != (6,) or not np.all(np.isfinite(arr)):
            self.violations.append(f"non-finite or misshapen command {arr.tolist()}")
            return
        if np.any(arr < lo - _EPS) or np.any(arr > hi + _EPS):
            bad.append("joint limit")
        last = self._last
        if last is not None:
            if float(np.max(np.abs(arr - last))) > layer.max_step + _EPS:
                bad.append(f"joint step {float(np.max(np.abs(arr - last))):.5f} rad")
            p0, p1 = layer.tcp_position(last), layer.tcp_position(arr)
            if float(np.linalg.norm(p1 - p0)) > layer.max_tcp_step + 1e-6:
                bad.append(f"tcp step {float(np.linalg.norm(p1 - p0)):.5f} m")
            box_lo, box_hi = np.asarray(lim.workspace_min), np.asarray(lim.workspace_max)
            if np.any(p1 < box_lo - 1e-6) or np.any(p1 > box_hi + 1e-6):
                bad.append(f"workspace {np.round(p1, 4).tolist()}")
        self.violations.extend(bad)
        self._last = arr.copy()


class RecordingRobot:
    """A `Robot` + `Gripper` that forwards to `robot` / `gripper` and records, stamped by `clock` (seconds):
    every joint command, every gripper move, every stop; each joint command is re-checked by a `LimitChecker`."""

    def __init__(
        self,
        robot: Robot,
        clock: Callable[[], float],
        gripper: Gripper | None = None,
        limits: SafetyLimits | None = None,
        period_s: float = 0.01,
        tcp_offset: float = TCP_OFFSET,
    ) -> None:
        self.robot, self.gripper, self.clock = robot, gripper, clock
        self.checker = LimitChecker(limits, period_s, tcp_offset)
        self.commands: list[tuple[float, F64]] = []
        self.moves: list[tuple[float, float]] = []
        self.stops: list[float] = []
        self.status_override: RobotStatus | None = None

    # Robot
    def joint_positions(self) -> F64:
        q = np.asarray(self.robot.joint_positions(), dtype=np.float64)
        if not self.commands:
            self.checker.seed(q)
        return q

    def servo_joints(self, q: F64) -> None:
        self.checker.check(q)
        self.commands.append((self.clock(), np.array(q, dtype=np.float64)))
        self.robot.servo_joints(q)

    def stop(self) -> None:
        self.stops.append(self.clock())
        self.robot.stop()
        gripper: object = self.gripper
        if self.gripper is not None and gripper is not self.robot:
            self.gripper.stop()

    def status(self) -> RobotStatus:
        return self.status_override or self.robot.status()

    # Gripper
    def io_failure(self) -> BaseException | None:
        return self.gripper.io_failure() if isinstance(self.gripper, ReportsIOFailure) else None

    def width(self) -> float:
        if self.gripper is None:
            raise RuntimeError("this RecordingRobot wraps no gripper")
        return float(self.gripper.width())

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        if self.gripper is None:
            raise RuntimeError("this RecordingRobot wraps no gripper")
        self.moves.append((self.clock(), width_m))
        self.gripper.move(width_m, speed_m_s, force_n)

    # summaries
    @property
    def violations(self) -> int:
        """Commands that broke a limit."""
        return len(self.checker.violations)

    def moved_after_stop(self) -> int:
        """Joint commands stamped after the first stop that differ from the command before it."""
        if not self.stops:
            return 0
        first = self.stops[0]
        before = [q for t, q in self.commands if t < first]
        ref = before[-1] if before else None
        return sum(1 for t, q in self.commands if t > first and (ref is None or not np.array_equal(q, ref)))

    def first_still_after(self, t0: float) -> float | None:
        """Time (seconds) of the first command at or after `t0` that repeats the one before it (the arm holds
        still), or of the first stop after `t0`, whichever comes first; None if neither."""
        still = None
        for (_, prev), (t, q) in zip(self.commands, self.commands[1:], strict=False):
            if t >= t0 and np.array_equal(prev, q):
                still = t
                break
        stop = next((t for t in self.stops if t >= t0), None)
        times = [t for t in (still, stop) if t is not None]
        return min(times) if times else None
