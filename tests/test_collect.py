"""`sam2grasp collect` end to end: a small dataset that checks clean, holds what the simulator saw, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.collect import CollectConfig, collect
from pipeline.dataset.check import check_dataset
from pipeline.dataset.reader import Dataset
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv
from robot.sim.scene import SceneRequest

SMALL = CellConfig(image_width=96, image_height=72, scene=SceneRequest(n_objects=(3, 4)))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "ds"
    report = collect(CollectConfig(out=out, episodes=3, seed=10, cell=SMALL), progress=False)
    assert report.episodes == 3
    assert report.attempts >= 3
    assert 0 < report.expert_success_rate <= 1
    return out


def test_dataset_checks_clean_and_matches_the_simulation(small_dataset: Path) -> None:
    report = check_dataset(small_dataset)
    assert report.ok, report.problems
    ds = Dataset(small_dataset)
    assert len(ds) == 3
    assert ds.fps == pytest.approx(20.0)
    assert ds.image_size == (72, 96)
    for i in range(len(ds)):
        meta = ds.episode_meta(i)
        assert meta.outcome == "success"
        assert meta.task.startswith("pick the ")
        assert meta.target in {o.instance for o in meta.objects}
        assert 3 <= len(meta.objects) <= 4
        ep = ds.load_episode(i)
        assert ep.rgb is not None
        assert ep.rgb.shape == (meta.length, 72, 96, 3)
        # labels are the expert's joint targets: close to the next measured state while the arm moves freely
        assert np.all(np.isfinite(ep.action))
        assert np.abs(ep.action[:-1, :6] - ep.state[1:, :6]).mean() < 0.05
        # the gripper ends closed on the object, the target lifted: its box moved up in the image
        assert ep.state[-1, 6] < 0.07
        first = ep.target_box[0]
        assert first[2] > first[0]
        assert first[3] > first[1]
        mask0 = ep.target_mask(0)
        ys, xs = np.nonzero(mask0)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(first.astype(int))
        np.testing.assert_allclose(np.diff(ep.timestamps), 0.05, atol=1e-4)


def test_targets_are_drawn_among_the_objects() -> None:
    """Multi-modal by construction: across seeds the target is any of the scene's objects, not a fixed one."""
    env = PickEnv(CellConfig(render=False, scene=SceneRequest(n_objects=(6, 6))))
    positions = []
    for seed in range(30):
        _, info = env.reset(seed)
        positions.append([o.instance for o in info.scene.objects].index(info.target))
    assert len(set(positions)) >= 4  # the target's slot in the scene varies
    assert max(positions.count(i) for i in range(6)) < 15  # no slot dominates


def test_collect_resumes_after_the_last_seed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    collect(CollectConfig(out=out, episodes=1, seed=5, cell=SMALL), progress=False)
    report = collect(CollectConfig(out=out, episodes=2, seed=5, cell=SMALL), progress=False)
    assert report.episodes == 2
    assert report.attempts == 1
    ds = Dataset(out)
    assert [ds.episode_meta(i).seed for i in range(2)] == [5, 6]


def test_cli_collect_json_and_dataset_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    args = ["collect", "--episodes", "1", "--objects", "3", "--seed", "1", "--out", str(out)]
    assert main([*args, "--width", "64", "--height", "48", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"episodes", "frames", "expert_success_rate", "seconds"} <= set(printed)
    assert printed["episodes"] == 1
    assert printed["frames"] > 20
    assert main(["dataset-check", str(out)]) == 0
    # a broken dataset: remove the video of episode 0
    next((out / "videos" / "observation.images.front").rglob("*.mp4")).unlink()
    assert main(["dataset-check", str(out)]) == 1
    assert "mp4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["collect", "--episodes", "0", "--out", "X"], "positive"),
        (["collect", "--episodes", "1", "--objects", "2-9", "--out", "X"], "1..6"),
        (["collect", "--episodes", "1", "--seed", "-3", "--out", "X"], "kept for evaluation"),
        (["collect", "--episodes", "1", "--seed", "10000000", "--out", "X"], "kept for evaluation"),
        (["collect", "--episodes", "1", "--width", "33", "--out", "X"], "even"),
    ],
)
def test_cli_collect_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
