"""Where a policy closes on nothing (pipeline.empty_closes): the site classification, the per-trial watch, and a
rendered trial in which a scripted end-effector agent closes between two objects of the scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.empty_closes import (
    CLOSE_SITES,
    ROUND_SHAPES,
    EmptyCloseWatch,
    Footprint,
    classify_site,
    site_counts,
    table_footprints,
)
from pipeline.eval_report import level_result
from pipeline.evaluate import EvalConfig, run_trial

TWO = [Footprint.circle(0.0, 0.0, 0.03), Footprint.circle(0.2, 0.0, 0.02)]


def test_sites_between_over_beside_and_elsewhere() -> None:
    assert classify_site([0.1, 0.01], TWO) == "between_objects"
    assert classify_site([0.04, 0.035], TWO) == "beside_object"  # 3.5 cm off the segment: outside the corridor
    assert classify_site([0.19, 0.01], TWO) == "over_object"
    assert classify_site([-0.06, 0.0], TWO) == "beside_object"  # 3 cm from the edge, and before the segment
    assert classify_site([0.5, 0.5], TWO) == "elsewhere"
    assert classify_site([0.5, 0.5], []) == "elsewhere"
    with pytest.raises(ValueError, match="2 finite metres"):
        classify_site([0.1, np.nan], TWO)
    with pytest.raises(ValueError, match="near_m must be > 0"):
        classify_site([0.1, 0.0], TWO, near_m=0.0)


def test_a_rectangle_counts_its_long_side_only_along_its_length() -> None:
    box = Footprint.rectangle(0.0, 0.0, 0.045, 0.022, 0.0)  # long along x
    assert classify_site([0.04, 0.0], [box]) == "over_object"
    assert classify_site([0.0, 0.03], [box]) == "beside_object"  # 8 mm off the long side: a circle would cover it
    assert box.gap(np.array([0.0, 0.03])) == pytest.approx(0.008)
    assert box.gap(np.array([0.0, 0.0])) == pytest.approx(-0.022)
    assert box.gap(np.array([0.055, 0.032])) == pytest.approx(np.hypot(0.01, 0.01))  # off a corner
    turned = Footprint.rectangle(0.0, 0.0, 0.045, 0.022, np.pi / 2)  # now long along y
    assert classify_site([0.0, 0.04], [turned]) == "over_object"
    assert classify_site([0.03, 0.0], [turned]) == "beside_object"
    # the corridor between two boxes is as wide as the wider of them across the line joining them
    a, b = Footprint.rectangle(0.0, 0.0, 0.045, 0.022, 0.0), Footprint.rectangle(0.2, 0.0, 0.045, 0.022, 0.0)
    assert a.half_width_across(np.array([1.0, 0.0])) == pytest.approx(0.022)
    assert turned.half_width_across(np.array([1.0, 0.0])) == pytest.approx(0.045)
    assert classify_site([0.1, 0.02], [a, b]) == "between_objects"
    assert classify_site([0.08, 0.03], [a, b]) == "beside_object"  # 3 cm off the line: outside the corridor
    assert classify_site([0.08, 0.03], [a, Footprint.rectangle(0.2, 0.0, 0.045, 0.022, np.pi / 2)]) == "between_objects"
    with pytest.raises(ValueError, match="half sizes > 0"):
        Footprint.rectangle(0.0, 0.0, 0.0, 0.02, 0.0)
    with pytest.raises(ValueError, match="finite centre"):
        Footprint.circle(np.nan, 0.0, 0.02)


def test_the_watch_records_each_meeting_of_the_fingers_once() -> None:
    asked: list[int] = []

    def objects() -> list[Footprint]:
        asked.append(1)
        return TWO

    watch = EmptyCloseWatch(closed_width=0.004)
    widths = [0.085, 0.05, 0.003, 0.001, 0.002, 0.06, 0.002, 0.048]
    sites = [watch.update(w, [0.1, 0.0], objects) for w in widths]
    assert sites == [None, None, "between_objects", None, None, None, "between_objects", None]
    assert watch.sites == ["between_objects", "between_objects"]
    assert len(asked) == 2  # the objects are looked up only when the fingers meet
    assert site_counts([watch.sites, ["over_object"], []]) == {
        "between_objects": 2,
        "over_object": 1,
        "beside_object": 0,
        "elsewhere": 0,
    }
    assert tuple(site_counts([])) == CLOSE_SITES
    with pytest.raises(ValueError, match="closed_width"):
        EmptyCloseWatch(closed_width=0.0)


@dataclass
class _Step:
    visible: bool = True
    box: Any = None
    mask: Any = None


class GoAndClose:
    """Scripted end-effector agent: moves the TCP 5 mm per step to `goal` (x, y, z metres) keeping the start
    orientation, then closes the gripper."""

    action_mode = "ee"
    tracker = None

    def __init__(self, goal: npt.ArrayLike) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        self.pose = np.zeros(6)

    def _next(self, state: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], _Step]:
        gap = self.goal - self.pose[:3]
        far = float(np.linalg.norm(gap))
        self.pose[:3] += gap if far <= 0.005 else 0.005 * gap / far
        grip = 0.0 if far <= 0.005 else 0.085
        return np.append(self.pose, grip), _Step()

    def start(self, rgb: Any, box: Any, state: npt.NDArray[Any], mask: Any = None) -> tuple[Any, _Step]:
        from robot.kinematics import forward, pose_to_vector
        from robot.sim.mjcf import TCP_OFFSET

        self.pose = pose_to_vector(forward(np.asarray(state[:6], dtype=np.float64), TCP_OFFSET))
        return self._next(state)

    def act(self, rgb: Any, state: npt.NDArray[Any], mask: Any = None) -> tuple[Any, _Step]:
        return self._next(state)


@pytest.mark.render
def test_a_trial_that_closes_between_two_objects_is_counted_there(tmp_path: Path) -> None:
    from robot.sim.config import CellConfig
    from robot.sim.env import PickEnv
    from robot.sim.occlusion import OcclusionWrapper
    from robot.sim.scene import SceneRequest

    cell = CellConfig(image_width=64, image_height=48, depth=False, scene=SceneRequest(n_objects=(3, 3)))
    env = OcclusionWrapper(PickEnv(cell), 0.0)
    try:
        seed = 10_000_000
        env.reset(seed)
        feet = table_footprints(env)
        for obj, foot in zip(env.env.scene.objects, feet, strict=True):  # type: ignore[union-attr]
            assert foot.round == (obj.kind.shape in ROUND_SHAPES)
            assert (foot.half_x, foot.half_y) == pytest.approx(obj.kind.spec.half_extents[:2])
            if not foot.round:
                assert foot.yaw == pytest.approx(env.env.object_yaw(obj.instance))
        pairs = [(a, b) for i, a in enumerate(feet) for b in feet[i + 1 :]]
        a, b = max(pairs, key=lambda ab: np.hypot(ab[0].x - ab[1].x, ab[0].y - ab[1].y))  # the widest gap
        goal = [0.5 * (a.x + b.x), 0.5 * (a.y + b.y), 0.04]
        assert classify_site(goal[:2], feet) == "between_objects"
        cfg = EvalConfig(trials=1, out=tmp_path, max_seconds=10.0, width=64, height=48)
        trial = run_trial(GoAndClose(goal), env, seed, cfg)  # type: ignore[arg-type]
    finally:
        env.close()
    assert trial.empty_close_sites == ["between_objects"]
    level = level_result(0.0, [trial, trial], [])
    assert level.empty_close_sites["between_objects"] == 2
    assert level.between_objects_share == 1.0
