"""Appending episodes to a dataset atomically.

Commit protocol of episode k: every file of the episode is written under a temporary name in its final
directory, fsynced and `os.replace`d into place; then tasks.parquet and stats.json, then info.json (the
commit record, total_episodes = k + 1), each by temp file + fsync + os.replace + fsync of the directory.
A process killed at any instant therefore leaves info.json describing only whole episodes. Opening for
append removes temp files and files of episodes >= total_episodes, and rebuilds tasks.parquet / stats.json
from the committed episodes' meta rows when they disagree with info.json.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset.check import validate_episode
from pipeline.dataset.layout import (
    CHUNKS_SIZE,
    FRAME_FIELDS,
    FRONT_KEY,
    INFO_FILE,
    LEARN_KEY,
    LOCK_FILE,
    STATS_FILE,
    TASKS_FILE,
    TMP_SUFFIX,
    WRIST_KEY,
    DatasetError,
    FeatureStats,
    build_info,
    compute_image_stats,
    compute_stats,
    episode_files,
    image_sample_indices,
    load_info,
    parse_stats_document,
    pool_stats,
    read_json,
    scan_episode_files,
    stats_document,
    tmp_path,
)
from pipeline.dataset.reader import (
    aggregate_stats,
    objects_to_json,
    read_episode_meta,
    read_table,
    scalar_column,
)
from pipeline.dataset.records import Episode, Frame
from pipeline.dataset.rle import encode_mask
from pipeline.dataset.video import fsync_file, write_depth_video, write_rgb_video


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames inside it are durable."""
    fsync_file(path)  # a read-only descriptor fsyncs a directory as it does a file


def make_dirs(path: Path) -> None:
    """Create directory `path` and missing parents, fsyncing each parent so the new entries are durable."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


def stage_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to the temporary name of `path` and fsync it; return that temporary path."""
    tmp = tmp_path(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def json_bytes(obj: Any) -> bytes:
    """The UTF-8 JSON text of a document, as the dataset stores it."""
    return (json.dumps(obj, indent=2) + "\n").encode()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one."""
    os.replace(stage_bytes(path, data), path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write a JSON document atomically (temp file, fsync, os.replace, fsync of the directory)."""
    write_bytes_atomic(path, json_bytes(obj))


def _is_scratch(root: Path) -> bool:
    """True when `root` holds no file other than the writer lock and temp files (a killed creation)."""
    return all(p.is_dir() or p.name.endswith(TMP_SUFFIX) or p == root / LOCK_FILE for p in root.rglob("*"))


def _fixed_list(values: npt.NDArray[np.float32]) -> Any:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), values.shape[1])


def _write_parquet(table: Any, path: Path) -> None:
    with open(path, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _tasks_table(tasks: list[str]) -> Any:
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})


class DatasetWriter:
    """Creates a dataset at `root` or opens an existing one for append; `fps` is frames per second.

    A root that exists, is non-empty and has no meta/info.json is refused unless `overwrite` (which deletes
    whatever is at `root` first, dataset or not). One writer at a time per dataset: an flock on
    meta/.writer.lock, released by close() or by the process's death.
    """

    def __init__(self, root: Path, fps: float, *, overwrite: bool = False) -> None:
        if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
            raise DatasetError(f"fps must be a finite number > 0 (frames per second), got {fps!r}")
        self.root = Path(root)
        self.fps = float(fps)
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root} exists and is not a directory")
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        creating = not (self.root / INFO_FILE).is_file()
        if creating and self.root.exists() and not _is_scratch(self.root):
            raise DatasetError(
                f"{self.root} exists and is not a dataset (non-empty, no {INFO_FILE}); "
                "choose a new or empty directory, or pass overwrite=True to replace it"
            )
        make_dirs(self.root / "meta")
        self._lock = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock)
            raise DatasetError(f"{self.root} is open in another DatasetWriter") from exc
        self._closed = False
        self._tasks: list[str] = []
        self._stats: dict[str, FeatureStats] = {}
        self._episodes = self._frames = 0
        self._image_size: tuple[int, int] | None = None
        self._wrist_size: tuple[int, int] | None = None
        try:
            if creating:
                self._remove_leftovers()
                self._write_info()
                write_bytes_atomic(self.root / TASKS_FILE, self._tasks_bytes())
                write_json_atomic(self.root / STATS_FILE, stats_document(0, {}))
            else:
                self._open_existing()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ open / recovery

    def _open_existing(self) -> None:
        info = load_info(self.root)
        if not math.isclose(info.fps, self.fps, rel_tol=1e-9):
            raise DatasetError(
                f"fps mismatch: the dataset at {self.root} has fps {info.fps}, the writer got {self.fps}"
            )
        self._episodes, self._frames = info.total_episodes, info.total_frames
        self._image_size, self._wrist_size = info.image_size, info.wrist_size
        self._remove_leftovers()
        stats_path, tasks_path = self.root / STATS_FILE, self.root / TASKS_FILE
        try:
            covered, self._stats = parse_stats_document(read_json(stats_path), str(stats_path))
            table = read_table(tasks_path)
            self._tasks = [str(t) for t in scalar_column(table, "task", tasks_path)]
        except DatasetError:
            covered = -1
        if covered == info.total_episodes and len(self._tasks) == info.total_tasks:
            return
        metas = [read_episode_meta(self.root, info, i) for i in range(info.total_episodes)]
        self._tasks = list(dict.fromkeys(m.task for m in metas))
        if len(self._tasks) != info.total_tasks:
            raise DatasetError(
                f"{self.root / INFO_FILE}: total_tasks is {info.total_tasks}, "
                f"but the committed episodes use {len(self._tasks)} distinct tasks"
            )
        self._stats = aggregate_stats(metas)
        write_bytes_atomic(tasks_path, self._tasks_bytes())
        write_json_atomic(stats_path, stats_document(self._episodes, self._stats))

    def _remove_leftovers(self) -> None:
        """Delete temp files and files of uncommitted episodes (index >= total_episodes)."""
        indexed, temps = scan_episode_files(self.root)
        doomed = temps + [path for index, path in indexed if index >= self._episodes]
        for path in doomed:
            path.unlink(missing_ok=True)
        for parent in {p.parent for p in doomed}:
            fsync_dir(parent)

    # ------------------------------------------------------------ writing

    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return self._episodes

    @property
    def num_frames(self) -> int:
        """Committed frames."""
        return self._frames

    def _tasks_bytes(self) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(_tasks_table(self._tasks), sink)
        return bytes(sink.getvalue().to_pybytes())

    def _write_info(self) -> None:
        doc = build_info(self.fps, self._episodes, self._frames, len(self._tasks), self._image_size, self._wrist_size)
        write_json_atomic(self.root / INFO_FILE, doc)

    def add_episode(self, episode: Episode) -> int:
        """Validate, write and commit one episode; return its episode index. Nothing is written if invalid."""
        if self._closed:
            raise DatasetError(f"the writer of {self.root} is closed")
        first = self._episodes == 0
        image_size, wrist_size = validate_episode(episode, self.fps, self._image_size, self._wrist_size, first)
        index, start, frames = self._episodes, self._frames, episode.frames
        length = len(frames)
        new_task = episode.task not in self._tasks
        task_index = len(self._tasks) if new_task else self._tasks.index(episode.task)
        arrays = {key: np.stack([getattr(f, name) for f in frames]) for name, key in FRAME_FIELDS.items()}
        episode_stats = {key: compute_stats(values) for key, values in arrays.items()}
        sample = np.stack([frames[i].rgb for i in image_sample_indices(length)])
        episode_stats[FRONT_KEY] = compute_image_stats(sample)
        files = episode_files(self.root, index, wrist_size is not None)
        written: list[Path] = []
        tasks_before, committed = list(self._tasks), False
        try:
            for path in files.values():
                make_dirs(path.parent)
            masks = [encode_mask(f.target_mask) for f in frames]
            data = self._data_table(arrays, masks, frames, index, start, task_index)
            for role, path in files.items():
                tmp = tmp_path(path)
                written.append(tmp)
                if role == "data":
                    _write_parquet(data, tmp)
                elif role == "meta":
                    _write_parquet(self._meta_table(episode, index, start, episode_stats, wrist_size), tmp)
                elif role == "depth":
                    write_depth_video(tmp, (f.depth_mm for f in frames), self.fps)
                elif role == "front":
                    write_rgb_video(tmp, (f.rgb for f in frames), self.fps)
                else:
                    write_rgb_video(tmp, (f.wrist_rgb for f in frames if f.wrist_rgb is not None), self.fps)
            for path in files.values():
                os.replace(tmp_path(path), path)
                written.append(path)
            for parent in {p.parent for p in files.values()}:
                fsync_dir(parent)
            if new_task:
                self._tasks.append(episode.task)
                write_bytes_atomic(self.root / TASKS_FILE, self._tasks_bytes())
            stats = {k: pool_stats([self._stats[k], v]) if k in self._stats else v for k, v in episode_stats.items()}
            write_json_atomic(self.root / STATS_FILE, stats_document(index + 1, stats))
            info = build_info(self.fps, index + 1, start + length, len(self._tasks), image_size, wrist_size)
            info_path = self.root / INFO_FILE
            os.replace(stage_bytes(info_path, json_bytes(info)), info_path)
            committed = True
            self._episodes, self._frames, self._stats = index + 1, start + length, stats
            self._image_size, self._wrist_size = image_size, wrist_size
            fsync_dir(info_path.parent)
        except BaseException:
            if not committed:
                self._tasks = tasks_before
                for path in written:
                    path.unlink(missing_ok=True)
            raise
        return index

    def _data_table(
        self,
        arrays: dict[str, npt.NDArray[np.float32]],
        masks: list[npt.NDArray[np.int32]],
        frames: tuple[Frame, ...],
        index: int,
        start: int,
        task_index: int,
    ) -> Any:
        length = len(frames)
        offsets = np.concatenate(([0], np.cumsum([m.size for m in masks]))).astype(np.int32)
        values = np.concatenate(masks) if masks else np.zeros(0, np.int32)
        columns: dict[str, Any] = {key: _fixed_list(arr) for key, arr in arrays.items()}
        columns["observation.target_visible"] = pa.array([bool(f.target_mask.any()) for f in frames], pa.bool_())
        columns["observation.target_mask"] = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), pa.array(values, pa.int32())
        )
        columns[LEARN_KEY] = pa.array([bool(f.learn) for f in frames], pa.bool_())
        columns["next.done"] = pa.array(np.arange(length) == length - 1, pa.bool_())
        columns["timestamp"] = pa.array((np.arange(length) / self.fps).astype(np.float32), pa.float32())
        columns["frame_index"] = pa.array(np.arange(length), pa.int64())
        columns["episode_index"] = pa.array(np.full(length, index), pa.int64())
        columns["index"] = pa.array(np.arange(start, start + length), pa.int64())
        columns["task_index"] = pa.array(np.full(length, task_index), pa.int64())
        return pa.table(columns)

    def _meta_table(
        self,
        episode: Episode,
        index: int,
        start: int,
        stats: dict[str, FeatureStats],
        wrist_size: tuple[int, int] | None,
    ) -> Any:
        chunk, file = divmod(index, CHUNKS_SIZE)
        row: dict[str, Any] = {
            "episode_index": index,
            "length": episode.length,
            "tasks": [episode.task],
            "dataset_from_index": start,
            "dataset_to_index": start + episode.length,
            "target": episode.target,
            "seed": int(episode.seed),
            "outcome": episode.outcome,
            "objects": objects_to_json(episode.objects),
            **({} if episode.camera is None else {"camera": json.dumps(episode.camera.to_dict())}),
            "data/chunk_index": chunk,
            "data/file_index": file,
            "meta/episodes/chunk_index": chunk,
            "meta/episodes/file_index": file,
        }
        for key in (FRONT_KEY, WRIST_KEY) if wrist_size is not None else (FRONT_KEY,):
            row.update(
                {
                    f"videos/{key}/chunk_index": chunk,
                    f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": 0.0,
                    f"videos/{key}/to_timestamp": episode.length / self.fps,
                }
            )
        for name, feature in stats.items():
            for key in ("min", "max", "mean", "std"):
                row[f"stats/{name}/{key}"] = getattr(feature, key).reshape(-1).tolist()
            row[f"stats/{name}/count"] = feature.count
        return pa.Table.from_pylist([row])

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the dataset (its lock); further add_episode calls raise. Idempotent."""
        self._closed = True
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
