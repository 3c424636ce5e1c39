"""Headless rendering: colour, depth in millimetres checked against ray casting onto the table, segmentation
masks and boxes, agreement of the rendered camera with the pinhole model used for naming, and mask_box."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

from robot.intrinsics import CameraIntrinsics, look_at, project
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv, ResetOptions
from robot.sim.naming import spatial_word
from robot.sim.render import CameraRenderer, mask_box
from robot.sim.scene import SceneRequest, SceneSpec, sample_scene

pytestmark = pytest.mark.render

W, H = 160, 120


@pytest.fixture(scope="module")
def env() -> Iterator[PickEnv]:
    e = PickEnv(CellConfig(image_width=W, image_height=H))
    yield e
    e.close()


def _pinhole(width: int, height: int, fovy_deg: float) -> CameraIntrinsics:
    """Intrinsics of an OpenGL camera with square pixels and vertical field of view `fovy_deg`."""
    f = (height / 2) / np.tan(np.radians(fovy_deg) / 2)
    return CameraIntrinsics(width, height, f, f, width / 2, height / 2)


def test_colour_image_is_not_constant(env: PickEnv) -> None:
    obs, _ = env.reset(0)
    assert obs.rgb is not None
    assert obs.rgb.shape == (H, W, 3)
    assert obs.rgb.std() > 10
    assert len(np.unique(obs.rgb.reshape(-1, 3), axis=0)) > 50


def test_depth_is_millimetres_along_the_optical_axis(env: PickEnv) -> None:
    env.reset(1)
    model, data, scene = env.model, env.data, env.scene
    assert model is not None
    assert data is not None
    assert scene is not None
    renderer = CameraRenderer(model, "front", W, H)
    try:
        images = renderer.render(data)
    finally:
        renderer.close()
    assert images.depth_mm is not None
    assert images.segmentation is not None
    table = images.segmentation == model.geom("table").id
    assert table.mean() > 0.3
    depth = images.depth_mm[table].astype(np.float64)
    assert 900 <= np.median(depth) <= 1100  # the camera looks at the table about 1 m away
    assert depth.min() >= 600
    assert depth.max() <= 1700
    # Ray-cast every table pixel onto the plane z = 0 with the camera's own pose and field of view.
    rot = look_at(scene.camera.position, scene.camera.target)
    k = _pinhole(W, H, env.config.fovy_deg)
    vs, us = np.nonzero(table)
    rays_cam = np.stack([(us + 0.5 - k.cx) / k.fx, -(vs + 0.5 - k.cy) / k.fy, -np.ones(us.size)], axis=1)
    rays = rays_cam @ rot.T  # camera -> world; camera-frame z component is -1, so t is the depth
    t = -scene.camera.position[2] / rays[:, 2]
    err = np.abs(depth - t * 1000)
    assert np.median(err) < 3.0
    assert np.percentile(err, 95) < 10.0


def test_target_mask_and_box(env: PickEnv) -> None:
    obs, info = env.reset(2)
    assert obs.target_mask is not None
    assert obs.instance_map is not None
    assert obs.target_mask.sum() > 20
    np.testing.assert_array_equal(obs.target_box, mask_box(obs.target_mask))
    x0, y0, x1, y1 = obs.target_box.astype(int)
    assert obs.target_mask[y0:y1, x0:x1].sum() == obs.target_mask.sum()
    # every object of the scene is seen, each with its own index
    assert set(np.unique(obs.instance_map)) == {-1, *range(len(info.scene.objects))}


def test_objects_appear_where_the_pinhole_model_projects_them(env: PickEnv) -> None:
    obs, info = env.reset(3)
    scene = info.scene
    assert obs.instance_map is not None
    rot = look_at(scene.camera.position, scene.camera.target)
    k = _pinhole(W, H, env.config.fovy_deg)
    for i, obj in enumerate(scene.objects):
        ys, xs = np.nonzero(obs.instance_map == i)
        uv = project(env.object_position(obj.instance), scene.camera.position, rot, k)[0]
        assert abs(xs.mean() + 0.5 - uv[0]) < 3, obj.instance
        assert abs(ys.mean() + 0.5 - uv[1]) < 3, obj.instance


@pytest.mark.parametrize(
    "size",
    [(160, 120), (128, 128)],
)
def test_config_intrinsics_match_the_render(size: tuple[int, int]) -> None:
    width, height = size
    cfg = CellConfig(image_width=width, image_height=height)
    env = PickEnv(cfg)
    try:
        obs, info = env.reset(3)
        scene = info.scene
        assert obs.instance_map is not None
        rot = look_at(scene.camera.position, scene.camera.target)
        for i, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(obs.instance_map == i)
            uv = project(env.object_position(obj.instance), scene.camera.position, rot, cfg.intrinsics)[0]
            assert abs(xs.mean() + 0.5 - uv[0]) < 3, obj.instance
            assert abs(ys.mean() + 0.5 - uv[1]) < 3, obj.instance
    finally:
        env.close()


def test_spatial_words_match_the_rendered_image(env: PickEnv) -> None:
    checked = 0
    for seed in range(8):
        scene: SceneSpec = sample_scene(seed, SceneRequest(names=("red cup", "blue ball", "red cup")))
        words = {i: spatial_word(scene, i) for i in ("red_cup_0", "red_cup_1")}
        if set(words.values()) != {"left", "right"}:
            continue
        obs, _ = env.reset(seed, ResetOptions(scene=scene, target="blue ball"))
        assert obs.instance_map is not None
        centre_x = {
            inst: float(np.nonzero(obs.instance_map == idx)[1].mean())
            for inst, idx in (("red_cup_0", 0), ("red_cup_1", 2))
        }
        left = next(i for i, w in words.items() if w == "left")
        right = next(i for i, w in words.items() if w == "right")
        assert centre_x[left] < centre_x[right]
        checked += 1
    assert checked >= 2


def test_wrist_camera_renders() -> None:
    env = PickEnv(CellConfig(image_width=64, image_height=48, wrist_camera=True, wrist_width=64, wrist_height=48))
    try:
        obs, _ = env.reset(0)
        assert obs.wrist_rgb is not None
        assert obs.wrist_rgb.shape == (48, 64, 3)
        assert obs.wrist_rgb.std() > 5
    finally:
        env.close()


def test_renderer_rejects_unknown_camera_and_oversized_images(env: PickEnv) -> None:
    env.reset(0)
    assert env.model is not None
    with pytest.raises(ValueError, match="no camera"):
        CameraRenderer(env.model, "ceiling", W, H)
    with pytest.raises(ValueError, match="offscreen buffer"):
        CameraRenderer(env.model, "front", 4000, 3000)


def test_mask_box() -> None:
    empty = np.zeros((12, 16), dtype=np.bool_)
    box = mask_box(empty)
    np.testing.assert_array_equal(box, np.zeros(4))
    assert box.dtype == np.float32
    mask = empty.copy()
    mask[3:7, 5:9] = True
    mask[10, 2] = True
    np.testing.assert_array_equal(mask_box(mask), [2, 3, 9, 11])
    full = np.ones((12, 16), dtype=np.bool_)
    np.testing.assert_array_equal(mask_box(full), [0, 0, 16, 12])


def test_rendering_works_when_mujoco_is_imported_first() -> None:
    code = textwrap.dedent(
        """
        import mujoco
        from robot.sim.config import CellConfig
        from robot.sim.env import PickEnv
        obs, _ = PickEnv(CellConfig(image_width=32, image_height=24)).reset(0)
        assert obs.rgb is not None and obs.rgb.any()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
