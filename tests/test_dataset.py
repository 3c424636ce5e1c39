"""Dataset I/O: RLE masks, videos, writer -> reader round trips, validation, and check_dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.dataset.check import check_dataset
from pipeline.dataset.layout import INFO_FILE, STATS_FILE, DatasetError
from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.rle import decode_mask, encode_mask
from pipeline.dataset.video import (
    iter_rgb_video,
    probe_video,
    read_depth_video,
    read_rgb_video,
    write_depth_video,
    write_rgb_video,
)
from pipeline.dataset.writer import DatasetWriter

FPS = 10.0
SIZE = (48, 64)


def make_episode(
    n_frames: int = 6,
    *,
    seed: int = 0,
    task: str = "pick the red cube",
    size: tuple[int, int] = SIZE,
    wrist: bool = False,
    fps: float = FPS,
) -> Episode:
    """Synthetic episode: a coloured rectangle moving over a gradient, its mask and box; frame 2 hides it."""
    rng = np.random.default_rng(seed)
    height, width = size
    colour = rng.integers(80, 255, 3).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).clip(0, 255).astype(np.uint8)
    frames = []
    for t in range(n_frames):
        rgb = background.copy()
        mask = np.zeros(size, dtype=np.bool_)
        x0, y0 = 2 + (3 * t + seed) % (width - 20), 3 + (2 * t + seed) % (height - 16)
        x1, y1 = x0 + 14, y0 + 10
        if t != 2:
            rgb[y0:y1, x0:x1] = colour
            mask[y0:y1, x0:x1] = True
        box = np.array([x0, y0, x1, y1] if t != 2 else [0, 0, 0, 0], dtype=np.float32)
        frames.append(
            Frame(
                rgb=rgb,
                depth_mm=rng.integers(0, 65536, size, dtype=np.uint16),
                state=rng.normal(size=7).astype(np.float32),
                action=rng.normal(size=7).astype(np.float32),
                ee_pose=rng.normal(size=7).astype(np.float32),
                target_box=box,
                target_mask=mask,
                timestamp=t / fps,
                wrist_rgb=np.roll(rgb[:32, :32], t, axis=1).copy() if wrist else None,
            )
        )
    cube = ObjectRecord("red_cube_1", "red cube", "red", "cube", (0.4, 0.1, 0.02), (1.0, 0.0, 0.0, 0.0), (1, 2, 3, 4))
    return Episode(
        task=task,
        target="red_cube_1",
        seed=seed,
        outcome="success",
        fps=fps,
        objects=(cube,),
        frames=tuple(frames),
    )


def stacked(episode: Episode, name: str) -> npt.NDArray[np.float32]:
    return np.stack([getattr(f, name) for f in episode.frames])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


EPISODES = [
    make_episode(6, seed=1, task="pick the red cube"),
    make_episode(4, seed=2, task="pick the left cup"),
    make_episode(5, seed=3, task="pick the red cube"),
]


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good") / "ds"
    with DatasetWriter(root, FPS) as writer:
        for episode in EPISODES:
            writer.add_episode(episode)
    return root


# ---------------------------------------------------------------- RLE


def test_rle_round_trip_random_empty_full() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in [(48, 64, 0.5), (7, 3, 0.1), (1, 1, 1.0), (30, 20, 0.9)]]
    masks += [np.zeros((48, 64), np.bool_), np.ones((48, 64), np.bool_)]
    for mask in masks:
        counts = encode_mask(mask)
        assert counts.dtype == np.int32
        assert int(counts.sum()) == mask.size
        np.testing.assert_array_equal(decode_mask(counts, mask.shape), mask)
    assert encode_mask(np.zeros((2, 3), np.bool_)).tolist() == [6]
    assert encode_mask(np.ones((2, 3), np.bool_)).tolist() == [0, 6]
    assert encode_mask(np.array([[True, False], [False, True]])).tolist() == [0, 1, 2, 1]


def test_rle_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match=r"sum to 5 .* 6 pixels"):
        decode_mask(np.array([2, 3], np.int32), (2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        decode_mask(np.array([7, -1], np.int32), (2, 3))
    with pytest.raises(TypeError, match="bool"):
        encode_mask(np.zeros((2, 2), np.uint8))


# ---------------------------------------------------------------- video


def test_rgb_video_round_trip(tmp_path: Path) -> None:
    frames = np.stack([f.rgb for f in make_episode(9, seed=5).frames])
    path = tmp_path / "v.mp4"
    assert write_rgb_video(path, frames, FPS) == 9
    decoded = read_rgb_video(path)
    assert decoded.shape == frames.shape
    errors = np.abs(decoded.astype(np.int16) - frames.astype(np.int16))
    assert errors.mean() < 4.0
    # Frames come back in order: each decoded frame is closest to its own source frame.
    distance = np.abs(decoded[:, None].astype(np.int16) - frames[None].astype(np.int16)).mean(axis=(2, 3, 4))
    assert distance.argmin(axis=1).tolist() == list(range(9))
    assert sum(1 for _ in iter_rgb_video(path)) == 9
    probe = probe_video(path)
    assert (probe.frames, probe.height, probe.width, probe.codec) == (9, 48, 64, "h264")


def test_rgb_video_needs_even_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_rgb_video(tmp_path / "odd.mp4", np.zeros((2, 47, 64, 3), np.uint8), FPS)


def test_depth_video_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    depth = rng.integers(0, 65536, (7, 47, 63), dtype=np.uint16)
    depth[0] = 0
    depth[1] = 65535
    path = tmp_path / "d.mkv"
    write_depth_video(path, depth, FPS)
    decoded = read_depth_video(path)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, depth)
    assert probe_video(path).frames == 7


# ---------------------------------------------------------------- writer -> reader


def test_round_trip(good_dataset: Path) -> None:
    ds = Dataset(good_dataset)
    assert len(ds) == 3
    assert ds.fps == FPS
    assert ds.image_size == SIZE
    assert ds.wrist_size is None
    assert ds.tasks == ("pick the red cube", "pick the left cup")
    start = 0
    for index, episode in enumerate(EPISODES):
        meta = ds.episode_meta(index)
        assert (meta.length, meta.task, meta.seed, meta.target) == (
            episode.length,
            episode.task,
            index + 1,
            "red_cube_1",
        )
        assert (meta.from_index, meta.to_index) == (start, start + episode.length)
        assert meta.objects == episode.objects
        start += episode.length
        data = ds.load_episode(index, depth=True)
        assert len(data) == episode.length
        for field, name in [
            ("state", "state"),
            ("action", "action"),
            ("ee_pose", "ee_pose"),
            ("target_box", "target_box"),
        ]:
            np.testing.assert_array_equal(getattr(data, field), stacked(episode, name))
        np.testing.assert_allclose(data.timestamps, np.arange(episode.length) / FPS, atol=1e-6)
        for t, frame in enumerate(episode.frames):
            np.testing.assert_array_equal(data.target_mask(t), frame.target_mask)
        assert data.target_visible.tolist() == [t != 2 for t in range(episode.length)]
        assert data.rgb is not None
        assert data.depth_mm is not None
        assert data.wrist_rgb is None
        assert np.abs(data.rgb.astype(np.int16) - stacked(episode, "rgb").astype(np.int16)).mean() < 4.0
        np.testing.assert_array_equal(data.depth_mm, np.stack([f.depth_mm for f in episode.frames]))
        assert sum(1 for _ in ds.iter_frames(index)) == episode.length
    no_images = ds.load_episode(0, images=False)
    assert no_images.rgb is None
    assert no_images.depth_mm is None


def test_stats_and_info(good_dataset: Path) -> None:
    ds = Dataset(good_dataset)
    for key, name in [
        ("observation.state", "state"),
        ("action", "action"),
        ("observation.target_box", "target_box"),
    ]:
        values = np.concatenate([stacked(e, name) for e in EPISODES]).astype(np.float64)
        stats = ds.stats[key]
        np.testing.assert_allclose(stats.mean, values.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(stats.std, values.std(axis=0), atol=1e-5)
        np.testing.assert_allclose(stats.min, values.min(axis=0), atol=1e-5)
        np.testing.assert_allclose(stats.max, values.max(axis=0), atol=1e-5)
        assert stats.count == 15
    assert not ds.stats_recomputed
    image = ds.stats["observation.images.front"]
    assert image.mean.shape == (3, 1, 1)
    assert np.all((image.mean > 0) & (image.mean < 1))
    doc = json.loads((good_dataset / STATS_FILE).read_text())
    assert doc["episodes"] == 3
    assert "subsample" in doc["observation.images.front"]
    info = json.loads((good_dataset / INFO_FILE).read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 15, 2)
    assert info["codebase_version"] == "v3.0"
    assert info["features"]["observation.state"]["shape"] == [7]
    for rel in [
        "data/chunk-000/file-002.parquet",
        "videos/observation.images.front/chunk-000/file-002.mp4",
        "videos/observation.depth.front/chunk-000/file-002.mkv",
        "meta/episodes/chunk-000/file-002.parquet",
        "meta/tasks.parquet",
    ]:
        assert (good_dataset / rel).is_file(), rel
    report = check_dataset(good_dataset)
    assert report.ok, report.problems
    assert (report.episodes, report.frames, report.notes) == (3, 15, [])


def test_append_by_reopening_and_wrist(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter(root, FPS) as writer:
        assert writer.add_episode(make_episode(3, seed=1, wrist=True)) == 0
    with DatasetWriter(root, FPS) as writer:
        assert writer.add_episode(make_episode(4, seed=2, wrist=True, task="other")) == 1
        with pytest.raises(DatasetError, match="wrist"):
            writer.add_episode(make_episode(3, seed=3, wrist=False))
    ds = Dataset(root)
    assert len(ds) == 2
    assert ds.total_frames == 7
    assert ds.wrist_size == (32, 32)
    assert ds.episode_meta(1).from_index == 3
    data = ds.load_episode(1)
    assert data.wrist_rgb is not None
    assert data.wrist_rgb.shape == (4, 32, 32, 3)
    assert sum(1 for _ in ds.iter_frames(1, camera="wrist")) == 4
    assert check_dataset(root).ok


def test_fps_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    DatasetWriter(root, FPS).close()
    with pytest.raises(DatasetError, match=r"10\.0.*15\.0"):
        DatasetWriter(root, 15.0)
    with DatasetWriter(root, FPS) as writer, pytest.raises(DatasetError, match=r"fps 15\.0 .* 10\.0"):
        writer.add_episode(make_episode(3, fps=15.0))


def _with_frame(episode: Episode, t: int, **changes: object) -> Episode:
    frames = list(episode.frames)
    frames[t] = Frame(**{**frames[t].__dict__, **changes})
    return Episode(**{**episode.__dict__, "frames": tuple(frames)})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": np.array([0, 1, np.nan, 0, 0, 0, 0], np.float32)}, r"frames\[2\]\.state holds NaN"),
        ({"rgb": np.zeros((48, 66, 3), np.uint8)}, r"frames\[2\]\.rgb must be uint8 of shape \(48, 64, 3\)"),
        ({"action": np.zeros(7, np.float64)}, r"frames\[2\]\.action must be float32 .* got float64"),
        ({"target_mask": np.zeros((48, 64), np.uint8)}, r"frames\[2\]\.target_mask must be bool"),
        ({"timestamp": 7.0}, r"frames\[2\]\.timestamp"),
    ],
)
def test_invalid_frame_rejected(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    root = tmp_path / "ds"
    with DatasetWriter(root, FPS) as writer:
        writer.add_episode(make_episode(3))
        before = snapshot(root)
        with pytest.raises(DatasetError, match=message):
            writer.add_episode(_with_frame(make_episode(4, seed=9), 2, **changes))
        assert snapshot(root) == before
        with pytest.raises(DatasetError, match=r"rgb must be uint8 of shape \(48, 64, 3\)"):
            writer.add_episode(make_episode(3, size=(32, 32)))
        with pytest.raises(DatasetError, match="no frames"):
            writer.add_episode(Episode("t", "x", 0, "success", FPS, (), ()))
        assert snapshot(root) == before


def test_refuses_non_dataset_and_second_writer(tmp_path: Path) -> None:
    root = tmp_path / "stuff"
    root.mkdir()
    (root / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a dataset"):
        DatasetWriter(root, FPS)
    with pytest.raises(DatasetError, match=r"meta/info\.json is missing"):
        Dataset(root)
    with DatasetWriter(root, FPS, overwrite=True) as writer:
        assert not (root / "notes.txt").exists()
        with pytest.raises(DatasetError, match="another DatasetWriter"):
            DatasetWriter(root, FPS)
        writer.add_episode(make_episode(2))
    assert len(Dataset(root)) == 1
    with pytest.raises(IndexError, match="1 episodes"):
        Dataset(root).episode_meta(1)


# ---------------------------------------------------------------- check_dataset


def _delete_video(root: Path) -> str:
    path = root / "videos/observation.images.front/chunk-000/file-001.mp4"
    path.unlink()
    return "videos/observation.images.front/chunk-000/file-001.mp4: missing"


def _truncate_parquet(root: Path) -> str:
    path = root / "data/chunk-000/file-002.parquet"
    path.write_bytes(path.read_bytes()[:200])
    return "data/chunk-000/file-002.parquet: cannot be read"


def _edit_stats(root: Path) -> str:
    doc = json.loads((root / STATS_FILE).read_text())
    doc["action"]["mean"][0] += 0.01
    (root / STATS_FILE).write_text(json.dumps(doc))
    return "meta/stats.json: 'action' differs"


def _claim_extra_episode(root: Path) -> str:
    doc = json.loads((root / INFO_FILE).read_text())
    doc["total_episodes"] += 1
    (root / INFO_FILE).write_text(json.dumps(doc))
    return "meta/episodes/chunk-000/file-003.parquet: missing"


@pytest.mark.parametrize("damage", [_delete_video, _truncate_parquet, _edit_stats, _claim_extra_episode])
def test_check_finds_damage(good_dataset: Path, tmp_path: Path, damage: object) -> None:
    root = tmp_path / "copy"
    shutil.copytree(good_dataset, root)
    expected = damage(root)  # type: ignore[operator]
    report = check_dataset(root)
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems


def test_leftovers_are_notes_and_cleaned(good_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(good_dataset, root)
    orphan = root / "data/chunk-000/file-003.parquet"
    shutil.copy(root / "data/chunk-000/file-002.parquet", orphan)
    (root / "videos/observation.images.front/chunk-000/file-003.mp4.tmp").write_bytes(b"partial")
    doc = json.loads((root / STATS_FILE).read_text())
    doc["episodes"] = 4
    doc["action"]["mean"][0] += 1.0
    (root / STATS_FILE).write_text(json.dumps(doc))
    report = check_dataset(root)
    assert report.ok, report.problems
    assert len(report.notes) == 3, report.notes
    ds = Dataset(root)
    np.testing.assert_allclose(ds.stats["action"].mean, Dataset(good_dataset).stats["action"].mean, atol=1e-9)
    assert ds.stats_recomputed
    with DatasetWriter(root, FPS) as writer:
        assert not orphan.exists()
        assert writer.add_episode(make_episode(3, seed=7)) == 3
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.notes == []
