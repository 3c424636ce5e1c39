"""Process fault scenarios: SIGKILL during head training (it resumes from the last checkpoint), and a full disk
while recording a dataset. The full disk is stood in for by a child process whose file-size limit
(`resource.setrlimit(RLIMIT_FSIZE)`, SIGXFSZ ignored) makes every write past the limit fail with EFBIG, as a full
disk fails with ENOSPC. SIGKILL during `collect` and during `cache` are covered by tests/test_dataset_kill.py and
tests/test_cache.py (`bench/faults.py` runs those tests). Units: seconds, bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.faults.core import ScenarioResult

REPO = Path(__file__).resolve().parents[2]
FPS = 10.0


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def synthetic_episode(n_frames: int, seed: int, size: tuple[int, int] = (48, 64)) -> object:
    """A small episode of noisy frames (hard to compress: the video files grow with `n_frames`)."""
    from pipeline.dataset.records import Episode, Frame, ObjectRecord

    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_frames):
        mask = np.zeros(size, dtype=np.bool_)
        mask[10:20, 10:30] = True
        frames.append(
            Frame(
                rgb=rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                depth_mm=rng.integers(300, 2000, size, dtype=np.uint16),
                state=np.full(7, 0.01 * t, np.float32),
                action=np.full(7, 0.01 * (t + 1), np.float32),
                ee_pose=np.zeros(7, np.float32),
                target_box=np.array([10, 10, 30, 20], dtype=np.float32),
                target_mask=mask,
                timestamp=t / FPS,
            )
        )
    cube = ObjectRecord("red_cube_0", "red cube", "red", "cube", (0.4, 0.1, 0.02), (1.0, 0.0, 0.0, 0.0), (1, 2, 3, 4))
    return Episode("pick the red cube", "red_cube_0", seed, "success", FPS, (cube,), tuple(frames))


_RECORD_CHILD = """
import resource, signal, sys
from pathlib import Path
from pipeline.dataset.writer import DatasetWriter
from pipeline.faults.process import FPS, synthetic_episode
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    with DatasetWriter(Path(sys.argv[1]), FPS) as writer:
        writer.add_episode(synthetic_episode(80, seed=5))
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", flush=True)
    sys.exit(3)
sys.exit(0)
"""


def disk_full_recording(root: Path, limit_bytes: int = 40_000) -> ScenarioResult:
    """Record one episode, then try to record a large one with writes capped at `limit_bytes` per file (the full
    disk stand-in): the write must fail with a clear error, the dataset must still check out with its one
    episode, and once space is back the next episode is added."""
    from pipeline.dataset.check import check_dataset
    from pipeline.dataset.reader import Dataset
    from pipeline.dataset.writer import DatasetWriter

    with DatasetWriter(root, FPS) as writer:
        writer.add_episode(synthetic_episode(3, seed=1))  # type: ignore[arg-type]
    proc = subprocess.run(
        [sys.executable, "-c", _RECORD_CHILD, str(root), str(limit_bytes)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    message = (proc.stdout.strip().splitlines() or [proc.stderr.strip()[-300:]])[-1]
    report = check_dataset(root)
    intact = report.ok and len(Dataset(root)) == 1
    with DatasetWriter(root, FPS) as writer:
        writer.add_episode(synthetic_episode(3, seed=2))  # type: ignore[arg-type]
    after = check_dataset(root)
    intact = intact and after.ok and len(Dataset(root)) == 2
    return ScenarioResult(
        scenario="process_disk_full_recording",
        expected_end_state="error",
        end_state="error" if proc.returncode == 3 else f"exit {proc.returncode}",
        reason=message.split(":", 1)[0],
        data_intact=intact,
        detail=message,
        extra={"problems": list(report.problems), "notes": list(report.notes), "limit_bytes": limit_bytes},
    )


_TRAIN_CHILD = """
import sys, torch
torch.set_num_threads(1)
from pipeline.faults.process import train_tiny
train_tiny(sys.argv[1])
"""


def train_tiny(out: str) -> None:
    """A tiny head trained on synthetic cached features, one resume checkpoint per epoch (the kill target)."""
    from policy.act_config import ACTConfig
    from policy.chunks import EpisodeArrays
    from policy.train_head import HeadTrainConfig, train_head

    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(4):
        n = 16
        state = np.cumsum(rng.normal(0, 0.05, (n, 7)), axis=0).astype(np.float32)
        episodes.append(
            EpisodeArrays(
                tokens=rng.normal(size=(n, 1, 8)).astype(np.float16),
                extras=np.zeros((n, 7), np.float32),
                state=state,
                action=np.roll(state, -1, axis=0),
            )
        )
    config = ACTConfig(
        feature_spec="pointer",
        token_dim=8,
        n_tokens=1,
        chunk_size=5,
        dim_model=32,
        n_heads=2,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        dropout=0.0,
    )
    train = HeadTrainConfig(epochs=20, batch_size=8, lr=1e-3, warmup_steps=3)
    train_head(episodes, [], config, train, Path(out), log=lambda s: print(s, flush=True))


def kill_during_train(out: Path, timeout_s: float = 120.0) -> ScenarioResult:
    """SIGKILL a head-training process once it has written a resume checkpoint; the rerun must resume from that
    checkpoint (not from step 0) and finish with a loadable policy."""
    from policy.checkpoint import load_policy

    args = [sys.executable, "-c", _TRAIN_CHILD, str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    progress = out / "resume" / "progress.json"
    deadline = time.monotonic() + timeout_s
    killed_at = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.is_file():
            try:
                killed_at = int(json.loads(progress.read_text())["step"])
            except (ValueError, KeyError):
                killed_at = 0
            if killed_at > 0:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rerun = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=timeout_s)
    resumed = [json.loads(line) for line in rerun.stdout.splitlines() if line.startswith('{"resumed"')]
    resumed_step = int(resumed[0]["step"]) if resumed else 0
    intact = rerun.returncode == 0
    try:
        load_policy(out / "policy")
        report = json.loads((out / "report.json").read_text())
        intact = intact and report["steps"] == report["total_steps"]
    except (OSError, ValueError, KeyError) as exc:
        intact, report = False, {"error": str(exc)}
    ok = proc.returncode == -signal.SIGKILL and resumed_step >= killed_at > 0
    return ScenarioResult(
        scenario="process_kill_during_train",
        expected_end_state="resumed",
        end_state="resumed" if ok else "restarted",
        reason="SIGKILL",
        data_intact=intact,
        detail=f"killed after step {killed_at}, rerun resumed at step {resumed_step}",
        extra={"killed_at_step": killed_at, "resumed_at_step": resumed_step, "steps": report.get("steps")},
    )


def existing_kill_test(node: str, name: str) -> ScenarioResult:
    """Run an existing kill test (tests/test_dataset_kill.py, tests/test_cache.py) in a subprocess: they are the
    kill scenarios for `collect` and `cache`, reused here rather than duplicated."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{node}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env(), timeout=600)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return ScenarioResult(
        scenario=name,
        expected_end_state="resumed",
        end_state="resumed" if proc.returncode == 0 else "failed",
        reason="SIGKILL",
        data_intact=proc.returncode == 0,
        detail=f"{node}: {last}",
    )
