"""The MJCF model of the cell: its forward kinematics is the published UR5e one, its limits are the UR5e's,
the gripper has an 85 mm stroke, and every catalogue shape compiles."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from robot.kinematics import UR5E_JOINT_LIMITS, forward, rotation_error
from robot.sim.catalogue import Shape
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv
from robot.sim.mjcf import ARM_JOINTS, GRIPPER_STROKE, TCP_OFFSET, build_mjcf
from robot.sim.scene import SceneRequest, sample_scene


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(build_mjcf(sample_scene(0)))


def test_model_fk_matches_dh(model: mujoco.MjModel) -> None:
    data = mujoco.MjData(model)
    qadr = [model.joint(j).qposadr[0] for j in ARM_JOINTS]
    tcp, flange = model.site("tcp").id, model.site("flange").id
    rng = np.random.default_rng(0)
    worst_pos = worst_rot = 0.0
    for _ in range(200):
        q = rng.uniform(UR5E_JOINT_LIMITS[:, 0], UR5E_JOINT_LIMITS[:, 1])
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        for site, offset in ((tcp, TCP_OFFSET), (flange, 0.0)):
            want = forward(q, offset)
            got_rot = data.site_xmat[site].reshape(3, 3)
            worst_pos = max(worst_pos, float(np.linalg.norm(data.site_xpos[site] - want[:3, 3])))
            worst_rot = max(worst_rot, float(np.linalg.norm(rotation_error(got_rot, want[:3, :3]))))
    assert worst_pos < 1e-3, f"model FK differs from DH by {worst_pos * 1000:.3f} mm"
    assert worst_pos < 1e-6  # same parameters, so it should agree to rounding (about 1e-12)
    assert worst_rot < 1e-6


def test_model_joint_limits_are_the_ur5e_ones(model: mujoco.MjModel) -> None:
    for i, name in enumerate(ARM_JOINTS):
        np.testing.assert_allclose(model.joint(name).range, UR5E_JOINT_LIMITS[i], atol=1e-5)
        np.testing.assert_allclose(model.actuator(name).ctrlrange, UR5E_JOINT_LIMITS[i], atol=1e-5)
    assert model.joint("elbow").range[1] == pytest.approx(math.pi, abs=1e-5)
    for side in ("left", "right"):
        np.testing.assert_allclose(model.joint(f"finger_{side}").range, [0.0, GRIPPER_STROKE / 2], atol=1e-4)


def test_gripper_stroke_open_and_closed() -> None:
    env = PickEnv(CellConfig(render=False))
    env.reset(0)
    assert env.gripper_width == pytest.approx(GRIPPER_STROKE, abs=0.001)
    assert abs(GRIPPER_STROKE - 0.085) < 1e-12
    hold = env.joint_command
    for _ in range(30):  # 1.5 s: the opening target moves at 0.15 m/s, so it is shut after 0.6 s
        env.step(np.append(hold, 0.0))
    assert env.gripper_width < 0.001
    model, data = env.model, env.data
    assert model is not None
    assert data is not None
    left = data.qpos[model.joint("finger_left").qposadr[0]]
    right = data.qpos[model.joint("finger_right").qposadr[0]]
    assert left == pytest.approx(right, abs=5e-4)
    for _ in range(30):
        env.step(np.append(hold, GRIPPER_STROKE))
    assert env.gripper_width == pytest.approx(GRIPPER_STROKE, abs=0.001)


def test_every_shape_compiles_and_rests_on_the_table() -> None:
    names = tuple(f"{c} {s.value}" for c, s in zip(("red", "green", "blue", "yellow", "white"), Shape, strict=True))
    env = PickEnv(CellConfig(render=False, settle_s=0.5, scene=SceneRequest(names=names)))
    env.reset(3)
    assert env.scene is not None
    for obj in env.scene.objects:
        pos = env.object_position(obj.instance)
        assert pos[2] == pytest.approx(obj.kind.spec.half_extents[2], abs=0.003), obj.instance
        assert np.hypot(pos[0] - obj.x, pos[1] - obj.y) < 0.003, obj.instance
