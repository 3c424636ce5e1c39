"""Test-time occlusion: the share of blacked-out frames, the visible first frame, and seeding."""

from __future__ import annotations

import numpy as np
import pytest

from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv
from robot.sim.mjcf import GRIPPER_STROKE
from robot.sim.occlusion import OcclusionWrapper

# Tiny images and 5 physics steps per frame keep 400 rendered frames to a few seconds.
TINY = CellConfig(image_width=32, image_height=24, control_dt=0.01)


def _black(obs: Observation) -> bool:
    assert obs.rgb is not None
    assert obs.depth_mm is not None
    return not obs.rgb.any() and not obs.depth_mm.any()


def _pattern(wrapper: OcclusionWrapper, seed: int, frames: int) -> list[bool]:
    obs, _ = wrapper.reset(seed)
    hidden = [_black(obs)]
    hold = np.append(wrapper.env.joint_command, GRIPPER_STROKE)
    for _ in range(frames - 1):
        obs, *_ = wrapper.step(hold)
        assert wrapper.last_occluded == _black(obs)
        assert obs.target_mask is not None
        assert obs.target_mask.any()  # ground truth is kept
        hidden.append(_black(obs))
    return hidden


@pytest.mark.render
@pytest.mark.parametrize(("p", "frames"), [(0.0, 100), (0.2, 400), (0.6, 400)])
def test_blackout_rate_matches_p(p: float, frames: int) -> None:
    wrapper = OcclusionWrapper(PickEnv(TINY), p)
    try:
        hidden = _pattern(wrapper, 0, frames)
    finally:
        wrapper.close()
    assert not hidden[0]  # the prompt frame stays visible
    rate = sum(hidden) / frames
    assert rate == pytest.approx(p, abs=0.06)
    assert wrapper.frames == frames
    assert wrapper.rate == pytest.approx(rate)


@pytest.mark.render
def test_first_frame_visible_even_at_p_1() -> None:
    wrapper = OcclusionWrapper(PickEnv(TINY), 1.0)
    try:
        hidden = _pattern(wrapper, 3, 5)
        assert hidden == [False, True, True, True, True]
        wrapper.keep_first = False
        obs, _ = wrapper.reset(3)
        assert _black(obs)
    finally:
        wrapper.close()


@pytest.mark.render
def test_same_seed_same_pattern() -> None:
    env = PickEnv(TINY)
    wrapper = OcclusionWrapper(env, 0.5)
    try:
        first = _pattern(wrapper, 7, 40)
        again = _pattern(wrapper, 7, 40)
        other = _pattern(wrapper, 8, 40)
    finally:
        wrapper.close()
    assert first == again
    assert first != other
    assert 0 < sum(first) < 40


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_p_outside_unit_interval_is_an_error(p: float) -> None:
    with pytest.raises(ValueError, match="p"):
        OcclusionWrapper(PickEnv(TINY), p)
