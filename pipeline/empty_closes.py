"""Where a policy closes the gripper on nothing: the multi-modality measure of `sam2grasp eval`.

A policy that cannot tell which of several objects is meant learns the average of their grasps and closes the
fingers between them: the paper's picture of multi-modality. `EmptyCloseWatch` follows one trial's
observations and records every close on nothing — the measured opening falls below `closed_width` (the
fingers meet: nothing between them, the outcome monitor's own test for an empty grasp) — with where the TCP
stood against the objects on the table, one of `CLOSE_SITES`:

- "between_objects": in the corridor between two objects (its projection on the segment joining their centres
  falls inside it, no farther from it than the larger object's footprint radius) and on neither of them;
- "over_object": above an object's footprint (the close came too high, or the fingers slid off it);
- "beside_object": within `near_m` of an object's footprint, but not between two;
- "elsewhere": anywhere else.

Positions are the base frame's x, y in metres; a footprint is a circle of the object's larger horizontal half
size about its centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robot.sim.env import PickEnv
from robot.sim.occlusion import OcclusionWrapper

#: Where an empty close can happen, in report order.
CLOSE_SITES: tuple[str, ...] = ("between_objects", "over_object", "beside_object", "elsewhere")


@dataclass(frozen=True)
class Footprint:
    """An object on the table as the measure sees it: centre x, y (metres, base frame) and radius (metres)."""

    x: float
    y: float
    radius: float


def classify_site(tcp_xy: npt.ArrayLike, objects: Sequence[Footprint], near_m: float = 0.05) -> str:
    """The `CLOSE_SITES` entry for a close with the TCP at `tcp_xy` (metres) among `objects`."""
    if not near_m > 0:
        raise ValueError(f"near_m must be > 0 metres, got {near_m}")
    p = np.asarray(tcp_xy, dtype=np.float64)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise ValueError(f"tcp_xy must be 2 finite metres (x, y), got {tcp_xy!r}")
    centres = [np.array([o.x, o.y]) for o in objects]
    gaps = [float(np.linalg.norm(p - c)) - o.radius for c, o in zip(centres, objects, strict=True)]
    if any(g <= 0.0 for g in gaps):
        return "over_object"
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = centres[i], centres[j]
            ab = b - a
            length2 = float(ab @ ab)
            if length2 == 0.0:
                continue
            t = float((p - a) @ ab) / length2
            off = float(np.linalg.norm(p - (a + t * ab)))
            if 0.0 < t < 1.0 and off <= max(objects[i].radius, objects[j].radius):
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
        out.append(Footprint(x, y, float(max(obj.kind.spec.half_extents[:2]))))
    return out


def site_counts(sites: Sequence[Sequence[str]]) -> dict[str, int]:
    """Empty closes per site over trials (each trial's list of sites), every site present."""
    counts = dict.fromkeys(CLOSE_SITES, 0)
    for trial in sites:
        for site in trial:
            counts[site] += 1
    return counts
