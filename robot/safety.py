"""The safety layer between any policy output and the arm, shared by the simulated and the real UR5e.

Every command passes `SafetyLayer.check` before it is streamed. Limits (all on by default): joint position
limits with a margin, a per-tick joint step cap (joint speed x control period), a TCP speed cap, a workspace box
for the TCP, gripper opening range and force cap, NaN/inf rejection, and a command timeout (heartbeat). In
"clamp" mode a command outside the limits is pulled back onto them; in "refuse" mode it raises
`SafetyViolation`; `SafetyLimits.limit_modes` sets the policy limit by limit. Non-finite commands are always
refused. Every violation is logged (`logging`, the first of each kind at WARNING, repeats at DEBUG) and counted.

Units: radians, radians per second, metres, metres per second, newtons, seconds.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from robot.kinematics import UR5E_JOINT_LIMITS, UR5E_MAX_JOINT_SPEED, forward

F64 = npt.NDArray[np.float64]
ViolationMode = Literal["clamp", "refuse"]

log = logging.getLogger(__name__)

JOINT_NAMES: tuple[str, ...] = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
#: Largest gripper opening the 2F-85 reaches, metres.
MAX_GRIPPER_WIDTH = 0.085
_BISECT_STEPS = 12  # halvings when searching the largest admissible fraction of a joint step
#: Limits whose policy ("clamp" or "refuse") can be set one by one; NaN/inf ("non_finite") is always refused.
LIMIT_NAMES: tuple[str, ...] = ("joint_limit", "joint_step", "tcp_speed", "workspace", "gripper_width", "gripper_force")


class SafetyViolation(RuntimeError):  # noqa: N818 (the name the runtime and drivers use)
    """A command broke a limit and was refused (always for NaN/inf; for any limit in "refuse" mode)."""

    def __init__(self, violations: tuple[str, ...]) -> None:
        super().__init__("command refused by the safety layer: " + "; ".join(violations))
        self.violations = violations


@dataclass(frozen=True)
class SafetyLimits:
    """Limits of the safety layer; validated on construction, every one enabled by default.

    joint_margin: radians kept inside the UR5e joint limits (±2π, elbow ±π);
    max_joint_speed: radians per second on every joint (the per-tick step cap is this x the control period);
    max_tcp_speed: metres per second of the TCP between the last sent and the new target;
    workspace_min, workspace_max: corners (x, y, z metres, robot base frame) of the box the TCP must stay in;
    the table top is z = 0;
    max_gripper_force: newtons; gripper_width_range: (min, max) metres of gripper opening;
    command_timeout: seconds without a fresh command after which the arm must halt;
    violation_mode: "clamp" pulls a command back onto the limits, "refuse" raises `SafetyViolation`;
    limit_modes: per-limit overrides of violation_mode, pairs (limit name in `LIMIT_NAMES`, "clamp" | "refuse")
    (a dict is accepted and stored as sorted pairs).
    """

    joint_margin: float = 0.05
    max_joint_speed: float = math.pi
    max_tcp_speed: float = 0.25
    workspace_min: tuple[float, float, float] = (0.15, -0.55, 0.005)
    workspace_max: tuple[float, float, float] = (0.85, 0.55, 0.70)
    max_gripper_force: float = 60.0
    gripper_width_range: tuple[float, float] = (0.0, MAX_GRIPPER_WIDTH)
    command_timeout: float = 0.1
    violation_mode: ViolationMode = "clamp"
    limit_modes: tuple[tuple[str, ViolationMode], ...] | Mapping[str, ViolationMode] = ()

    def __post_init__(self) -> None:
        pairs = self.limit_modes.items() if isinstance(self.limit_modes, Mapping) else self.limit_modes
        modes = tuple(sorted((str(k), v) for k, v in pairs))
        for name, mode in modes:
            if name not in LIMIT_NAMES:
                raise ValueError(f"limit_modes: unknown limit {name!r}; valid limits: {', '.join(LIMIT_NAMES)}")
            if mode not in ("clamp", "refuse"):
                raise ValueError(f"limit_modes[{name!r}] must be 'clamp' or 'refuse', got {mode!r}")
        object.__setattr__(self, "limit_modes", modes)
        if not 0.0 <= self.joint_margin < 0.5:
            raise ValueError(f"joint_margin must be within [0, 0.5) rad, got {self.joint_margin}")
        if not 0.0 < self.max_joint_speed <= UR5E_MAX_JOINT_SPEED:
            raise ValueError(
                f"max_joint_speed must be within (0, {UR5E_MAX_JOINT_SPEED:.4f}] rad/s (the UR5e's 180°/s), "
                f"got {self.max_joint_speed}"
            )
        if not 0.0 < self.max_tcp_speed <= 1.0:
            raise ValueError(f"max_tcp_speed must be within (0, 1] m/s, got {self.max_tcp_speed}")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
            raise ValueError(f"workspace corners must be 3 finite numbers (x, y, z m), got {lo}, {hi}")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")
        if not 0.0 < self.max_gripper_force <= 235.0:
            raise ValueError(
                f"max_gripper_force must be within (0, 235] N (the 2F-85's range), got {self.max_gripper_force}"
            )
        g_lo, g_hi = self.gripper_width_range
        if not 0.0 <= g_lo < g_hi <= MAX_GRIPPER_WIDTH:
            raise ValueError(
                f"gripper_width_range must satisfy 0 <= min < max <= {MAX_GRIPPER_WIDTH} m, got "
                f"{self.gripper_width_range}"
            )
        if not 0.0 < self.command_timeout <= 5.0:
            raise ValueError(f"command_timeout must be within (0, 5] s, got {self.command_timeout}")
        if self.violation_mode not in ("clamp", "refuse"):
            raise ValueError(f"violation_mode must be 'clamp' or 'refuse', got {self.violation_mode!r}")

    def mode_for(self, limit: str) -> ViolationMode:
        """The policy of limit `limit`: its override in `limit_modes`, else `violation_mode`."""
        modes = self.limit_modes
        return (modes if isinstance(modes, Mapping) else dict(modes)).get(limit, self.violation_mode)

    @property
    def joint_bounds(self) -> tuple[F64, F64]:
        """(lower, upper) joint positions allowed, radians: the UR5e limits shrunk by the margin."""
        return UR5E_JOINT_LIMITS[:, 0] + self.joint_margin, UR5E_JOINT_LIMITS[:, 1] - self.joint_margin


@dataclass(frozen=True)
class SafeCommand:
    """A command that passed the safety layer.

    q: (6,) joint targets to send, radians; gripper_width: opening to send, metres; gripper_force: newtons;
    clamped: some limit changed the request; violations: one message per broken limit naming the limit, the
    value and the bound (empty when the request was within every limit).
    """

    q: F64
    gripper_width: float
    gripper_force: float
    clamped: bool
    violations: tuple[str, ...] = field(default=())


class SafetyLayer:
    """Checks each command against `SafetyLimits` relative to the last command it let through.

    `reset(q_now)` seeds the last-sent state with the measured joints before streaming starts; `check` then takes
    one request per control tick of `period_s` seconds. Not thread-safe: one control loop owns it.
    """

    def __init__(self, limits: SafetyLimits | None = None, tcp_offset: float = 0.0, period_s: float = 0.01) -> None:
        if not 0.0 < period_s <= 1.0:
            raise ValueError(f"period_s must be within (0, 1] s, got {period_s}")
        if not 0.0 <= tcp_offset <= 0.5:
            raise ValueError(f"tcp_offset must be within [0, 0.5] m, got {tcp_offset}")
        self.limits = limits or SafetyLimits()
        self.tcp_offset = tcp_offset
        self.period_s = period_s
        self.violation_counts: Counter[str] = Counter()
        self._q_last: F64 | None = None
        self._tcp_last: F64 | None = None
        self._last_time: float | None = None
        self._lo, self._hi = self.limits.joint_bounds
        self._box_lo = np.asarray(self.limits.workspace_min, dtype=np.float64)
        self._box_hi = np.asarray(self.limits.workspace_max, dtype=np.float64)

    @property
    def max_step(self) -> float:
        """Largest joint change per tick, radians (max joint speed x period)."""
        return self.limits.max_joint_speed * self.period_s

    @property
    def max_tcp_step(self) -> float:
        """Largest TCP displacement per tick, metres (max TCP speed x period)."""
        return self.limits.max_tcp_speed * self.period_s

    @property
    def last_q(self) -> F64 | None:
        """The last joint target let through (or seeded by `reset`), radians; None before `reset`."""
        return None if self._q_last is None else self._q_last.copy()

    @property
    def violation_total(self) -> int:
        """Number of limit violations seen since construction."""
        return sum(self.violation_counts.values())

    def tcp_position(self, q: F64) -> F64:
        """TCP position (x, y, z metres, base frame) of joint angles `q`."""
        return np.asarray(forward(q, self.tcp_offset)[:3, 3], dtype=np.float64)

    def reset(self, q_now: npt.ArrayLike, now_s: float | None = None) -> None:
        """Seed the last-sent state with the measured joints `q_now` (radians) and, when given, start the command
        timeout at `now_s` seconds."""
        q = np.asarray(q_now, dtype=np.float64)
        if q.shape != (6,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_now must be 6 finite joint angles (radians), got {q.tolist()}")
        self._q_last = q.copy()
        self._tcp_last = self.tcp_position(q)
        self._last_time = now_s
        if not self._inside(self._tcp_last):
            log.warning(
                "TCP %s m starts outside the workspace box %s..%s m: only motion back in is allowed",
                np.round(self._tcp_last, 4).tolist(),
                self._box_lo.tolist(),
                self._box_hi.tolist(),
            )

    def heartbeat_expired(self, now_s: float) -> bool:
        """True when more than `command_timeout` seconds have passed since the last command let through (or since
        `reset` when it was given a time); False while no time reference exists."""
        return self._last_time is not None and now_s - self._last_time > self.limits.command_timeout

    def check(
        self, q_target: npt.ArrayLike, gripper_width: float, now_s: float, gripper_force: float | None = None
    ) -> SafeCommand:
        """The command to send for a request of joint targets `q_target` (6, radians), a gripper opening
        `gripper_width` (metres) and grip force `gripper_force` (newtons; None = the cap) at time `now_s`
        (seconds). Raises `SafetyViolation` for NaN/inf, and for any violation in "refuse" mode."""
        q_last, tcp_last = self._q_last, self._tcp_last
        if q_last is None or tcp_last is None:
            raise RuntimeError("SafetyLayer.check before reset(q_now): seed it with the measured joint angles first")
        q_req = np.asarray(q_target, dtype=np.float64)
        if q_req.shape != (6,):
            raise ValueError(f"q_target must have shape (6,) (joint angles in radians), got {q_req.shape}")
        force_req = self.limits.max_gripper_force if gripper_force is None else float(gripper_force)
        bad = [f"q_target[{i}] ({JOINT_NAMES[i]}) = {v}" for i, v in enumerate(q_req) if not math.isfinite(v)]
        bad += [
            f"{n} = {v}"
            for n, v in (("gripper_width", gripper_width), ("gripper_force", force_req))
            if not math.isfinite(float(v))
        ]
        if not math.isfinite(now_s):
            bad.append(f"now_s = {now_s}")
        if bad:
            refused = tuple(f"non_finite: {b} is not a finite number" for b in bad)
            self._record(refused)
            raise SafetyViolation(refused)

        violations: list[str] = []
        q = self._joint_limits(q_req, violations)
        q = self._step_cap(q_last, q, violations)
        q = self._tcp_speed(q_last, tcp_last, q, violations)
        q, tcp = self._workspace(q_last, tcp_last, q, violations)
        if float(np.linalg.norm(tcp - tcp_last)) > self.max_tcp_step:
            q, tcp = q_last.copy(), tcp_last.copy()  # the workspace cut bent the step past the TCP cap: stay put
        width, force = self._gripper(float(gripper_width), force_req, violations)

        result = tuple(violations)
        if result:
            self._record(result)
            refused = tuple(v for v in result if self.limits.mode_for(v.split(":", 1)[0]) == "refuse")
            if refused:
                raise SafetyViolation(result)
        clamped = bool(result) or not np.array_equal(q, q_req)
        self._q_last, self._tcp_last, self._last_time = q.copy(), tcp, now_s
        return SafeCommand(q, width, force, clamped, result)

    # ------------------------------------------------------------------ limits
    def _joint_limits(self, q: F64, violations: list[str]) -> F64:
        for i in np.flatnonzero((q < self._lo) | (q > self._hi)):
            violations.append(
                f"joint_limit: {JOINT_NAMES[i]} target {q[i]:.4f} rad outside [{self._lo[i]:.4f}, {self._hi[i]:.4f}]"
                f" rad (UR5e limit minus a {self.limits.joint_margin} rad margin)"
            )
        return np.clip(q, self._lo, self._hi)

    def _step_cap(self, q_last: F64, q: F64, violations: list[str]) -> F64:
        delta = q - q_last
        step = float(np.max(np.abs(delta)))
        cap = self.max_step
        if step <= cap:
            return q
        i = int(np.argmax(np.abs(delta)))
        violations.append(
            f"joint_step: {JOINT_NAMES[i]} step {step:.4f} rad in {self.period_s} s exceeds {cap:.4f} rad "
            f"({self.limits.max_joint_speed:.4f} rad/s)"
        )
        return q_last + delta * (cap / step) * (1.0 - 1e-9)

    def _tcp_speed(self, q_last: F64, tcp_last: F64, q: F64, violations: list[str]) -> F64:
        cap = self.max_tcp_step
        dist = float(np.linalg.norm(self.tcp_position(q) - tcp_last))
        if dist <= cap:
            return q
        violations.append(f"tcp_speed: TCP moves {dist / self.period_s:.4f} m/s, above {self.limits.max_tcp_speed} m/s")
        delta = q - q_last
        return q_last + delta * self._largest_fraction(
            q_last, delta, lambda p: float(np.linalg.norm(p - tcp_last)) <= cap, start=cap / dist
        )

    def _workspace(self, q_last: F64, tcp_last: F64, q: F64, violations: list[str]) -> tuple[F64, F64]:
        tcp = self.tcp_position(q)
        if self._inside(tcp):
            return q, tcp
        last_out = self._outside_by(tcp_last)
        if last_out > 0.0 and self._outside_by(tcp) <= last_out:
            return q, tcp  # started outside: moving back towards the box is allowed
        violations.append(
            f"workspace: TCP target {np.round(tcp, 4).tolist()} m outside the box {self._box_lo.tolist()}.."
            f"{self._box_hi.tolist()} m"
        )
        if last_out > 0.0:
            return q_last.copy(), tcp_last.copy()
        delta = q - q_last
        q_ok = q_last + delta * self._largest_fraction(q_last, delta, self._inside, start=1.0)
        return q_ok, self.tcp_position(q_ok)

    def _gripper(self, width: float, force: float, violations: list[str]) -> tuple[float, float]:
        g_lo, g_hi = self.limits.gripper_width_range
        if not g_lo <= width <= g_hi:
            violations.append(f"gripper_width: {width:.4f} m outside [{g_lo}, {g_hi}] m")
            width = min(max(width, g_lo), g_hi)
        cap = self.limits.max_gripper_force
        if force > cap or force < 0.0:
            violations.append(f"gripper_force: {force:.1f} N outside [0, {cap}] N")
            force = min(max(force, 0.0), cap)
        return width, force

    # ------------------------------------------------------------------ helpers
    def _inside(self, p: F64) -> bool:
        return bool(np.all(p >= self._box_lo) and np.all(p <= self._box_hi))

    def _outside_by(self, p: F64) -> float:
        """Distance (metres) from `p` to the workspace box; 0 inside."""
        return float(np.linalg.norm(np.maximum(self._box_lo - p, 0.0) + np.maximum(p - self._box_hi, 0.0)))

    def _largest_fraction(self, q_last: F64, delta: F64, ok: Callable[[F64], bool], start: float) -> float:
        """Largest s in [0, 1] (by bisection, conservative) with ok(TCP of q_last + s·delta); 0 if none found."""
        s = min(max(start, 0.0), 1.0)
        if s > 0.0 and ok(self.tcp_position(q_last + s * delta)):
            lo, hi = s, 1.0
        else:
            lo, hi = 0.0, s
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            if ok(self.tcp_position(q_last + mid * delta)):
                lo = mid
            else:
                hi = mid
        return lo

    def _record(self, violations: tuple[str, ...]) -> None:
        for v in violations:
            name = v.split(":", 1)[0]
            first = self.violation_counts[name] == 0
            self.violation_counts[name] += 1
            # the first of each kind at WARNING, repeats (a clamped stream, 100 per second) at DEBUG
            log.log(logging.WARNING if first else logging.DEBUG, "safety %s: %s", self.limits.mode_for(name), v)
