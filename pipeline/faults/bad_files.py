"""Bad-file fault scenarios: damaged or wrong files where a user or a crash can leave them, and a full disk while
caching features. Each must end in a clear error that names the file and says what is wrong; nothing moves; no file
already on disk is damaged by the attempt (a complete feature cache stays readable, a partial one resumes).

- Policy checkpoint (a tiny ACT head on the compact tracker's features, saved as `sam2grasp train` saves it):
  truncated or bit-flipped `model.safetensors`, a config.json naming another feature spec, with an extra key, or
  missing a key. The method's pick in the simulated cell must fail with reason `models_unavailable` before any
  arm command.
- Tracker checkpoint (the compact tracker at 64 px, seeded random weights): truncated, one bit flipped. Same pick.
- Calibration file: made for another camera, written in millimetres, truncated JSON; `sam2grasp calibrate
  --check` must refuse it.
- Dataset: one episode's data parquet truncated after caching; `sam2grasp cache` must refuse the dataset naming
  the file, `sam2grasp dataset-check` must name it, the complete cache must still load.
- Disk full while caching: a child process runs `sam2grasp cache` under a file-size limit
  (`resource.setrlimit(RLIMIT_FSIZE)`, SIGXFSZ ignored: a write past it fails with EFBIG as a full disk fails with
  ENOSPC; see `pipeline.faults.process`). It must exit 2 with a one-line error naming the file, the complete cache
  of the episodes before must stay readable, and a rerun with space must reuse them and compute only the rest.

Units: seconds, bytes. The scenarios import the simulated cell (MuJoCo) and torch lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.faults.core import ScenarioResult

REPO = Path(__file__).resolve().parents[2]
#: A tiny ACT head (width 32, one encoder and one decoder layer) on the compact tracker's pooled4 features.
TINY_HEAD: dict[str, Any] = {
    "feature_spec": "pooled4",
    "token_dim": 64,
    "n_tokens": 17,
    "chunk_size": 5,
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "dropout": 0.0,
}
#: The tracker the tiny head reads: compact at this many pixels, seeded random weights.
TRACKER_PX = 64
#: `sam2grasp cache` options of the compact tracker at 64 px with seeded random weights, on the CPU.
CACHE_ARGS: tuple[str, ...] = ("--tracker", "compact", "--image-size", str(TRACKER_PX), "--allow-random")
CACHE_ARGS += ("--threads", "1", "--device", "cpu")
FPS = 10.0


# ---------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class ModelFiles:
    """A policy checkpoint directory (with the tracker record written by training) and the tracker it reads."""

    head: Path
    tracker: Path


def write_tiny_models(root: Path) -> ModelFiles:
    """The tiny head and tracker under `root` (written once, then reused), checked to load as the method's agent."""
    import torch

    from pipeline.atomic_file import write_json
    from policy.act import ACTPolicy
    from policy.act_config import ACTConfig
    from policy.agent import TRACKER_INFO_FILE, load_agent
    from policy.cache import load_tracker, weights_sha256
    from policy.checkpoint import save_policy
    from policy.sam2_build import save_safetensors, tracker_metadata, tracker_spec

    files = ModelFiles(root / "head", root / "tracker.safetensors")
    if (files.head / TRACKER_INFO_FILE).is_file() and files.tracker.is_file():
        return files
    tracker = load_tracker("compact", image_size=TRACKER_PX, allow_random=True, seed=0)
    save_safetensors(tracker.model, files.tracker, tracker_metadata(tracker_spec("compact", TRACKER_PX)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_policy(files.head, ACTPolicy(ACTConfig(**TINY_HEAD)))
    record = {"tracker": "compact", "image_size": TRACKER_PX, "weights_sha256": weights_sha256(tracker.model)}
    write_json(files.head / TRACKER_INFO_FILE, record | {"features": TINY_HEAD["feature_spec"]})
    load_agent(files.head, files.tracker)  # the undamaged files load: a refusal later is the damage's doing
    return files


def file_digests(*paths: Path) -> dict[str, str]:
    """sha256 of every file at or under `paths` (path -> hex), to tell whether anything was rewritten."""
    out: dict[str, str] = {}
    for base in paths:
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut `path` to `keep` of its bytes (a copy interrupted, a disk that lost the tail)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_bit(path: Path, offset_share: float = 0.75, bit: int = 0) -> int:
    """Flip bit `bit` of the byte at `offset_share` of the way through a safetensors file's data (past its
    header, so the file still parses); the byte offset flipped."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    offset = header + int((len(data) - header) * offset_share)
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))
    return offset


def edit_config(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the "config" object of a checkpoint's config.json (a hand edit, or a damaged file)."""
    doc = json.loads(path.read_text())
    change(doc["config"])
    path.write_text(json.dumps(doc, indent=2))


def run_cli(*argv: str) -> tuple[int, str]:
    """`sam2grasp ARGV` in this process: exit status and what it printed (stdout then stderr); status -1 and the
    exception when the command crashed (a traceback instead of an error message: the finding of a scenario)."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
    except Exception as exc:
        return -1, f"crashed: {type(exc).__name__}: {exc}"
    return status, out.getvalue() + err.getvalue()


def _verdict(
    name: str, refused: bool | None, message: str, file: Path, moved: bool, intact: bool, **extra: Any
) -> ScenarioResult:
    """The row of a scenario that must end in a clear error naming `file` with nothing moved (`refused`: the
    file was refused; None: the code crashed on it)."""
    if moved:
        end = "moved"
    elif refused is None:
        end = "crash"
    elif not refused:
        end = "accepted"
    else:
        end = "error" if str(file) in message else "unclear_error"
    return ScenarioResult(
        scenario=name,
        expected_end_state="error",
        end_state=end,
        reason=str(extra.pop("reason", "")) or message.split(":", 1)[0][:40],
        data_intact=intact,
        detail=message[:600],
        extra={"file": str(file), "moved": moved, **extra},
    )


# ---------------------------------------------------------------------------------------------- model files
def method_pick(files: ModelFiles) -> tuple[Any, bool, list[str]]:
    """The method's pick in the simulated cell with `files`: (outcome, whether the arm was commanded, states)."""
    from pipeline.jobs.cell import PickOutcome
    from pipeline.jobs.sim_cell import SimCell
    from pipeline.jobs.sim_config import SimCellConfig
    from pipeline.jobs.state import Controller, JobState, Target

    config = SimCellConfig(
        seed=3, pace=0, names=("red cube", "green cup"), max_pick_s=1.0, head=files.head, tracker=files.tracker
    )
    cell = SimCell(config)
    states: list[str] = []
    try:
        before = cell.health()["robot"]
        target = Target("red cube", (120.0, 80.0, 200.0, 160.0), 0.9, cell.scene.objects[0].instance)

        def on_state(state: JobState) -> None:
            states.append(state.value)

        try:
            outcome = cell.pick(target, Controller.METHOD, on_state, threading.Event())
        except Exception as exc:  # a traceback instead of an outcome: this scenario's finding, not the bench's end
            outcome = PickOutcome(False, "crash", f"{type(exc).__name__}: {exc}")
        after = cell.health()["robot"]
    finally:
        cell.close()
    moved = (
        after["joint_target_rad"] != before["joint_target_rad"]
        or after["first_command_at"] is not None
        or bool(after["moving"])
    )
    return outcome, moved, states


def damaged_model(
    name: str, root: Path, relative: str, damage: Callable[[Path], object], reason: str = "models_unavailable"
) -> ScenarioResult:
    """Copy the tiny models under `root`, `damage` the copy's file at `relative` (head/model.safetensors,
    head/config.json, tracker.safetensors), run the method's pick: it must fail with `reason` before moving."""
    good = write_tiny_models(root / "good")
    work = root / name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(good.head, work / "head")
    shutil.copy2(good.tracker, work / "tracker.safetensors")
    files = ModelFiles(work / "head", work / "tracker.safetensors")
    originals = file_digests(good.head, good.tracker)
    damage(work / relative)
    after_damage = file_digests(files.head, files.tracker)
    outcome, moved, states = method_pick(files)
    intact = file_digests(good.head, good.tracker) == originals
    intact = intact and file_digests(files.head, files.tracker) == after_damage  # the attempt rewrote nothing
    refused = None if outcome.reason == "crash" else not outcome.success and outcome.reason == reason
    file = work / relative
    return _verdict(name, refused, outcome.detail, file, moved, intact, reason=outcome.reason, states=states)


#: The model-file scenarios: the file damaged (relative to a models copy) and how.
MODEL_DAMAGE: dict[str, tuple[str, Callable[[Path], object]]] = {
    "bad_policy_truncated": ("head/model.safetensors", truncate),
    "bad_policy_bit_flip": ("head/model.safetensors", flip_bit),
    "bad_policy_feature_spec": (
        "head/config.json",
        lambda p: edit_config(p, lambda c: c.update(feature_spec="pooled2", n_tokens=5)),
    ),
    "bad_policy_config_extra_key": ("head/config.json", lambda p: edit_config(p, lambda c: c.update(decoder_depth=2))),
    "bad_policy_config_missing_key": ("head/config.json", lambda p: edit_config(p, lambda c: c.pop("chunk_size"))),
    "bad_tracker_truncated": ("tracker.safetensors", truncate),
    "bad_tracker_bit_flip": ("tracker.safetensors", lambda p: flip_bit(p, bit=3)),
}


# ---------------------------------------------------------------------------------------------- calibration
def bad_calibration(
    name: str, root: Path, serial: str, write: Callable[[dict[str, Any]], str], reason: str
) -> ScenarioResult:
    """Write a calibration file made by `write` from a valid document, then `sam2grasp calibrate --check FILE
    --serial SERIAL`: it must exit 2 naming the file and leave the file as it was (`reason`: the row's reason)."""
    from robot.calibration import CameraCalibration
    from robot.charuco import pose_matrix

    good = CameraCalibration(
        "123456789012", pose_matrix([0.9, -0.2, 0.6], [1.2, 0.05, 0.7]), 0.3, "2026-11-28T09:00:00+00:00", 12
    )
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.json"
    path.write_text(write(good.to_json()))
    before = file_digests(path)
    status, message = run_cli("calibrate", "--check", str(path), "--serial", serial)
    intact = file_digests(path) == before
    refused = None if status == -1 else status == 2
    return _verdict(name, refused, message.strip(), path, False, intact, reason=reason, exit_status=status)


def _millimetres(doc: dict[str, Any]) -> str:
    rows = [list(r) for r in doc["T_base_camera"]]
    for row in rows[:3]:
        row[3] *= 1000.0
    return json.dumps(doc | {"T_base_camera": rows}, indent=2)


# ---------------------------------------------------------------------------------------------- datasets, caches
def _write_dataset(root: Path, lengths: list[int]) -> None:
    from pipeline.dataset.writer import DatasetWriter
    from pipeline.faults.process import synthetic_episode

    with DatasetWriter(root, FPS) as writer:
        for i, n in enumerate(lengths):
            writer.add_episode(synthetic_episode(n, seed=10 + i))  # type: ignore[arg-type]


def _cache_dir(data: Path) -> Path:
    dirs = [p for p in (data / "cache").iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"expected one cache key under {data / 'cache'}, found {[p.name for p in dirs]}")
    return dirs[0]


def _cache_files(directory: Path) -> dict[str, str]:
    """Digests of a cache's manifest and episode files (its shard records are rewritten by every run)."""
    return file_digests(directory / "manifest.json", *sorted(directory.glob("ep-*.safetensors")))


def _cache_loads(directory: Path, episodes: int) -> bool:
    """The cache at `directory` is complete and every one of its `episodes` episodes loads."""
    from policy.cache_store import FeatureCache

    cache = FeatureCache(directory)
    return cache.episodes == tuple(range(episodes)) and all(len(cache.load(e)) > 0 for e in range(episodes))


def truncated_episode(root: Path) -> ScenarioResult:
    """Cache a 3-episode dataset, truncate episode 1's data parquet, rerun `sam2grasp cache`: it must exit 2
    naming the parquet; `dataset-check` must name it; the complete cache and the other episodes must still load."""
    from pipeline.dataset.layout import DATA_PATH, episode_path
    from pipeline.dataset.reader import Dataset

    data = root / "truncated_episode"
    shutil.rmtree(data, ignore_errors=True)
    _write_dataset(data, [4, 4, 6])
    first, _ = run_cli("cache", "--data", str(data), *CACHE_ARGS)
    cache = _cache_dir(data)
    cached = _cache_files(cache)
    parquet = episode_path(data, DATA_PATH, 1)
    truncate(parquet)
    status, message = run_cli("cache", "--data", str(data), *CACHE_ARGS)
    check_status, check = run_cli("dataset-check", str(data))
    names_it = parquet.name in check and check_status == 1
    dataset = Dataset(data)
    others = all(len(dataset.load_episode(e, images=False)) > 0 for e in (0, 2))
    intact = first == 0 and _cache_files(cache) == cached and _cache_loads(cache, 3) and others and names_it
    return _verdict(
        "bad_dataset_truncated_episode",
        None if status == -1 else status == 2,
        message.strip(),
        parquet,
        False,
        intact,
        reason="unreadable parquet",
        exit_status=status,
        dataset_check=check.strip()[-400:],
    )


_CACHE_CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""


def disk_full_caching(root: Path, limit_bytes: int = 12_000) -> ScenarioResult:
    """Cache 3 short episodes, add a longer one, cache again with every file capped at `limit_bytes` (the full disk
    stand-in: the new episode's features do not fit, the small JSON records do): exit 2 with one line naming the
    episode file, the complete cache of the first three still loads, no temp file is left; with space back, the
    rerun reuses the three and computes only the new one."""
    from pipeline.dataset.writer import DatasetWriter
    from pipeline.faults.process import synthetic_episode
    from policy.cache_store import episode_file

    data = root / "disk_full_caching"
    shutil.rmtree(data, ignore_errors=True)
    _write_dataset(data, [4, 4, 4])
    first, _ = run_cli("cache", "--data", str(data), *CACHE_ARGS)
    cache = _cache_dir(data)
    with DatasetWriter(data, FPS) as writer:
        writer.add_episode(synthetic_episode(12, seed=20))  # type: ignore[arg-type]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", _CACHE_CHILD, str(limit_bytes), "cache", "--data", str(data), *CACHE_ARGS]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    message = (proc.stderr.strip() or proc.stdout.strip())[-600:]
    one_line = "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    readable = _cache_loads(cache, 3) and not list(cache.glob("*.tmp"))
    status, report = run_cli("cache", "--data", str(data), *CACHE_ARGS, "--json")
    rerun = json.JSONDecoder().raw_decode(report[report.index("{") :])[0] if status == 0 else {}
    resumed = rerun.get("computed") == 1 and rerun.get("reused") == 3 and _cache_loads(cache, 4)
    return _verdict(
        "process_disk_full_caching",
        proc.returncode == 2 and one_line,
        message,
        episode_file(cache, 3),
        False,
        first == 0 and readable and resumed,
        reason="no space",
        exit_status=proc.returncode,
        limit_bytes=limit_bytes,
        rerun={"computed": rerun.get("computed"), "reused": rerun.get("reused")},
    )


# ---------------------------------------------------------------------------------------------- registry
def bad_file_scenarios(tmp: Path) -> dict[str, Callable[[], ScenarioResult]]:
    """Every bad-file scenario by name (table order), writing under `tmp`."""
    models = tmp / "models"
    calibration = tmp / "calibration"

    def other_camera(doc: dict[str, Any]) -> str:
        return json.dumps(doc, indent=2)

    def cut_json(doc: dict[str, Any]) -> str:
        text = json.dumps(doc, indent=2)
        return text[: len(text) // 2]

    def model(name: str) -> Callable[[], ScenarioResult]:
        return lambda: damaged_model(name, models, *MODEL_DAMAGE[name])

    return {
        **{name: model(name) for name in MODEL_DAMAGE},
        "bad_calibration_other_camera": lambda: bad_calibration(
            "bad_calibration_other_camera", calibration, "999999999999", other_camera, "another camera's file"
        ),
        "bad_calibration_millimetres": lambda: bad_calibration(
            "bad_calibration_millimetres", calibration, "123456789012", _millimetres, "millimetres"
        ),
        "bad_calibration_truncated": lambda: bad_calibration(
            "bad_calibration_truncated", calibration, "123456789012", cut_json, "invalid JSON"
        ),
        "bad_dataset_truncated_episode": lambda: truncated_episode(tmp / "data"),
        "process_disk_full_caching": lambda: disk_full_caching(tmp / "data"),
    }
