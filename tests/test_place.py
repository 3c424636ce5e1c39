"""The camera's calibration as the head's extra input: pixel rays onto the table, the recorded camera of each
episode, place values, and the head and agent that read them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_agent import BOX, STATE, frames, tiny_head
from test_dataset import FPS, make_episode

from pipeline.dataset.reader import Dataset
from pipeline.dataset.writer import DatasetWriter
from policy.act import ACTPolicy
from policy.act_config import ACTConfig
from policy.agent import AgentError, SAM2GraspAgent
from policy.cache import load_tracker
from policy.features import parse_feature_spec
from policy.place import (
    PLACE_DIM,
    PLACE_HEIGHT_M,
    PlaceError,
    check_place_source,
    normalised_box,
    place_values,
    with_place,
)
from robot.camera_view import CameraView, CameraViewError
from robot.intrinsics import D435_COLOUR_640x480, look_at, project
from robot.kinematics import forward
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.scene import CAMERA_POSITION, CAMERA_TARGET, SceneRequest

torch.set_num_threads(1)

K320 = D435_COLOUR_640x480.scaled(320, 240)
VIEW = CameraView.from_look_at(CAMERA_POSITION, CAMERA_TARGET, K320)


def spy_extras(head: ACTPolicy) -> list[np.ndarray]:
    """The extras (E,) of every `select_action` call on `head` from now on, in order."""
    seen: list[np.ndarray] = []
    original = head.select_action

    def spy(inp):  # type: ignore[no-untyped-def]
        seen.append(inp.extras.numpy()[0])
        return original(inp)

    head.select_action = spy  # type: ignore[method-assign]
    return seen


def test_pixel_rays_meet_the_plane_where_the_points_project_from() -> None:
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0.3, 0.7, 50), rng.uniform(-0.25, 0.25, 50), np.full(50, 0.03)])
    uv = project(pts, CAMERA_POSITION, look_at(CAMERA_POSITION, CAMERA_TARGET), K320)
    np.testing.assert_allclose(VIEW.pixel_to_plane(uv, 0.03), pts, atol=1e-9)
    # OpenCV axes: the camera looks along its +z, towards the look-at point
    forward_axis = VIEW.T_base_camera[:3, 2]
    aim = np.subtract(CAMERA_TARGET, CAMERA_POSITION)
    np.testing.assert_allclose(forward_axis, aim / np.linalg.norm(aim), atol=1e-12)
    # a ray going up never meets a plane below the camera: NaN, not a point behind it
    assert np.all(np.isnan(VIEW.pixel_to_plane([[160.0, -2000.0]], 0.0)))


def test_camera_view_records_round_trip_and_bad_ones_are_named() -> None:
    again = CameraView.from_dict(VIEW.to_dict())
    assert again.intrinsics == VIEW.intrinsics
    np.testing.assert_array_equal(again.T_base_camera, VIEW.T_base_camera)
    half = VIEW.scaled(160, 120)
    np.testing.assert_allclose(half.pixel_to_plane([[80.0, 60.0]], 0.0), VIEW.pixel_to_plane([[160.0, 120.0]], 0.0))
    record = VIEW.to_dict()
    del record["fx"]
    with pytest.raises(CameraViewError, match="lacks \\['fx'\\]"):
        CameraView.from_dict(record)
    skewed = np.eye(4)
    skewed[0, 1] = 0.5
    with pytest.raises(CameraViewError, match="orthonormal"):
        CameraView(K320, skewed)
    with pytest.raises(CameraViewError, match="4x4"):
        CameraView(K320, np.eye(3))
    with pytest.raises(CameraViewError, match="must be an object"):
        CameraView.from_dict([1, 2])


def test_place_values_give_the_target_and_its_offset_from_the_tcp() -> None:
    point = np.array([0.55, -0.12, PLACE_HEIGHT_M])
    u, v = project(point[None], CAMERA_POSITION, look_at(CAMERA_POSITION, CAMERA_TARGET), K320)[0]
    box = np.array([u - 10, v - 8, u + 10, v + 8]) / [320, 240, 320, 240]
    extras = np.array([[2.0, 0.9, *box, 0.01], [2.0, 0.9, *box, 0.0]])  # seen, then no mask
    states = np.tile(STATE, (2, 1))
    values = place_values(extras, states, VIEW, TCP_OFFSET)
    tcp = forward(STATE[:6].astype(np.float64), TCP_OFFSET)[:3, 3]
    np.testing.assert_allclose(values[0], [*point[:2], *(point[:2] - tcp[:2]), tcp[2]], atol=1e-5)
    np.testing.assert_allclose(values[1], [0.0, 0.0, 0.0, 0.0, tcp[2]], atol=1e-6)
    assert with_place(extras, states, VIEW, TCP_OFFSET).shape == (2, 7 + PLACE_DIM)
    with pytest.raises(PlaceError, match="needs the camera's calibration"):
        with_place(extras, states, None, TCP_OFFSET)
    with pytest.raises(PlaceError, match="states must be"):
        place_values(extras, states[:1], VIEW, TCP_OFFSET)


def test_prompt_place_values_hold_the_prompt_boxs_target_whatever_the_tracker_says() -> None:
    point = np.array([0.48, 0.07, PLACE_HEIGHT_M])
    u, v = project(point[None], CAMERA_POSITION, look_at(CAMERA_POSITION, CAMERA_TARGET), K320)[0]
    prompt = normalised_box([u - 12, v - 9, u + 12, v + 9], 320, 240)
    drifted = np.add(prompt, [0.2, -0.1, 0.2, -0.1])  # the tracker slid onto something else, then lost the target
    extras = np.array([[2.0, 0.9, *prompt, 0.01], [2.0, 0.9, *drifted, 0.01], [2.0, 0.1, 0, 0, 0, 0, 0.0]])
    states = np.stack([STATE, np.add(STATE, [0.1, -0.05, 0.05, 0, 0, 0, 0]), STATE])
    values = place_values(extras, states, VIEW, TCP_OFFSET, prompt)
    tracked = place_values(extras, states, VIEW, TCP_OFFSET)
    for row, q in zip(values, states, strict=True):
        tcp = forward(q[:6].astype(np.float64), TCP_OFFSET)[:3, 3]
        np.testing.assert_allclose(row, [*point[:2], *(point[:2] - tcp[:2]), tcp[2]], atol=1e-5)
    assert np.linalg.norm(tracked[1, :2] - point[:2]) > 0.05  # what the tracked source would have said
    np.testing.assert_allclose(tracked[2, :4], 0.0)
    with pytest.raises(PlaceError, match="x0 < x1"):
        normalised_box([50, 40, 50, 60], 320, 240)  # an empty box (a target hidden on the prompt frame)
    with pytest.raises(PlaceError, match="4 finite fractions"):
        place_values(extras, states, VIEW, TCP_OFFSET, [0.1, 0.2, np.nan, 0.4])
    with pytest.raises(PlaceError, match="valid: tracked, prompt"):
        check_place_source("grounder")


@pytest.mark.render
def test_the_cells_recorded_camera_places_targets_better_than_the_nominal_one() -> None:
    """On rendered scenes, the place value from the first frame's true target box lies within a few cm of the
    target; with the nominal (unjittered) camera it is further off, which is why the calibration is an input."""
    env = PickEnv(CellConfig(image_width=160, image_height=120, scene=SceneRequest(n_objects=(3, 3))))
    nominal = CameraView.from_look_at(CAMERA_POSITION, CAMERA_TARGET, env.config.intrinsics)
    own, fixed = [], []
    try:
        for seed in range(200_000, 200_008):
            obs, info = env.reset(seed)
            view = env.camera_view()
            assert (view.intrinsics.width, view.intrinsics.height) == (160, 120)
            assert obs.target_mask is not None
            box = np.asarray(obs.target_box, dtype=np.float64) / [160, 120, 160, 120]
            extras = np.array([[0.0, 0.5, *box, float(obs.target_mask.mean())]])
            truth = env.object_position(info.target)[:2]
            own.append(np.linalg.norm(place_values(extras, obs.state[None], view, TCP_OFFSET)[0, :2] - truth))
            fixed.append(np.linalg.norm(place_values(extras, obs.state[None], nominal, TCP_OFFSET)[0, :2] - truth))
    finally:
        env.close()
    assert max(own) < 0.04
    assert np.mean(own) < np.mean(fixed)


def test_datasets_keep_each_episodes_camera_and_older_ones_read_none(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "ds", FPS) as writer:
        writer.add_episode(dataclasses.replace(make_episode(seed=1), camera=VIEW))
        writer.add_episode(make_episode(seed=2))
    ds = Dataset(tmp_path / "ds")
    first = ds.episode_meta(0).camera
    assert first is not None
    np.testing.assert_allclose(first.T_base_camera, VIEW.T_base_camera)
    assert first.intrinsics == VIEW.intrinsics
    assert ds.episode_meta(1).camera is None


def test_head_config_counts_place_values_in_its_extras() -> None:
    base = {"feature_spec": "pooled2+shape", "token_dim": 64, "n_tokens": 5}
    assert ACTConfig(**base, extras_dim=11 + PLACE_DIM, place=True).place  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plus 5 place values, which gives 16"):
        ACTConfig(**base, extras_dim=11, place=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="place_tcp_offset must be metres"):
        ACTConfig(**base, extras_dim=11 + PLACE_DIM, place=True, place_tcp_offset=0.9)  # type: ignore[arg-type]
    # checkpoints written before the option load as heads without place values
    old = ACTConfig(**base, extras_dim=11).to_dict()  # type: ignore[arg-type]
    del old["place"], old["place_tcp_offset"], old["place_source"]
    assert not ACTConfig.from_dict(old).place
    assert ACTConfig.from_dict(old).place_source == "tracked"
    with pytest.raises(ValueError, match="place_source='box'; valid: tracked, prompt"):
        ACTConfig(**base, extras_dim=11 + PLACE_DIM, place=True, place_source="box")  # type: ignore[arg-type]
    placed = {**base, "extras_dim": 11 + PLACE_DIM, "place": True, "place_source": "prompt"}
    assert ACTConfig(**placed, action_mode="ee", action_frame="target").action_frame == "target"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="action_frame='target' needs action_mode='ee'"):
        ACTConfig(**placed, action_frame="target")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: base, target"):
        ACTConfig(**placed, action_mode="ee", action_frame="object")  # type: ignore[arg-type]


def test_agent_needs_the_calibration_for_a_place_head_and_uses_it() -> None:
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    head = tiny_head(extras_dim=7 + PLACE_DIM, place=True)
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head)
    fs = frames(3)
    with pytest.raises(AgentError, match="needs the camera's calibration"):
        agent.start(fs[0], BOX, STATE)
    action, _ = agent.start(fs[0], BOX, STATE, camera=VIEW)  # a 320x240 calibration scaled to the 64x48 frames
    assert action.shape == (7,)
    assert np.all(np.isfinite(action))
    seen = spy_extras(head)
    agent.act(fs[1], STATE)
    step = agent.last_step
    assert step is not None
    expected = place_values(seen[0][None, :7], STATE[None], VIEW.scaled(64, 48), head.config.place_tcp_offset)
    np.testing.assert_allclose(seen[0][7:], expected[0], atol=1e-5)
    # a head without place values ignores any camera
    plain = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), tiny_head())
    assert plain.start(fs[0], BOX, STATE, camera=VIEW)[0].shape == (7,)


def test_agent_with_a_prompt_place_head_places_the_target_by_the_prompt_box() -> None:
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    head = tiny_head(extras_dim=7 + PLACE_DIM, place=True, place_source="prompt")
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head, camera=VIEW)
    fs = frames(4)
    seen = spy_extras(head)
    agent.start(fs[0], BOX, STATE)
    agent.act(fs[1], STATE)
    moved = STATE + np.array([0.2, -0.1, 0.1, 0, 0, 0, 0], dtype=np.float32)
    agent.act(fs[2], moved)
    prompt = normalised_box(BOX, 64, 48)
    view = VIEW.scaled(64, 48)
    for extras, state in zip(seen, (STATE, STATE, moved), strict=True):
        expected = place_values(extras[None, :7], state[None], view, TCP_OFFSET, prompt)[0]
        np.testing.assert_allclose(extras[7:], expected, atol=1e-5)
    np.testing.assert_allclose(seen[0][7:9], seen[2][7:9], atol=1e-6)  # the target stays where the prompt put it
    assert not np.allclose(seen[0][9:], seen[2][9:])  # the offsets follow the arm
    with pytest.raises(AgentError, match="x0 < x1"):
        agent.start(fs[0], [10, 10, 10, 20], STATE)


def test_agent_with_a_target_frame_head_moves_its_actions_to_the_prompted_target() -> None:
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    head = tiny_head(
        extras_dim=7 + PLACE_DIM, place=True, place_source="prompt", action_mode="ee", action_frame="target"
    )
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head, camera=VIEW)
    fs = frames(3)
    raw: dict[str, np.ndarray] = {}
    original_select, original_chunk = head.select_action, head.predict_action_chunk

    def spy_select(inp):  # type: ignore[no-untyped-def]
        out = original_select(inp)
        raw["select"] = out.detach().numpy().reshape(-1).copy()
        return out

    def spy_chunk(inp):  # type: ignore[no-untyped-def]
        out = original_chunk(inp)
        raw["chunk"] = out[0].detach().numpy().copy()
        return out

    head.select_action = spy_select  # type: ignore[method-assign]
    head.predict_action_chunk = spy_chunk  # type: ignore[method-assign]
    action, _ = agent.start(fs[0], BOX, STATE)
    view = VIEW.scaled(64, 48)
    anchor = place_values(np.zeros((1, 7)), STATE[None], view, TCP_OFFSET, normalised_box(BOX, 64, 48))[0, :2]
    assert agent.anchor_xy is not None
    np.testing.assert_allclose(agent.anchor_xy, anchor, atol=1e-9)
    assert np.linalg.norm(anchor) > 0.2  # a real table position, not the zeros of a missed ray
    np.testing.assert_allclose(action[:2], raw["select"][:2] + anchor, atol=1e-6)
    np.testing.assert_allclose(action[2:], raw["select"][2:], atol=1e-6)
    chunk, _ = agent.chunk(fs[1], STATE)
    np.testing.assert_allclose(chunk[:, :2], raw["chunk"][:, :2] + anchor, atol=1e-6)
    np.testing.assert_allclose(chunk[:, 2:], raw["chunk"][:, 2:], atol=1e-6)
