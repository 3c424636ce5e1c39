"""PickEnv: stable physics, determinism, the joint speed cap, input validation, action modes, observations and
every episode outcome."""

from __future__ import annotations

import dataclasses
from typing import cast

import mujoco
import numpy as np
import pytest

from robot.kinematics import forward
from robot.sim.catalogue import UnknownObjectError
from robot.sim.config import HOME_Q, ActionMode, CellConfig
from robot.sim.env import Observation, PickEnv, ResetOptions, StepInfo
from robot.sim.expert import ScriptedExpert
from robot.sim.mjcf import GRIPPER_STROKE, TCP_OFFSET
from robot.sim.outcome import Outcome, OutcomeRules
from robot.sim.render import mask_box
from robot.sim.scene import SceneError, SceneRequest, SceneSpec, sample_scene


def _assert_no_warnings(env: PickEnv) -> None:
    data = env.data
    assert data is not None
    for name, warning in mujoco.mjtWarning.__members__.items():
        if name != "mjNWARNING":
            assert data.warning[int(warning)].number == 0, f"MuJoCo warning {name}"


def _run_expert(env: PickEnv, expert: ScriptedExpert) -> tuple[StepInfo, float, bool, bool]:
    while True:
        _, reward, terminated, truncated, info = env.step(expert.act().executed)
        if terminated or truncated:
            return info, reward, terminated, truncated


def test_random_control_is_stable() -> None:
    env = PickEnv(CellConfig(render=False))
    home = np.asarray(HOME_Q)
    for seed in range(3):
        env.reset(seed)
        rng = np.random.default_rng(seed)
        for _ in range(20):  # 1 s
            action = np.append(home + rng.uniform(-0.3, 0.3, 6), rng.uniform(0.0, GRIPPER_STROKE))
            env.step(action)
        data = env.data
        assert data is not None
        assert np.all(np.isfinite(data.qpos))
        assert np.all(np.isfinite(data.qvel))
        _assert_no_warnings(env)
        assert data.time == pytest.approx(1.0)


def _rollout(env: PickEnv, seed: int, actions: np.ndarray) -> list[Observation]:
    obs, _ = env.reset(seed)
    out = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        out.append(obs)
    return out


def test_same_seed_same_episode_bit_exact() -> None:
    rng = np.random.default_rng(0)
    actions = np.column_stack([np.asarray(HOME_Q) + rng.uniform(-0.2, 0.2, (8, 6)), rng.uniform(0, 0.085, 8)])
    env_a, env_b = (
        PickEnv(CellConfig(image_width=160, image_height=120)),
        PickEnv(CellConfig(image_width=160, image_height=120)),
    )
    try:
        run_a, run_b = _rollout(env_a, 7, actions), _rollout(env_b, 7, actions)
        assert env_a.scene == env_b.scene
        assert env_a.target == env_b.target
        for a, b in zip(run_a, run_b, strict=True):
            np.testing.assert_array_equal(a.joints, b.joints)
            np.testing.assert_array_equal(a.tcp_pose, b.tcp_pose)
            assert a.rgb is not None
            assert b.rgb is not None
            np.testing.assert_array_equal(a.rgb, b.rgb)
            np.testing.assert_array_equal(a.depth_mm, b.depth_mm)
            np.testing.assert_array_equal(a.target_box, b.target_box)
        assert env_a.scene is not None
        for obj in env_a.scene.objects:
            np.testing.assert_array_equal(env_a.object_position(obj.instance), env_b.object_position(obj.instance))
        env_b.reset(8)
        assert env_b.scene != env_a.scene
        assert env_b.scene is not None
        assert [o.instance for o in env_b.scene.objects] != [o.instance for o in env_a.scene.objects]
    finally:
        env_a.close()
        env_b.close()


@pytest.mark.parametrize("speed", [np.pi, 1.0])
def test_joint_targets_move_at_most_at_the_speed_cap(speed: float) -> None:
    cfg = CellConfig(render=False, max_joint_speed=speed)
    env = PickEnv(cfg)
    env.reset(0)
    far = np.asarray(HOME_Q) + np.array([2.0, -1.0, 1.2, 2.0, -2.0, 3.0])
    cap = speed * cfg.control_dt
    prev = env.joint_command
    steps_at_cap = 0
    for _ in range(10):
        env.step(np.append(far, GRIPPER_STROKE))
        cmd = env.joint_command
        step = np.abs(cmd - prev)
        assert np.all(step <= cap + 1e-12), f"joint target moved {step.max():.4f} rad > cap {cap:.4f}"
        steps_at_cap += int(np.isclose(step.max(), cap))
        prev = cmd
    assert steps_at_cap == 10  # far from the target the cap is the binding constraint


@pytest.mark.parametrize(
    "action",
    [np.zeros(6), np.zeros(8), np.zeros((7, 1)), np.array([0, 0, 0, np.nan, 0, 0, 0]), np.full(7, np.inf)],
    ids=["short", "long", "2d", "nan", "inf"],
)
@pytest.mark.parametrize("mode", [ActionMode.JOINT, ActionMode.EE])
def test_bad_actions_are_rejected(action: np.ndarray, mode: ActionMode) -> None:
    env = PickEnv(CellConfig(render=False, action_mode=mode))
    env.reset(0)
    before = env.joint_command
    with pytest.raises(ValueError, match="7"):
        env.step(action)
    np.testing.assert_array_equal(env.joint_command, before)


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        PickEnv(CellConfig(render=False)).step(np.zeros(7))


def test_target_not_in_scene_lists_objects() -> None:
    env = PickEnv(CellConfig(render=False))
    scene = sample_scene(0, SceneRequest(names=("red cube", "blue can", "green ball")))
    for missing in ("yellow cup", "red_cube_1"):
        with pytest.raises(UnknownObjectError) as err:
            env.reset(0, ResetOptions(scene=scene, target=missing))
        for obj in scene.objects:
            assert obj.instance in str(err.value)


def test_target_with_unknown_colour_names_the_colours() -> None:
    env = PickEnv(CellConfig(render=False))
    with pytest.raises(UnknownObjectError, match="purple"):
        env.reset(0, ResetOptions(target="pink cup"))


def test_target_by_name_or_instance() -> None:
    env = PickEnv(CellConfig(render=False))
    scene = sample_scene(1, SceneRequest(names=("red cup", "blue cube", "red cup")))
    _, info = env.reset(1, ResetOptions(scene=scene, target="blue cube"))
    assert info.target == "blue_cube_0" == env.target
    assert info.command == "pick the blue cube"
    _, info = env.reset(1, ResetOptions(scene=scene, target="red_cup_1"))
    assert info.target == "red_cup_1"
    assert info.command.startswith("pick the ")
    assert info.command.endswith(" red cup")
    with pytest.raises(SceneError, match="matches 2 objects"):
        env.reset(1, ResetOptions(scene=scene, target="red cup"))


def test_empty_scene_is_an_error() -> None:
    empty = dataclasses.replace(sample_scene(0), objects=())
    with pytest.raises(SceneError, match="no objects"):
        PickEnv(CellConfig(render=False)).reset(0, ResetOptions(scene=empty))


def test_reset_picks_a_target_in_the_scene() -> None:
    env = PickEnv(CellConfig(render=False))
    targets = set()
    for seed in range(12):
        _, info = env.reset(seed)
        assert info.target in {o.instance for o in info.scene.objects}
        targets.add(info.scene.find(info.target).kind.shape)
    assert len(targets) > 1


def test_ee_mode_current_pose_holds_still() -> None:
    env = PickEnv(CellConfig(render=False, action_mode=ActionMode.EE))
    obs, _ = env.reset(0)
    q0, pose0 = obs.joints, obs.tcp_pose
    for _ in range(10):
        obs, _, _, _, info = env.step(np.append(pose0, obs.gripper_width))
        assert not info.ik_failed
    assert np.abs(obs.joints - q0).max() < 1e-4
    assert np.linalg.norm(obs.tcp_pose[:3] - pose0[:3]) < 1e-4


def test_ee_mode_moves_to_a_pose_and_keeps_targets_when_unreachable() -> None:
    env = PickEnv(CellConfig(render=False, action_mode=ActionMode.EE))
    obs, _ = env.reset(0)
    goal = obs.tcp_pose.copy()
    goal[:3] += [0.05, 0.05, -0.05]
    for _ in range(30):
        obs, _, _, _, info = env.step(np.append(goal, GRIPPER_STROKE))
        assert not info.ik_failed
    assert np.linalg.norm(obs.tcp_pose[:3] - goal[:3]) < 0.002
    before = env.joint_command
    far = goal.copy()
    far[:3] = [2.0, 0.0, 0.3]
    _, _, _, _, info = env.step(np.append(far, GRIPPER_STROKE))
    assert info.ik_failed
    np.testing.assert_array_equal(env.joint_command, before)


def test_observation_fields() -> None:
    cfg = CellConfig(image_width=160, image_height=120)
    env = PickEnv(cfg)
    try:
        obs, info = env.reset(2)
        for current in (obs, env.step(np.append(env.joint_command, GRIPPER_STROKE))[0]):
            assert current.state.shape == (7,)
            assert current.state.dtype == np.float32
            np.testing.assert_allclose(current.state[:6], current.joints, atol=1e-6)
            assert current.state[6] == pytest.approx(current.gripper_width, abs=1e-6)
            assert current.rgb is not None
            assert current.rgb.shape == (120, 160, 3)
            assert current.rgb.dtype == np.uint8
            assert current.depth_mm is not None
            assert current.depth_mm.shape == (120, 160)
            assert current.depth_mm.dtype == np.uint16
            assert current.instance_map is not None
            assert current.target_mask is not None
            assert current.target_mask.shape == (120, 160)
            assert current.target_mask.any()
            x0, y0, x1, y1 = current.target_box
            assert 0 <= x0 < x1 <= 160
            assert 0 <= y0 < y1 <= 120
            np.testing.assert_array_equal(current.target_box, mask_box(current.target_mask))
            assert current.target_box.dtype == np.float32
            target_idx = [o.instance for o in info.scene.objects].index(info.target)
            np.testing.assert_array_equal(current.target_mask, current.instance_map == target_idx)
            assert current.tcp_pose.shape == (6,)
            np.testing.assert_allclose(current.tcp_pose[:3], forward(current.joints, TCP_OFFSET)[:3, 3], atol=1e-9)
            assert current.wrist_rgb is None
        assert obs.time == 0.0
    finally:
        env.close()


def test_observation_without_rendering_has_no_images() -> None:
    obs, _ = PickEnv(CellConfig(render=False)).reset(0)
    assert obs.rgb is None
    assert obs.depth_mm is None
    assert obs.target_mask is None
    assert obs.instance_map is None
    np.testing.assert_array_equal(obs.target_box, np.zeros(4, dtype=np.float32))


def test_expert_pick_succeeds() -> None:
    env = PickEnv(CellConfig(render=False))
    env.reset(0)
    expert = ScriptedExpert(env)
    expert.reset(0)
    info, reward, terminated, truncated = _run_expert(env, expert)
    assert info.outcome == Outcome.SUCCESS
    assert reward == 1.0
    assert terminated
    assert not truncated
    assert info.target_rise >= 0.10


class _AimedEnv:
    """A view of a PickEnv whose `target` is another object: the expert then grasps that one instead."""

    def __init__(self, env: PickEnv, target: str) -> None:
        self._env = env
        self.target = target

    def __getattr__(self, name: str) -> object:
        return getattr(self._env, name)


def test_lifting_another_object_is_wrong_object() -> None:
    env = PickEnv(CellConfig(render=False))
    scene = sample_scene(0, SceneRequest(names=("red cube", "blue can", "green box")))
    env.reset(0, ResetOptions(scene=scene, target="red cube"))
    expert = ScriptedExpert(
        cast(PickEnv, _AimedEnv(env, "blue_can_0")),
    )
    expert.reset(0)
    info, reward, terminated, truncated = _run_expert(env, expert)
    assert env.target == "red_cube_0"
    assert info.outcome == Outcome.WRONG_OBJECT
    assert reward == 0.0
    assert terminated
    assert not truncated


def test_arm_driven_into_the_table_is_a_collision() -> None:
    # Tool pointing horizontally (+x), then lowered below the table top: the wrist hits the table.
    env = PickEnv(CellConfig(render=False, action_mode=ActionMode.EE))
    scene = sample_scene(0, SceneRequest(names=("red cube",)))
    env.reset(0, ResetOptions(scene=scene))
    sideways = np.array([0.0, np.pi / 2, 0.0])  # axis-angle: tool z onto base +x
    outcome = None
    for z in (0.3, -0.05):
        for _ in range(40):
            _, reward, terminated, truncated, info = env.step(np.concatenate([[0.5, -0.3, z], sideways, [0.085]]))
            outcome = info.outcome
            if outcome is not None:
                break
    assert outcome == Outcome.COLLISION
    assert terminated
    assert not truncated
    assert reward == 0.0


def test_gripper_pressed_down_into_the_table_is_a_collision() -> None:
    env = PickEnv(CellConfig(render=False, action_mode=ActionMode.EE, rules=OutcomeRules(max_episode_s=3.0)))
    scene = sample_scene(0, SceneRequest(names=("red cube",)))
    obs, _ = env.reset(0, ResetOptions(scene=scene))
    goal = obs.tcp_pose.copy()
    goal[:3] = [0.45, 0.1 if scene.objects[0].y < 0 else -0.1, -0.08]  # 8 cm below the table top
    info = None
    for _ in range(60):
        _, _, terminated, truncated, info = env.step(np.append(goal, GRIPPER_STROKE))
        if terminated or truncated:
            break
    assert info is not None
    assert info.outcome == Outcome.COLLISION


@pytest.mark.parametrize(("grip", "expected"), [(GRIPPER_STROKE, Outcome.TIMEOUT), (0.0, Outcome.EMPTY_GRASP)])
def test_time_running_out(grip: float, expected: Outcome) -> None:
    env = PickEnv(CellConfig(render=False, rules=OutcomeRules(max_episode_s=1.0)))
    env.reset(0)
    hold = env.joint_command
    steps = 0
    while True:
        _, reward, terminated, truncated, info = env.step(np.append(hold, grip))
        steps += 1
        if terminated or truncated:
            break
        assert info.outcome is None
    assert info.outcome == expected
    assert truncated
    assert not terminated
    assert reward == 0.0
    assert steps == 20
    assert info.time == pytest.approx(1.0)


def test_scene_spec_is_used_as_given() -> None:
    scene: SceneSpec = sample_scene(11, SceneRequest(names=("white ball", "black box")))
    obs, info = PickEnv(CellConfig(render=False)).reset(99, ResetOptions(scene=scene, target="black box"))
    assert info.scene == scene
    assert info.target == "black_box_0"
    assert obs.time == 0.0


def test_state_before_reset_is_a_clear_error() -> None:
    env = PickEnv(CellConfig(render=False))
    with pytest.raises(RuntimeError, match="reset"):
        _ = env.joint_command
