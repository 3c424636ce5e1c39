"""Atomicity under real process death: SIGKILL at random moments, and a hard exit at every commit step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from test_dataset import FPS, make_episode

from pipeline.dataset.check import check_dataset
from pipeline.dataset.layout import INFO_FILE
from pipeline.dataset.reader import Dataset
from pipeline.dataset.writer import DatasetWriter

REPO = Path(__file__).resolve().parents[1]

# The child writes episodes in a loop. With a crash step n >= 0, it dies (os._exit, no cleanup, no flush) at
# the n-th os.replace call of its first episode instead of doing it.
CHILD = """
import os, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from pathlib import Path
from test_dataset import make_episode
from pipeline.dataset.writer import DatasetWriter

root, seed, crash_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
episodes = [make_episode(4 + i % 5, seed=seed + i, task=f"task {{seed + i % 3}}") for i in range(8)]
writer = DatasetWriter(root, {fps})
if crash_at >= 0:
    real_replace, calls = os.replace, [0]
    def dying_replace(src, dst):
        if calls[0] == crash_at:
            os._exit(9)
        calls[0] += 1
        real_replace(src, dst)
    os.replace = dying_replace
print("ready", flush=True)
for i in range(1000):
    writer.add_episode(episodes[i % len(episodes)])
"""


def start_child(script: Path, root: Path, seed: int, crash_at: int = -1) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(script), str(root), str(seed), str(crash_at)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def verify(root: Path) -> int:
    """The dataset opens, every committed episode loads whole, and check_dataset is ok; return its size."""
    report = check_dataset(root)
    assert report.ok, report.problems
    ds = Dataset(root)
    assert report.episodes == len(ds)
    for index in range(len(ds)):
        meta = ds.episode_meta(index)
        data = ds.load_episode(index, depth=True)
        assert data.rgb is not None
        assert data.depth_mm is not None
        assert len(data) == meta.length == data.rgb.shape[0] == data.depth_mm.shape[0]
        assert data.target_mask(meta.length - 1).shape == ds.image_size
    ds_stats = ds.stats
    if len(ds):
        assert ds_stats["observation.state"].count == ds.total_frames
    return len(ds)


def append_one(root: Path, seed: int) -> None:
    before = verify(root)
    with DatasetWriter(root, FPS) as writer:
        assert writer.add_episode(make_episode(3, seed=seed, task="appended")) == before
    after = check_dataset(root)
    assert after.ok, after.problems
    assert after.notes == []
    assert verify(root) == before + 1


def write_script(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), fps=FPS))
    return script


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    script, root = write_script(tmp_path), tmp_path / "ds"
    rng = random.Random(7)
    delays = [0.0, 0.02, *(rng.uniform(0.05, 0.4) for _ in range(4))]
    notes = 0
    for trial, delay in enumerate(delays):
        proc = start_child(script, root, seed=100 * trial)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        notes += len(check_dataset(root).notes)
        append_one(root, seed=100 * trial + 50)
    # Writes were under way: the kills interrupted some of them, leaving leftovers the next writer removed.
    assert notes > 0
    # Every appended episode is there, plus whatever the children committed before their kill (none when the
    # machine is so loaded that each child was killed before its first commit); the dataset is whole either way.
    assert len(Dataset(root)) >= len(delays)
    assert check_dataset(root).ok


def test_hard_exit_at_every_commit_step(tmp_path: Path) -> None:
    script, root = write_script(tmp_path), tmp_path / "ds"
    with DatasetWriter(root, FPS) as writer:
        writer.add_episode(make_episode(3, seed=1, task="first"))
    # An episode with a new task does 7 replaces: data, front video, depth, episode meta, tasks, stats, info.
    for step in range(7):
        proc = start_child(script, root, seed=1000 + 10 * step, crash_at=step)
        assert proc.wait(timeout=20) == 9
        info = json.loads((root / INFO_FILE).read_text())
        assert info["total_episodes"] == 1 + step, f"crash before replace {step} committed an episode"
        report = check_dataset(root)
        assert report.ok, report.problems
        assert report.notes, "the interrupted write should have left files behind"
        append_one(root, seed=2000 + step)
    ds = Dataset(root)
    assert len(ds) == 8
    state = np.concatenate([ds.load_episode(i, images=False).state for i in range(len(ds))])
    np.testing.assert_allclose(ds.stats["observation.state"].mean, state.astype(np.float64).mean(axis=0), atol=1e-5)
