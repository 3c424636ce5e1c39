"""Where a policy closes the gripper on nothing: the multi-modality measure of `sam2grasp eval`.

A policy that cannot tell which of several objects is meant learns the average of their grasps and closes the
fingers between them: the paper's picture of multi-modality. `EmptyCloseWatch` follows one trial's
observations and records every close on nothing — the measured opening falls below `closed_width` (the
fingers meet: nothing between them, the outcome monitor's own test for an empty grasp) — with where the TCP
stood against the objects on the table, one of `CLOSE_SITES`:

- "between_objects": in the corridor between two objects (its projection on the segment joining their centres
  falls inside it, no farther from it than the wider of the two footprints' half widths across the segment) and
  on neither of them;
- "over_object": above an object's footprint (the close came too high, or the fingers slid off it);
- "beside_object": within `near_m` of an object's footprint, but not between two;
- "elsewhere": anywhere else.

Positions are the base frame's x, y in metres. A footprint is the object's outline seen from above: a circle for
the round shapes (can, ball), otherwise the shape's bounding rectangle turned by the object's yaw (a box's long
side counts only along its length).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robot.sim.catalogue import Shape
from robot.sim.env import PickEnv
from robot.sim.occlusion import OcclusionWrapper

#: Where an empty close can happen, in report order.
CLOSE_SITES: tuple[str, ...] = ("between_objects", "over_object", "beside_object", "elsewhere")

#: Shapes whose outline from above is a circle (radius: the shape's x half size).
ROUND_SHAPES: frozenset[Shape] = frozenset({Shape.CAN, Shape.BALL})


@dataclass(frozen=True)
class Footprint:
    """An object's outline on the table: centre x, y (metres, base frame), half sizes along the object's own x and
    y (metres), its yaw (radians about z), and whether it is round (a circle of radius half_x; half_y and yaw are
    then unused). Build with `circle` or `rectangle`."""

    x: float
    y: float
    half_x: float
    half_y: float
    yaw: float = 0.0
    round: bool = False

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.half_x, self.half_y, self.yaw)
        if not all(math.isfinite(v) for v in values) or self.half_x <= 0 or self.half_y <= 0:
            raise ValueError(
                f"a footprint needs a finite centre and yaw and half sizes > 0 metres, got x={self.x}, y={self.y}, "
                f"half_x={self.half_x}, half_y={self.half_y}, yaw={self.yaw}"
            )

    @classmethod
    def circle(cls, x: float, y: float, radius: float) -> Footprint:
        """A round outline of `radius` metres about (x, y)."""
        return cls(x, y, radius, radius, 0.0, True)

    @classmethod
    def rectangle(cls, x: float, y: float, half_x: float, half_y: float, yaw: float) -> Footprint:
        """A rectangle of half sizes `half_x`, `half_y` metres about (x, y), turned by `yaw` radians."""
        return cls(x, y, half_x, half_y, yaw, False)

    def _local(self, p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        d = p - np.array([self.x, self.y])
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def gap(self, p: npt.NDArray[np.float64]) -> float:
        """Signed distance (metres) from point `p` (x, y) to the outline: negative inside, 0 on it."""
        if self.round:
            return float(np.hypot(p[0] - self.x, p[1] - self.y)) - self.half_x
        q = np.abs(self._local(p)) - np.array([self.half_x, self.half_y])
        outside = float(np.linalg.norm(np.maximum(q, 0.0)))
        return outside + min(float(q.max()), 0.0)

    def half_width_across(self, direction: npt.NDArray[np.float64]) -> float:
        """Half the outline's width (metres) measured across the unit vector `direction` (x, y)."""
        if self.round:
            return self.half_x
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        nx, ny = -float(direction[1]), float(direction[0])  # the normal of the direction
        along_x, along_y = c * nx + s * ny, -s * nx + c * ny
        return self.half_x * abs(along_x) + self.half_y * abs(along_y)


def classify_site(tcp_xy: npt.ArrayLike, objects: Sequence[Footprint], near_m: float = 0.05) -> str:
    """The `CLOSE_SITES` entry for a close with the TCP at `tcp_xy` (metres) among `objects`."""
    if not near_m > 0:
        raise ValueError(f"near_m must be > 0 metres, got {near_m}")
    p = np.asarray(tcp_xy, dtype=np.float64)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise ValueError(f"tcp_xy must be 2 finite metres (x, y), got {tcp_xy!r}")
    centres = [np.array([o.x, o.y]) for o in objects]
    gaps = [o.gap(p) for o in objects]
    if any(g <= 0.0 for g in gaps):
        return "over_object"
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = centres[i], centres[j]
            ab = b - a
            length = float(np.linalg.norm(ab))
            if length == 0.0:
                continue
            unit = ab / length
            t = float((p - a) @ unit) / length
            off = float(np.linalg.norm(p - (a + t * ab)))
            half = max(objects[i].half_width_across(unit), objects[j].half_width_across(unit))
            if 0.0 < t < 1.0 and off <= half:
                return "between_objects"
    if gaps and min(gaps) <= near_m:
        return "beside_object"
    return "elsewhere"


class EmptyCloseWatch:
    """Records the empty closes of one trial: call `update` with every observation (measured opening, metres;
    TCP x, y, metres) and a function giving the objects on the table (called only when the fingers meet);
    `sites` lists where each close happened."""

    def __init__(self, closed_width: float = 0.004, near_m: float = 0.05) -> None:
        if not 0.0 < closed_width < math.inf:
            raise ValueError(f"closed_width must be a finite opening > 0 metres, got {closed_width}")
        self.closed_width, self.near_m = closed_width, near_m
        self.sites: list[str] = []
        self._closed = False

    def update(
        self, gripper_width: float, tcp_xy: npt.ArrayLike, objects: Callable[[], Sequence[Footprint]]
    ) -> str | None:
        """Feed one observation; the site when the fingers just met on nothing, else None."""
        closed = gripper_width < self.closed_width
        met = closed and not self._closed
        self._closed = closed
        if not met:
            return None
        site = classify_site(tcp_xy, objects(), self.near_m)
        self.sites.append(site)
        return site


def table_footprints(env: PickEnv | OcclusionWrapper) -> list[Footprint]:
    """The footprints of every object of a simulated cell's scene, where they stand now."""
    cell = env.env if isinstance(env, OcclusionWrapper) else env
    if cell.scene is None:
        raise ValueError("the cell has no scene: reset it first")
    out = []
    for obj in cell.scene.objects:
        x, y = (float(v) for v in cell.object_position(obj.instance)[:2])
        hx, hy = (float(v) for v in obj.kind.spec.half_extents[:2])
        if obj.kind.shape in ROUND_SHAPES:
            out.append(Footprint.circle(x, y, hx))
        else:
            out.append(Footprint.rectangle(x, y, hx, hy, cell.object_yaw(obj.instance)))
    return out


def site_counts(sites: Sequence[Sequence[str]]) -> dict[str, int]:
    """Empty closes per site over trials (each trial's list of sites), every site present."""
    counts = dict.fromkeys(CLOSE_SITES, 0)
    for trial in sites:
        for site in trial:
            counts[site] += 1
    return counts
