"""Conversions between SI units and the Robotiq 2F-85's 8-bit registers.

POS (0..255) is the finger position: 0 is fully open (85 mm between the pads) and larger values close the
fingers; a real gripper stops closing a little before 255 (about 230 on an empty grip), so the mapping between
metres and POS is calibrated by measuring both ends (`PositionMap`, `robot.robotiq.RobotiqGripper.calibrate_stroke`).
SPE (0..255) spans the finger speed range and FOR (0..255) the grip force range, both linearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Full opening of the 2F-85, metres.
STROKE_M = 0.085
#: Finger speed range of the 2F-85, metres per second (SPE 0 .. SPE 255).
SPEED_RANGE_M_S: tuple[float, float] = (0.020, 0.150)
#: Grip force range of the 2F-85, newtons (FOR 0 .. FOR 255).
FORCE_RANGE_N: tuple[float, float] = (20.0, 235.0)
#: Largest register value.
REGISTER_MAX = 255
#: Slack (in SI units) accepted beyond a range end for floating-point round-off.
_EPS = 1e-9


def _check_finite(name: str, value: float, unit: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number of {unit}, got {value}")
    return v


@dataclass(frozen=True)
class PositionMap:
    """Linear map between finger opening (metres) and POS.

    pos_open: POS read with the fingers fully open; pos_closed: POS read with the fingers fully closed on nothing;
    stroke_m: metres between the pads when fully open. The default is the nominal map (0 .. 255 over 85 mm);
    a measured one comes from `RobotiqGripper.calibrate_stroke`.
    """

    pos_open: int = 0
    pos_closed: int = REGISTER_MAX
    stroke_m: float = STROKE_M

    def __post_init__(self) -> None:
        if not 0 <= self.pos_open < self.pos_closed <= REGISTER_MAX:
            raise ValueError(
                f"POS ends must satisfy 0 <= pos_open < pos_closed <= 255, got open {self.pos_open}, "
                f"closed {self.pos_closed}"
            )
        if self.pos_closed - self.pos_open < 100:
            raise ValueError(
                f"POS ends {self.pos_open}..{self.pos_closed} span under 100 counts: the fingers did not travel "
                "the full stroke during calibration (is something between them?)"
            )
        if not 0.01 <= self.stroke_m <= 0.2:
            raise ValueError(f"stroke_m must be within [0.01, 0.2] m, got {self.stroke_m}")

    @property
    def metres_per_count(self) -> float:
        """Opening change per POS count, metres."""
        return self.stroke_m / (self.pos_closed - self.pos_open)

    def width_to_pos(self, width_m: float) -> int:
        """POS that opens the fingers `width_m` metres; refuses openings outside [0, stroke_m]."""
        w = _check_finite("gripper width", width_m, "metres")
        if not -_EPS <= w <= self.stroke_m + _EPS:
            raise ValueError(f"gripper width must be within [0, {self.stroke_m}] m, got {width_m} m")
        frac = min(max(w / self.stroke_m, 0.0), 1.0)
        return round(self.pos_closed - frac * (self.pos_closed - self.pos_open))

    def pos_to_width(self, pos: int) -> float:
        """Opening in metres of a POS reading (readings beyond the calibrated ends clip to 0 or the stroke)."""
        if not 0 <= pos <= REGISTER_MAX:
            raise ValueError(f"POS must be within 0..255, got {pos}")
        frac = (self.pos_closed - pos) / (self.pos_closed - self.pos_open)
        return min(max(frac, 0.0), 1.0) * self.stroke_m


def _to_register(name: str, value: float, lo: float, hi: float, unit: str) -> int:
    v = _check_finite(name, value, unit)
    if not lo - _EPS <= v <= hi + _EPS:
        raise ValueError(f"{name} must be within [{lo:g}, {hi:g}] {unit} (the 2F-85's range), got {value:g} {unit}")
    frac = min(max((v - lo) / (hi - lo), 0.0), 1.0)
    return round(frac * REGISTER_MAX)


def _from_register(name: str, reg: int, lo: float, hi: float) -> float:
    if not 0 <= reg <= REGISTER_MAX:
        raise ValueError(f"{name} register must be within 0..255, got {reg}")
    return lo + (hi - lo) * reg / REGISTER_MAX


def speed_to_spe(speed_m_s: float) -> int:
    """SPE register for a finger speed in metres per second; refuses speeds outside `SPEED_RANGE_M_S`."""
    return _to_register("gripper speed", speed_m_s, *SPEED_RANGE_M_S, "m/s")


def spe_to_speed(spe: int) -> float:
    """Finger speed (metres per second) of an SPE register value."""
    return _from_register("SPE", spe, *SPEED_RANGE_M_S)


def force_to_for(force_n: float) -> int:
    """FOR register for a grip force in newtons; refuses forces outside `FORCE_RANGE_N`."""
    return _to_register("gripper force", force_n, *FORCE_RANGE_N, "N")


def for_to_force(reg: int) -> float:
    """Grip force (newtons) of a FOR register value."""
    return _from_register("FOR", reg, *FORCE_RANGE_N)
