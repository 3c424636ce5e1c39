"""Episode outcomes of a pick and the monitor that decides them from the simulation state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """How a pick episode ended."""

    SUCCESS = "success"  # the target lifted >= success_lift and held for hold_s
    WRONG_OBJECT = "wrong_object"  # another object was lifted
    DROPPED = "dropped"  # the target was lifted, then fell back or left the fingers
    EMPTY_GRASP = "empty_grasp"  # time ran out with the gripper closed on nothing
    TIMEOUT = "timeout"  # time ran out otherwise
    COLLISION = "collision"  # the arm or palm hit the table or the bin


@dataclass(frozen=True)
class OutcomeRules:
    """Thresholds of the outcome monitor.

    success_lift: metres the target's centre must rise; hold_s: seconds it must stay up;
    wrong_lift: metres another object must rise to count as lifted; drop_lift: metres of rise after which
    falling back below `drop_floor` metres counts as a drop; max_episode_s: seconds before timeout;
    closed_width: metres of gripper opening below which the gripper holds nothing;
    max_pad_press: newtons a finger pad may press on the table or bin before it counts as a collision.
    """

    success_lift: float = 0.10
    hold_s: float = 1.0
    wrong_lift: float = 0.05
    drop_lift: float = 0.04
    drop_floor: float = 0.015
    max_episode_s: float = 20.0
    closed_width: float = 0.004
    max_pad_press: float = 20.0

    def __post_init__(self) -> None:
        names = ("success_lift", "hold_s", "wrong_lift", "drop_lift", "max_episode_s", "closed_width", "max_pad_press")
        for name in names:
            if getattr(self, name) <= 0:
                raise ValueError(f"OutcomeRules.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.drop_floor < self.drop_lift:
            raise ValueError(f"drop_floor must be within [0, drop_lift), got {self.drop_floor}")


@dataclass(frozen=True)
class CellState:
    """What the monitor reads each control step.

    time: seconds since reset; target_rise: metres the target's centre is above its start height;
    other_rises: metres for every other object; target_in_fingers: a finger pad touches the target;
    gripper_width: metres; arm_hit_world: an arm or palm geom touches the table or bin, or a finger pad presses
    on them harder than the rules allow.
    """

    time: float
    target_rise: float
    other_rises: tuple[float, ...]
    target_in_fingers: bool
    gripper_width: float
    arm_hit_world: bool


class OutcomeMonitor:
    """Decides the outcome of one episode from a stream of `CellState`s; `None` while it is undecided."""

    def __init__(self, rules: OutcomeRules) -> None:
        self.rules = rules
        self._held_since: float | None = None
        self._max_rise = 0.0
        self.outcome: Outcome | None = None

    def update(self, s: CellState) -> Outcome | None:
        """Feed one state; returns the outcome once decided (and keeps returning it)."""
        if self.outcome is not None:
            return self.outcome
        r = self.rules
        self._max_rise = max(self._max_rise, s.target_rise)
        if s.arm_hit_world:
            self.outcome = Outcome.COLLISION
        elif any(rise >= r.wrong_lift for rise in s.other_rises):
            self.outcome = Outcome.WRONG_OBJECT
        elif self._max_rise >= r.drop_lift and (
            s.target_rise < r.drop_floor or (not s.target_in_fingers and s.target_rise < r.success_lift / 2)
        ):
            self.outcome = Outcome.DROPPED
        elif s.target_rise >= r.success_lift and s.target_in_fingers:
            if self._held_since is None:
                self._held_since = s.time
            if s.time - self._held_since >= r.hold_s - 1e-9:
                self.outcome = Outcome.SUCCESS
        else:
            self._held_since = None
        if self.outcome is None and s.time >= r.max_episode_s - 1e-9:
            empty = s.gripper_width < r.closed_width and not s.target_in_fingers
            self.outcome = Outcome.EMPTY_GRASP if empty else Outcome.TIMEOUT
        return self.outcome
