"""Feature cache: round trip against a streaming run, reuse, keys, invalidation, kills, shards + merge, and the CLI.

Small on purpose: synthetic episodes at 64x48 and the compact tracker at 64 px with seeded random weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.cli import main
from pipeline.dataset.layout import DATA_PATH, episode_path
from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.writer import DatasetWriter
from policy.cache import Shard, build_cache, cache_key, load_tracker, merge_cache, parse_shard
from policy.cache_store import CacheError, FeatureCache, episode_file
from policy.features import extract, parse_feature_spec
from policy.tracker import SAM2Tracker

torch.set_num_threads(1)

SIZE = (48, 64)
POOLED4 = parse_feature_spec("pooled4")
RANDOM = ["--tracker", "compact", "--image-size", "64", "--allow-random", "--threads", "1"]


def make_episode(n_frames: int, seed: int, *, hidden_at_start: bool = False) -> Episode:
    """A coloured rectangle drifting over a gradient; its box is the target box of every frame (absent from frame 0
    when `hidden_at_start`)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    colour = rng.integers(80, 255, 3).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 2, yy * 3, xx + yy], axis=-1).clip(0, 255).astype(np.uint8)
    frames = []
    for t in range(n_frames):
        rgb = background.copy()
        mask = np.zeros(SIZE, dtype=np.bool_)
        x0, y0 = 4 + (t + seed) % 30, 6 + (t + 2 * seed) % 20
        hidden = hidden_at_start and t == 0
        if not hidden:
            rgb[y0 : y0 + 12, x0 : x0 + 16] = colour
            mask[y0 : y0 + 12, x0 : x0 + 16] = True
        box = [0, 0, 0, 0] if hidden else [x0, y0, x0 + 16, y0 + 12]
        frames.append(
            Frame(
                rgb=rgb,
                depth_mm=np.full(SIZE, 900, dtype=np.uint16),
                state=np.zeros(7, np.float32),
                action=np.zeros(7, np.float32),
                ee_pose=np.zeros(7, np.float32),
                target_box=np.array(box, dtype=np.float32),
                target_mask=mask,
                timestamp=t / 10.0,
            )
        )
    cube = ObjectRecord("red_cube_1", "red cube", "red", "cube", (0.4, 0.1, 0.02), (1.0, 0.0, 0.0, 0.0), (1, 2, 3, 4))
    return Episode("pick the red cube", "red_cube_1", seed, "success", 10.0, (cube,), tuple(frames))


def write_dataset(root: Path, lengths: list[int]) -> Path:
    with DatasetWriter(root, 10.0) as writer:
        for i, n in enumerate(lengths):
            writer.add_episode(make_episode(n, seed=i + 1))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cache") / "ds", [6, 4, 5])


@pytest.fixture
def data(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the shared dataset (tests may modify it)."""
    return Path(shutil.copytree(dataset, tmp_path / "ds"))


@pytest.fixture(scope="module")
def tracker() -> SAM2Tracker:
    return load_tracker("compact", image_size=64, allow_random=True, seed=0)


def run_cli(*argv: str) -> int:
    return main(list(argv))


def streaming_features(data: Path, episode: int, tracker: SAM2Tracker) -> tuple[np.ndarray, ...]:
    ds = Dataset(data)
    ep = ds.load_episode(episode)
    if ep.rgb is None:
        raise AssertionError("episode loaded without images")
    steps = [tracker.start(ep.rgb[0], ep.target_box[0])] + [tracker.step(f) for f in ep.rgb[1:]]
    feats = [extract(s, POOLED4) for s in steps]
    return (
        np.stack([f.tokens for f in feats]).astype(np.float16),
        np.stack([f.extras for f in feats]),
        np.stack([s.box for s in steps]),
        np.array([s.object_score for s in steps], dtype=np.float32),
    )


# ---------------------------------------------------------------- round trip, reuse, keys


def test_cache_round_trip_matches_streaming(data: Path, tracker: SAM2Tracker) -> None:
    key = cache_key("compact", tracker, POOLED4)
    report = build_cache(data, tracker, key, progress=False)
    assert (report.episodes, report.frames, report.computed, report.reused, report.complete) == (3, 15, 3, 0, True)
    assert report.frames_per_s > 0
    assert report.bytes > 0
    cache = FeatureCache(Path(report.path))
    assert cache.episodes == (0, 1, 2)
    assert cache.frames == 15
    assert cache.spec == POOLED4
    assert cache.token_shape == (17, 64)
    for e, length in enumerate([6, 4, 5]):
        got = cache.load(e, dtype="float16")
        assert got.tokens.dtype == np.float16
        assert got.tokens.shape == (length, 17, 64)
        assert len(got) == length
        tokens, extras, boxes, scores = streaming_features(data, e, tracker)
        np.testing.assert_allclose(got.tokens.astype(np.float32), tokens.astype(np.float32), atol=1e-3, rtol=1e-3)
        np.testing.assert_allclose(got.extras, extras, atol=1e-5)
        np.testing.assert_array_equal(got.boxes, boxes)
        np.testing.assert_allclose(got.scores, scores, atol=1e-5)
        assert cache.load(e).tokens.dtype == np.float32
    assert cache.verify(data) == []
    with pytest.raises(CacheError, match=r"episode 7 is not in the cache .*episodes 0\.\.2"):
        cache.load(7)


def test_rerun_reuses_and_leftover_temp_is_removed(data: Path, tracker: SAM2Tracker) -> None:
    key = cache_key("compact", tracker, POOLED4)
    first = build_cache(data, tracker, key, progress=False)
    files = sorted(Path(first.path).glob("ep-*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    leftover = Path(first.path) / "ep-000001.safetensors.x1y2z3.tmp"
    leftover.write_bytes(b"half a file")
    again = build_cache(data, tracker, key, progress=False)
    assert (again.computed, again.reused, again.frames_per_s) == (0, 3, 0.0)
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert not leftover.exists()
    files[2].write_bytes(files[2].read_bytes()[:-8])  # a damaged file is recomputed, not read
    third = build_cache(data, tracker, key, progress=False)
    assert (third.computed, third.reused) == (1, 2)
    assert len(FeatureCache(Path(third.path)).load(2)) == 5


def test_changed_spec_or_image_size_is_another_key(data: Path, tracker: SAM2Tracker) -> None:
    base = build_cache(data, tracker, cache_key("compact", tracker, POOLED4), progress=False)
    masked = build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec("masked")), progress=False)
    assert masked.key != base.key
    assert masked.computed == 3
    assert FeatureCache(Path(masked.path)).load(0).tokens.shape == (6, 3, 64)
    shape_key = cache_key("compact", tracker, parse_feature_spec("pooled4+shape"))
    shaped = build_cache(data, tracker, shape_key, progress=False)
    assert shaped.key not in (base.key, masked.key)
    plain, extra = FeatureCache(Path(base.path)).load(0), FeatureCache(Path(shaped.path)).load(0)
    assert extra.extras.shape == (6, 11)  # the plain extras and the mask's four shape moments
    np.testing.assert_array_equal(extra.tokens, plain.tokens)
    np.testing.assert_array_equal(extra.extras[:, :7], plain.extras)
    bigger = load_tracker("compact", image_size=96, allow_random=True, seed=0)
    other = build_cache(data, bigger, cache_key("compact", bigger, POOLED4), progress=False)
    assert other.key not in (base.key, masked.key)
    assert other.computed == 3
    reseeded = load_tracker("compact", image_size=64, allow_random=True, seed=1)
    assert cache_key("compact", reseeded, POOLED4).digest != base.key
    assert cache_key("compact", tracker, POOLED4).digest == base.key


def test_oracle_masks_are_another_key_and_store_the_true_boxes(data: Path) -> None:
    """An oracle cache (the dataset's true masks in place of the tracker's) never shares a key with a tracked one,
    stores the true boxes, and survives a reload of its manifest; a tracked key's name does not depend on the
    mask-source field (caches built before it existed keep their names)."""
    from dataclasses import asdict

    from policy.cache_store import CACHE_FORMAT, CacheKey
    from policy.tracker import TrackerConfig

    plain = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    oracle = load_tracker(
        "compact", image_size=64, allow_random=True, seed=0, config=TrackerConfig(mask_source="oracle")
    )
    tracked_key = cache_key("compact", plain, POOLED4)
    oracle_key = cache_key("compact", oracle, POOLED4)
    assert oracle_key.mask_source == "oracle"
    assert oracle_key.digest != tracked_key.digest
    legacy = {k: v for k, v in asdict(tracked_key).items() if k not in ("mask_source", "occlusion", "crop")}
    import hashlib

    text = json.dumps({"format": CACHE_FORMAT, **legacy}, sort_keys=True)
    assert tracked_key.digest == hashlib.sha256(text.encode()).hexdigest()[:16]
    report = build_cache(data, oracle, oracle_key, progress=False)
    cache = FeatureCache(Path(report.path))
    assert cache.key == oracle_key
    labels = Dataset(data).load_episode(1, images=False)
    np.testing.assert_array_equal(cache.load(1).boxes, labels.target_box)
    manifest = json.loads((Path(report.path) / "manifest.json").read_text())
    assert CacheKey.from_manifest(manifest, Path("manifest.json")) == oracle_key


def test_occlusion_augmented_cache_blacks_out_its_own_frames(data: Path, tracker: SAM2Tracker) -> None:
    """`--occlusion p`: the frames `blacked_out` names reach the tracker black (features equal those of a stream
    fed the same black frames), it is another key, and p outside [0, 1) is refused."""
    from policy.cache import blacked_out

    key = cache_key("compact", tracker, POOLED4, occlusion=0.5)
    assert key.digest != cache_key("compact", tracker, POOLED4).digest
    report = build_cache(data, tracker, key, progress=False)
    hidden = blacked_out(0, 6, 0.5)
    assert not hidden[0]
    assert 0 < hidden.sum() < 6
    rgb = Dataset(data).load_episode(0).rgb
    assert rgb is not None
    seen = [np.zeros_like(f) if h else f for f, h in zip(rgb, hidden, strict=True)]
    steps = [tracker.start(seen[0], Dataset(data).load_episode(0, images=False).target_box[0])]
    steps += [tracker.step(f) for f in seen[1:]]
    got = FeatureCache(Path(report.path)).load(0)
    want = np.stack([extract(s, POOLED4).tokens for s in steps]).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(got.tokens, want, atol=1e-3, rtol=1e-3)
    np.testing.assert_array_equal(got.boxes, np.stack([s.box for s in steps]))
    with pytest.raises(ValueError, match=r"within \[0, 1\)"):
        cache_key("compact", tracker, POOLED4, occlusion=1.0)


def test_modified_episode_is_recomputed(data: Path, tracker: SAM2Tracker) -> None:
    key = cache_key("compact", tracker, POOLED4)
    first = build_cache(data, tracker, key, progress=False)
    parquet = episode_path(data, DATA_PATH, 1)
    pq.write_table(pq.read_table(parquet), parquet, compression="gzip")  # same rows, other bytes
    cache = FeatureCache(Path(first.path))
    assert cache.verify(data) == ["episode 1 changed since it was cached"]
    again = build_cache(data, tracker, key, progress=False)
    assert (again.computed, again.reused) == (1, 2)
    with pytest.raises(CacheError, match="since the manifest was written"):
        cache.load(1)  # an old manifest never serves the rewritten file as the old one
    assert FeatureCache(Path(again.path)).verify(data) == []


def test_incomplete_cache_is_refused(data: Path, tracker: SAM2Tracker) -> None:
    report = build_cache(data, tracker, cache_key("compact", tracker, POOLED4), shard=Shard(0, 2), progress=False)
    assert (report.episodes, report.complete) == (2, False)
    with pytest.raises(CacheError, match=r"incomplete.*cache-merge"):
        FeatureCache(Path(report.path))


def test_kill_then_rerun_completes(tmp_path: Path, tracker: SAM2Tracker) -> None:
    data = write_dataset(tmp_path / "ds", [40, 40, 40, 40])
    cmd = [sys.executable, "-m", "pipeline.cli", "cache", "--data", str(data), *RANDOM, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # generous: the child imports torch and sam2 first, slow on a busy machine
    try:
        while not list((data / "cache").glob("*/ep-*.safetensors")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"cache run ended early or hung: {proc.stderr.read() if proc.stderr else ''!r}")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    report = build_cache(data, tracker, cache_key("compact", tracker, POOLED4), progress=False)
    assert report.complete
    assert report.episodes == 4
    assert report.reused >= 1
    assert report.computed >= 1
    assert not list(Path(report.path).glob("*.tmp"))
    cache = FeatureCache(Path(report.path))
    assert cache.verify(data) == []
    assert all(len(cache.load(e)) == 40 for e in range(4))


def test_hidden_first_frame_target_is_an_error_naming_the_episode(tmp_path: Path, tracker: SAM2Tracker) -> None:
    with DatasetWriter(tmp_path / "ds", 10.0) as writer:
        writer.add_episode(make_episode(3, seed=1))
        writer.add_episode(make_episode(3, seed=2, hidden_at_start=True))
    with pytest.raises(CacheError, match=r"episode 1: cannot track from its first-frame target box \[0\.0, 0\.0"):
        build_cache(tmp_path / "ds", tracker, cache_key("compact", tracker, POOLED4), progress=False)
    key_dir = next((tmp_path / "ds" / "cache").iterdir())
    assert episode_file(key_dir, 0).is_file()  # the work before the error is kept for the rerun
    assert not list(key_dir.glob("*.tmp"))


# ---------------------------------------------------------------- shards


def test_two_shards_then_merge_equal_one_run(data: Path, tmp_path: Path) -> None:
    whole_root = tmp_path / "whole"
    assert run_cli("cache", "--data", str(data), *RANDOM, "--cache-root", str(whole_root)) == 0
    assert run_cli("cache", "--data", str(data), *RANDOM, "--shard", "0/2") == 0
    assert run_cli("cache", "--data", str(data), *RANDOM, "--shard", "1/2") == 0
    assert run_cli("cache-merge", "--data", str(data), *RANDOM) == 0
    (sharded,) = (data / "cache").iterdir()
    (whole,) = whole_root.iterdir()
    assert sharded.name == whole.name
    a, b = FeatureCache(sharded), FeatureCache(whole)
    assert a.episodes == b.episodes == (0, 1, 2)
    for e in a.episodes:
        x, y = a.load(e, dtype="float16"), b.load(e, dtype="float16")
        for name in ("tokens", "extras", "boxes", "scores"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_merge_with_a_missing_shard_names_the_episodes(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("cache", "--data", str(data), *RANDOM, "--shard", "0/2", "--json") == 0
    key = json.loads(capsys.readouterr().out)["key"]
    assert run_cli("cache-merge", "--data", str(data), "--key", key) == 2
    err = capsys.readouterr().err
    assert "episode 1: missing (shard 1/2 should have made it, which has not run with this key)" in err
    assert "episode 0" not in err
    assert "episode 2" not in err
    with pytest.raises(CacheError, match=r"1 episode\(s\) missing"):
        merge_cache(data, data / "cache" / key)


# ---------------------------------------------------------------- CLI


def test_cli_json_report(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("cache", "--data", str(data), *RANDOM, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert {"episodes", "frames", "frames_per_s", "bytes"} <= set(report)
    assert (report["episodes"], report["frames"], report["computed"]) == (3, 15, 3)
    assert report["frames_per_s"] > 0
    assert report["bytes"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard", "2/2"], "0 <= I < N"),
        (["--shard", "x"], "I/N"),
        (["--tracker", "sam3"], "choose from 'compact', 'sam2.1-tiny'"),
        (["--checkpoint", "/nonexistent/w.safetensors"], "does not exist"),
        (["--features", "pooledX"], "valid: pooledN"),
        (["--memory-frames", "0"], "within 1..64"),
    ],
)
def test_cli_bad_input_exits_2(data: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(run_cli("cache", "--data", str(data), *RANDOM, *extra))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (data / "cache").exists()


def test_cli_refuses_random_weights_without_flag(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("cache", "--data", str(data), "--image-size", "64") == 2
    assert "--allow-random" in capsys.readouterr().err


def test_parse_shard() -> None:
    assert parse_shard("1/3") == Shard(1, 3)
    assert Shard(1, 3).owns(4)
    assert not Shard(1, 3).owns(3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="I/N"):
            parse_shard(bad)


def test_episode_file_name(tmp_path: Path) -> None:
    assert episode_file(tmp_path, 12).name == "ep-000012.safetensors"
