"""`sam2grasp dagger`: a policy drives, the corrective expert takes over; the frames the policy drove are kept out
of the loss through the dataset's per-frame `action.learn` flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from test_agent import tiny_head
from test_dataset import FPS, make_episode

from pipeline.dagger import DaggerConfig, dagger, run_rollout
from pipeline.dataset.check import check_dataset
from pipeline.dataset.layout import DATA_PATH, LEARN_KEY, episode_path
from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode
from pipeline.dataset.writer import DatasetWriter
from pipeline.evaluate import eval_safety_layer
from pipeline.train_policy import episode_targets
from policy.agent import SAM2GraspAgent
from policy.cache import load_tracker
from policy.features import parse_feature_spec
from robot.sim.config import CellConfig
from robot.sim.corrective_expert import CorrectiveExpert
from robot.sim.env import PickEnv
from robot.sim.outcome import Outcome, OutcomeRules
from robot.sim.scene import EVAL_SEED_BASE, SceneRequest

torch.set_num_threads(1)

CELL = CellConfig(
    image_width=96, image_height=72, scene=SceneRequest(n_objects=(3, 4)), rules=OutcomeRules(max_episode_s=12)
)


def with_learn(episode: Episode, flags: list[bool]) -> Episode:
    frames = tuple(dataclasses.replace(f, learn=flag) for f, flag in zip(episode.frames, flags, strict=True))
    return dataclasses.replace(episode, frames=frames)


def test_learn_flags_round_trip_and_a_dataset_without_them_learns_everything(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    flags = [False, False, True, True, True, True]
    with DatasetWriter(root, FPS) as writer:
        writer.add_episode(with_learn(make_episode(6, seed=1), flags))
        writer.add_episode(make_episode(4, seed=2))
    assert check_dataset(root).ok
    ds = Dataset(root)
    assert ds.load_episode(0, images=False).learn.tolist() == flags
    assert ds.load_episode(1, images=False).learn.tolist() == [True] * 4
    # a dataset written before the column existed: every label is learned
    path = episode_path(root, DATA_PATH, 0)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([LEARN_KEY]), path)
    assert Dataset(root).load_episode(0, images=False).learn.tolist() == [True] * 6


def test_frames_not_to_learn_are_ignored_in_every_column() -> None:
    action = np.zeros((5, 7), np.float32)
    action[:, 6] = 0.085
    learn = np.array([False, False, True, True, True])
    _, ignore = episode_targets(action, "joint", learn=learn)
    assert ignore is not None
    assert ignore[:2].all()
    assert not ignore[2:].any()
    # together with the undone-close rule: a close the episode opens again stays ignored too
    action[3, 6] = 0.0
    _, ignore = episode_targets(action, "joint", learn=learn)
    assert ignore is not None
    assert ignore[:2].all()
    assert ignore[3, 6]
    assert not ignore[2].any()
    assert not ignore[4].any()
    _, none = episode_targets(action[[0, 1, 2, 4]], "joint", learn=np.ones(4, bool))
    assert none is not None
    assert not none.any()
    with pytest.raises(ValueError, match="one flag per frame"):
        episode_targets(action, "joint", learn=np.ones(3, bool))


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"seed": EVAL_SEED_BASE}, "kept for evaluation scenes"),
        ({"episodes": 0}, "positive integer"),
        ({"takeover_min_s": 3.0, "takeover_max_s": 2.0}, "takeover window"),
        ({"takeover_max_s": 12.0}, "takeover window"),
        ({"cell": dataclasses.replace(CELL, depth=False)}, "render and depth must be on"),
    ],
)
def test_bad_settings_say_what_is_valid(tmp_path: Path, kw: dict[str, object], words: str) -> None:
    fields: dict[str, object] = {"out": tmp_path, "episodes": 2, "seed": 5, "cell": CELL, **kw}
    with pytest.raises(ValueError, match=words):
        DaggerConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def agent() -> SAM2GraspAgent:
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    return SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), tiny_head())


def test_the_policy_drives_until_the_takeover_and_only_the_expert_is_learned(
    agent: SAM2GraspAgent, tmp_path: Path
) -> None:
    env = PickEnv(CELL)
    try:
        expert = CorrectiveExpert(env)
        rollout = run_rollout(env, agent, expert, eval_safety_layer(CELL.control_dt), 21, takeover_s=0.3)
    finally:
        env.close()
    frames = rollout.episode.frames
    assert rollout.takeover in ("close", "time")
    assert 0 < rollout.takeover_step <= round(0.3 / CELL.control_dt)
    assert [f.learn for f in frames] == [t >= rollout.takeover_step for t in range(len(frames))]
    assert rollout.episode.outcome == Outcome.SUCCESS.value  # the expert finishes from where the policy left it
    assert all(np.all(np.isfinite(f.action)) for f in frames)

    # the command appends kept episodes and resumes after the last seed
    out = tmp_path / "dagger"
    config = DaggerConfig(out=out, episodes=1, seed=30, cell=CELL, takeover_min_s=0.2, takeover_max_s=0.4)
    report = dagger(config, agent, progress=False)
    assert (report.episodes, report.kept) == (1, 1)
    assert report.rollouts == report.policy_successes + sum(report.takeovers.values())
    report = dagger(dataclasses.replace(config, episodes=2), agent, progress=False)
    assert report.episodes == 2
    ds = Dataset(out)
    assert [ds.episode_meta(i).seed for i in range(2)] == [30, 30 + report.rollouts]
    for i in range(2):  # each episode: the policy's frames (maybe none), then the expert's to the end
        learn = ds.load_episode(i, images=False).learn.tolist()
        first = learn.index(True)
        assert learn == [False] * first + [True] * (len(learn) - first)
    assert check_dataset(out).ok


def test_cli_refuses_bad_input_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    base = ["dagger", "--tracker-checkpoint", "t.safetensors", "--episodes", "2", "--out", str(tmp_path / "d")]
    assert main([*base, "--policy", str(tmp_path), "--seed", str(EVAL_SEED_BASE)]) == 2
    assert "kept for evaluation scenes" in capsys.readouterr().err
    assert main([*base, "--policy", str(tmp_path / "none"), "--seed", "5"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    with pytest.raises(SystemExit):
        main(["dagger", "--help"])
    assert "examples:" in capsys.readouterr().out
