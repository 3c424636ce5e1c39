"""Verifying data: an episode before it is written (`validate_episode`), a dataset on disk (`check_dataset`).

Every problem names the file (relative to the root), the episode or column, and what was expected vs found.
Leftovers of an interrupted write (temp files, files of episodes >= total_episodes, a stats.json or
tasks.parquet that is ahead of info.json) are harmless — the reader ignores them and the next writer removes
or rewrites them — and are reported as notes, not problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset.layout import (
    DATA_PATH,
    DEPTH_KEY,
    DEPTH_PATH,
    EPISODES_PATH,
    FRAME_FIELDS,
    FRONT_KEY,
    INFO_FILE,
    STATS_FILE,
    TASKS_FILE,
    VECTOR_FEATURES,
    VIDEO_PATH,
    WRIST_KEY,
    DatasetError,
    FeatureStats,
    Info,
    compute_stats,
    episode_path,
    load_info,
    parse_stats_document,
    read_json,
    scan_episode_files,
)
from pipeline.dataset.reader import (
    EpisodeMeta,
    aggregate_stats,
    mask_column,
    read_episode_meta,
    read_table,
    read_tasks,
    scalar_column,
    vector_column,
)
from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.video import probe_video


def _check_array(value: Any, where: str, dtype: type, shape: tuple[int, ...], finite: bool = False) -> None:
    if not isinstance(value, np.ndarray):
        raise DatasetError(f"{where} must be a numpy array of dtype {np.dtype(dtype)}, got {type(value).__name__}")
    if value.dtype != dtype or value.shape != shape:
        raise DatasetError(
            f"{where} must be {np.dtype(dtype)} of shape {shape}, got {value.dtype} of shape {value.shape}"
        )
    if finite and not np.all(np.isfinite(value)):
        raise DatasetError(f"{where} holds NaN or inf: {value.tolist()}")


def _check_image(value: Any, where: str, size: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(value, np.ndarray) or value.ndim != 3:
        raise DatasetError(f"{where} must be an (H, W, 3) uint8 array, got {getattr(value, 'shape', value)!r}")
    found = (int(value.shape[0]), int(value.shape[1]))
    if size is None:
        if found[0] % 2 or found[1] % 2 or 0 in found:
            raise DatasetError(f"{where}: H.264 needs an even, positive height and width, got {found} (H, W)")
        size = found
    _check_array(value, where, np.uint8, (size[0], size[1], 3))
    return size


def validate_episode(
    episode: Episode,
    fps: float,
    image_size: tuple[int, int] | None,
    wrist: tuple[int, int] | None,
    first: bool,
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """Check an episode against the dataset; return its (H, W) image and wrist sizes. Raises DatasetError."""
    if not isinstance(episode, Episode):
        raise DatasetError(f"expected an Episode, got {type(episode).__name__}")
    if not episode.frames:
        raise DatasetError("episode has no frames; an episode needs at least one")
    if not math.isclose(float(episode.fps), fps, rel_tol=1e-9):
        raise DatasetError(f"episode fps {episode.fps} differs from the dataset's fps {fps}")
    for name in ("task", "target", "outcome"):
        if not isinstance(getattr(episode, name), str) or not getattr(episode, name):
            raise DatasetError(f"episode.{name} must be a non-empty str, got {getattr(episode, name)!r}")
    if not isinstance(episode.seed, int | np.integer):
        raise DatasetError(f"episode.seed must be an int, got {episode.seed!r}")
    if not all(isinstance(o, ObjectRecord) for o in episode.objects):
        raise DatasetError("episode.objects must be a tuple of ObjectRecord")
    has_wrist = episode.frames[0].wrist_rgb is not None
    if not first and has_wrist != (wrist is not None):
        state = "has" if wrist is not None else "has no"
        raise DatasetError(f"the dataset {state} wrist video; this episode's frames must match (wrist_rgb)")
    for t, frame in enumerate(episode.frames):
        where = f"frames[{t}]"
        if not isinstance(frame, Frame):
            raise DatasetError(f"{where} must be a Frame, got {type(frame).__name__}")
        image_size = _check_image(frame.rgb, f"{where}.rgb", image_size)
        _check_array(frame.depth_mm, f"{where}.depth_mm", np.uint16, image_size)
        _check_array(frame.target_mask, f"{where}.target_mask", np.bool_, image_size)
        for name, key in FRAME_FIELDS.items():
            width = len(VECTOR_FEATURES[key])
            _check_array(getattr(frame, name), f"{where}.{name}", np.float32, (width,), finite=True)
        if (frame.wrist_rgb is not None) != has_wrist:
            raise DatasetError(f"{where}.wrist_rgb: frame 0 {'has' if has_wrist else 'has no'} wrist image")
        if frame.wrist_rgb is not None:
            wrist = _check_image(frame.wrist_rgb, f"{where}.wrist_rgb", wrist)
        ts = frame.timestamp
        if (
            not isinstance(ts, int | float | np.integer | np.floating)
            or not math.isfinite(ts)
            or abs(ts - t / fps) > 0.25 / fps
        ):
            raise DatasetError(f"{where}.timestamp is {ts!r} s; expected {t / fps:.6f} s (t / fps) ± a quarter period")
    if image_size is None:
        raise DatasetError("episode has no frames")
    return image_size, wrist


#: Absolute tolerance of statistics comparisons.
STATS_TOL = 1e-4


@dataclass
class CheckReport:
    """Result of `check_dataset`: ok is True when `problems` is empty; notes are harmless findings."""

    ok: bool
    episodes: int
    frames: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Checker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        self.notes: list[str] = []

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def problem(self, text: str) -> None:
        self.problems.append(text.replace(f"{self.root}/", ""))

    def episode(self, info: Info, index: int, start: int, tasks: list[str]) -> EpisodeMeta | None:
        """Check one committed episode's meta row, data table and videos; return its meta when readable."""
        try:
            meta = read_episode_meta(self.root, info, index)
        except DatasetError as exc:
            self.problem(f"episode {index}: {exc}")
            meta = None
        if meta is not None:
            where = self.rel(episode_path(self.root, EPISODES_PATH, index))
            if meta.length < 1:
                self.problem(f"{where}: episode {index} length is {meta.length}, expected >= 1")
            if (meta.from_index, meta.to_index) != (start, start + meta.length):
                self.problem(
                    f"{where}: dataset_from/to_index are {meta.from_index}/{meta.to_index}, "
                    f"expected {start}/{start + meta.length} (contiguous global index)"
                )
            if meta.task not in tasks:
                self.problem(f"{where}: task {meta.task!r} is not in {TASKS_FILE} (has {len(tasks)} tasks)")
        length = meta.length if meta is not None else None
        self.data(info, index, start, meta, tasks)
        videos = [(FRONT_KEY, VIDEO_PATH, info.image_size), (DEPTH_KEY, DEPTH_PATH, info.image_size)]
        if info.wrist_size is not None:
            videos.append((WRIST_KEY, VIDEO_PATH, info.wrist_size))
        for key, template, size in videos:
            self.video(episode_path(self.root, template, index, key), index, length, size)
        return meta

    def data(self, info: Info, index: int, start: int, meta: EpisodeMeta | None, tasks: list[str]) -> None:
        path = episode_path(self.root, DATA_PATH, index)
        where = self.rel(path)
        try:
            table = read_table(path)
            if meta is not None and table.num_rows != meta.length:
                self.problem(f"{where}: {table.num_rows} rows, expected {meta.length} (the episode's length)")
                return
            length = table.num_rows
            frame_index = scalar_column(table, "frame_index", path)
            if not np.array_equal(frame_index, np.arange(length)):
                self.problem(f"{where}: frame_index is not 0..{length - 1}")
            if not np.array_equal(scalar_column(table, "episode_index", path), np.full(length, index)):
                self.problem(f"{where}: episode_index column is not all {index}")
            if not np.array_equal(scalar_column(table, "index", path), np.arange(start, start + length)):
                self.problem(f"{where}: index is not {start}..{start + length - 1} (contiguous global index)")
            stamps = scalar_column(table, "timestamp", path).astype(np.float64)
            expected = np.arange(length) / info.fps
            if stamps.shape != expected.shape or not np.allclose(stamps, expected, rtol=0, atol=1e-4):
                self.problem(f"{where}: timestamp is not frame_index / fps ({1 / info.fps:.6f} s steps)")
            task_index = scalar_column(table, "task_index", path)
            if meta is not None and meta.task in tasks and np.any(task_index != tasks.index(meta.task)):
                self.problem(f"{where}: task_index should be {tasks.index(meta.task)} ({meta.task!r})")
            done = scalar_column(table, "next.done", path)
            if not np.array_equal(done, np.arange(length) == length - 1):
                self.problem(f"{where}: next.done should be True on the last frame only")
            for name, names in VECTOR_FEATURES.items():
                values = vector_column(table, name, len(names), path)
                if not np.all(np.isfinite(values)):
                    self.problem(f"{where}: column '{name}' holds NaN or inf")
                elif meta is not None and not compute_stats(values).close_to(meta.stats[name], STATS_TOL):
                    self.problem(f"{where}: column '{name}' disagrees with the stats of its episode meta row")
            pixels = info.image_size[0] * info.image_size[1] if info.image_size else 0
            visible = scalar_column(table, "observation.target_visible", path)
            for t, counts in enumerate(mask_column(table, path)):
                if int(counts.astype(np.int64).sum()) != pixels or np.any(counts < 0):
                    self.problem(f"{where}: target_mask of frame {t} does not cover {pixels} pixels")
                    break
                if bool(visible[t]) != bool(counts[1::2].sum() > 0):
                    self.problem(f"{where}: target_visible of frame {t} disagrees with its mask")
                    break
        except DatasetError as exc:
            self.problem(f"episode {index}: {exc}")

    def video(self, path: Path, index: int, length: int | None, size: tuple[int, int] | None) -> None:
        where = f"episode {index}: {self.rel(path)}"
        if not path.is_file():
            self.problem(f"{where}: missing")
            return
        try:
            probe = probe_video(path)
        except Exception as exc:  # PyAV raises many error types for damaged files
            self.problem(f"{where}: cannot be read ({type(exc).__name__}: {exc})")
            return
        if length is not None and probe.frames != length:
            self.problem(f"{where}: {probe.frames} frames, expected {length}")
        if size is not None and (probe.height, probe.width) != size:
            self.problem(f"{where}: size {probe.height}x{probe.width}, expected {size[0]}x{size[1]} (H x W)")

    def stats(self, info: Info, metas: list[EpisodeMeta]) -> None:
        path = self.root / STATS_FILE
        if info.total_episodes == 0 and not path.exists():
            return
        try:
            covered, stats = parse_stats_document(read_json(path), str(path))
        except DatasetError as exc:
            self.problem(str(exc))
            return
        if covered > info.total_episodes:
            self.notes.append(
                f"{STATS_FILE} covers {covered} episodes, ahead of info.json's {info.total_episodes} "
                "(interrupted write; readers recompute, the next writer rewrites it)"
            )
            return
        if covered != info.total_episodes:
            self.problem(f"{STATS_FILE}: covers {covered} episodes, expected {info.total_episodes}")
            return
        if len(metas) != info.total_episodes:
            return  # episode problems already reported; the pooled stats cannot be recomputed
        for name, expected in aggregate_stats(metas).items():
            found: FeatureStats | None = stats.get(name)
            if found is None:
                self.problem(f"{STATS_FILE}: feature '{name}' missing")
            elif not found.close_to(expected, STATS_TOL):
                self.problem(
                    f"{STATS_FILE}: '{name}' differs from the stats recomputed from the episodes "
                    f"(mean {found.mean.ravel().tolist()} vs {expected.mean.ravel().tolist()}, "
                    f"count {found.count} vs {expected.count}) beyond {STATS_TOL}"
                )

    def leftovers(self, info: Info) -> None:
        indexed, temps = scan_episode_files(self.root)
        for path in temps:
            self.notes.append(f"{self.rel(path)}: temp file of an interrupted write (ignored)")
        for index, path in indexed:
            if index >= info.total_episodes:
                self.notes.append(f"{self.rel(path)}: orphan of uncommitted episode {index} (ignored)")


def check_dataset(root: Path) -> CheckReport:
    """Verify the dataset at `root` (see the module docstring); never raises for a damaged dataset."""
    root = Path(root)
    checker = _Checker(root)
    try:
        info = load_info(root)
    except DatasetError as exc:
        return CheckReport(ok=False, episodes=0, frames=0, problems=[str(exc)])
    tasks: list[str] = []
    try:
        tasks = read_tasks(root, info.total_tasks)
        extra = len(read_table(root / TASKS_FILE)) - info.total_tasks if (root / TASKS_FILE).exists() else 0
        if extra > 0:
            checker.notes.append(f"{TASKS_FILE}: {extra} task(s) beyond info.json's total_tasks (ignored)")
    except DatasetError as exc:
        checker.problem(str(exc))
    metas: list[EpisodeMeta] = []
    start = 0
    for index in range(info.total_episodes):
        meta = checker.episode(info, index, start, tasks)
        if meta is not None:
            metas.append(meta)
            start += meta.length
    if len(metas) == info.total_episodes and start != info.total_frames:
        checker.problem(f"{INFO_FILE}: total_frames is {info.total_frames}, the episodes hold {start}")
    used = {m.task for m in metas}
    if len(metas) == info.total_episodes and len(used) != info.total_tasks:
        checker.problem(f"{INFO_FILE}: total_tasks is {info.total_tasks}, the episodes use {len(used)}")
    checker.stats(info, metas)
    checker.leftovers(info)
    frames = sum(m.length for m in metas)
    return CheckReport(
        ok=not checker.problems,
        episodes=info.total_episodes,
        frames=frames,
        problems=checker.problems,
        notes=checker.notes,
    )
