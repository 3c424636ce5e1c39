"""The corrective expert: a feedback law that picks from the start pose and from states a policy drives into."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from robot.kinematics import forward
from robot.sim.config import CellConfig
from robot.sim.corrective_expert import CorrectiveConfig, CorrectiveExpert
from robot.sim.env import PickEnv
from robot.sim.expert import ExpertConfig, Phase, ScriptedExpert
from robot.sim.mjcf import GRIPPER_STROKE, TCP_OFFSET
from robot.sim.outcome import Outcome, OutcomeRules
from robot.sim.scene import SceneRequest

CELL = CellConfig(render=False, depth=False, scene=SceneRequest(n_objects=(3, 6)), rules=OutcomeRules(max_episode_s=15))


@pytest.fixture(scope="module")
def env() -> Iterator[PickEnv]:
    e = PickEnv(CELL)
    yield e
    e.close()


def drive(env: PickEnv, expert: CorrectiveExpert) -> tuple[Outcome, list[np.ndarray], list[Phase]]:
    labels, phases = [], []
    while True:
        label = expert.label()
        labels.append(label)
        phases.append(expert.phase)
        _, _, terminated, truncated, info = env.step(label)
        if (terminated or truncated) and info.outcome is not None:
            return info.outcome, labels, phases


@pytest.mark.parametrize("seed", [3, 41])
def test_from_the_start_pose_it_picks_the_target(env: PickEnv, seed: int) -> None:
    env.reset(seed)
    expert = CorrectiveExpert(env)
    expert.reset()
    outcome, labels, phases = drive(env, expert)
    assert outcome is Outcome.SUCCESS
    # phases in plan order, each visited; the gripper opens until the close and stays shut after it
    order = [Phase.APPROACH, Phase.DESCEND, Phase.CLOSE, Phase.LIFT]
    firsts = [phases.index(p) for p in order]
    assert firsts == sorted(firsts)
    grip = np.array([lab[6] for lab in labels])
    close_at = firsts[2]
    assert np.all(grip[:close_at] == pytest.approx(GRIPPER_STROKE))
    assert np.all(grip[close_at:] == 0.0)
    # consecutive labels never ask the TCP to move faster than the cap
    tcp = np.array([forward(lab[:6], TCP_OFFSET)[:3, 3] for lab in labels])
    speeds = np.linalg.norm(np.diff(tcp, axis=0), axis=1) / CELL.control_dt
    assert speeds.max() <= CorrectiveConfig().max_speed + 0.02


def test_after_a_close_beside_the_object_it_opens_and_picks(env: PickEnv) -> None:
    seed = 104
    env.reset(seed)
    missing = ScriptedExpert(env, ExpertConfig(miss_prob=1.0, noise_prob=0.0))
    missing.reset(seed)
    while True:  # the scripted expert's first grasp comes down beside the target and closes on nothing
        step = missing.act()
        env.step(step.executed)
        if step.phase is Phase.CLOSE and env.gripper_width < 0.01:
            break
    expert = CorrectiveExpert(env)
    expert.reset()
    first = expert.label()
    assert first[6] == pytest.approx(GRIPPER_STROKE)  # beside the object: open, do not keep closing
    assert expert.phase is Phase.APPROACH
    outcome, _, phases = drive(env, expert)
    assert outcome is Outcome.SUCCESS
    assert Phase.CLOSE in phases


def test_labels_before_reset_are_refused() -> None:
    with PickEnv(CELL) as e, pytest.raises(RuntimeError, match="reset the environment"):
        CorrectiveExpert(e).reset()


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"max_speed": 0.0}, "max_speed must be a positive number"),
        ({"max_speed": 0.3}, "safety layer's TCP cap"),
        ({"align_xy": 0.02}, "align_xy .* must be below descend_xy"),
        ({"settle_s": float("nan")}, "settle_s must be a positive number"),
    ],
)
def test_bad_settings_say_what_is_valid(kw: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CorrectiveConfig(**kw)
