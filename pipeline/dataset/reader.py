"""Reading a dataset: committed episodes only (index < info.json's total_episodes), nothing beyond.

Statistics: `Dataset.stats` returns stats.json when it covers exactly the committed episodes; when its
"episodes" disagrees (a write was killed between stats.json and info.json), the reader recomputes the pooled
statistics from the committed episodes' meta rows instead, and `Dataset.stats_recomputed` is True.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset.layout import (
    DATA_PATH,
    DEPTH_KEY,
    DEPTH_PATH,
    EPISODES_PATH,
    FRONT_KEY,
    LEARN_KEY,
    MASK_KEY,
    STATS_FILE,
    TASKS_FILE,
    VECTOR_FEATURES,
    VIDEO_PATH,
    WRIST_KEY,
    DatasetError,
    FeatureStats,
    Info,
    episode_path,
    load_info,
    parse_stats_document,
    pool_stats,
    read_json,
)
from pipeline.dataset.records import ObjectRecord
from pipeline.dataset.rle import decode_mask
from pipeline.dataset.video import iter_rgb_video, read_depth_video, read_rgb_video
from robot.camera_view import CameraView

_STAT_KEYS = ("min", "max", "mean", "std")


@dataclass(frozen=True)
class EpisodeMeta:
    """One committed episode's meta row. from_index/to_index: global frame indices [from, to)."""

    index: int
    length: int
    task: str
    target: str
    seed: int
    outcome: str
    objects: tuple[ObjectRecord, ...]
    from_index: int
    to_index: int
    stats: dict[str, FeatureStats] = field(repr=False)
    camera: CameraView | None = field(default=None, repr=False)

    def target_object(self) -> ObjectRecord | None:
        """The record of the episode's target among its objects (None when it is not among them)."""
        return next((o for o in self.objects if o.instance == self.target), None)


@dataclass(frozen=True)
class EpisodeData:
    """One episode's arrays (T frames). Units as in `records.Frame`; timestamps in seconds from the start.

    rgb: (T, H, W, 3) uint8, depth_mm: (T, H, W) uint16 millimetres, wrist_rgb: (T, h, w, 3) uint8; each None
    when not loaded (or, for the wrist, not recorded). Masks are kept run-length encoded; decode with
    `target_mask(t)`. learn: (T,) bool, the action is a label to learn (all True in a dataset without the column).
    """

    index: int
    task: str
    timestamps: npt.NDArray[np.float32]
    state: npt.NDArray[np.float32]
    action: npt.NDArray[np.float32]
    ee_pose: npt.NDArray[np.float32]
    target_box: npt.NDArray[np.float32]
    target_visible: npt.NDArray[np.bool_]
    mask_counts: tuple[npt.NDArray[np.int32], ...] = field(repr=False)
    mask_shape: tuple[int, int]
    learn: npt.NDArray[np.bool_] = field(default_factory=lambda: np.ones(0, np.bool_), repr=False)
    rgb: npt.NDArray[np.uint8] | None = field(default=None, repr=False)
    depth_mm: npt.NDArray[np.uint16] | None = field(default=None, repr=False)
    wrist_rgb: npt.NDArray[np.uint8] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.state.shape[0])

    def target_mask(self, t: int) -> npt.NDArray[np.bool_]:
        """The (H, W) bool target mask of frame t."""
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} out of range: the episode has {len(self)} frames (0..{len(self) - 1})")
        return decode_mask(self.mask_counts[t], self.mask_shape)


# ---------------------------------------------------------------- table helpers (shared with writer/check)


def read_table(path: Path) -> Any:
    """Read a parquet file; DatasetError naming it when missing or unreadable (e.g. truncated)."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def column(table: Any, name: str, where: Path) -> Any:
    """One column of a table as a single pyarrow array; DatasetError when absent."""
    if name not in table.column_names:
        raise DatasetError(f"{where}: column '{name}' missing (has {table.column_names})")
    return table.column(name).combine_chunks()


def vector_column(table: Any, name: str, width: int, where: Path) -> npt.NDArray[np.float32]:
    """A list<float32>[width] column as a (T, width) float32 array."""
    col = column(table, name, where)
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    if values.size != len(col) * width:
        raise DatasetError(f"{where}: column '{name}' should hold {width} values per row, found {values.size}")
    return values.reshape(len(col), width)


def scalar_column(table: Any, name: str, where: Path) -> npt.NDArray[Any]:
    """A scalar column as a numpy array."""
    return np.asarray(column(table, name, where).to_numpy(zero_copy_only=False))


def mask_column(table: Any, where: Path) -> tuple[npt.NDArray[np.int32], ...]:
    """The RLE mask column as one int32 counts array per row."""
    col = column(table, MASK_KEY, where)
    lengths = np.asarray(col.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
    return tuple(np.split(values, np.cumsum(lengths)[:-1]))


def objects_to_json(objects: tuple[ObjectRecord, ...]) -> str:
    """The JSON text stored in the episode meta's `objects` column."""
    return json.dumps(
        [
            {
                "instance": o.instance,
                "name": o.name,
                "colour": o.colour,
                "shape": o.shape,
                "position": list(o.position),
                "quat": list(o.quat),
                "box": list(o.box),
            }
            for o in objects
        ]
    )


def objects_from_json(text: str, where: str) -> tuple[ObjectRecord, ...]:
    """Parse the `objects` column back into ObjectRecords."""
    try:
        return tuple(
            ObjectRecord(
                instance=str(o["instance"]),
                name=str(o["name"]),
                colour=str(o["colour"]),
                shape=str(o["shape"]),
                position=(float(o["position"][0]), float(o["position"][1]), float(o["position"][2])),
                quat=(float(o["quat"][0]), float(o["quat"][1]), float(o["quat"][2]), float(o["quat"][3])),
                box=(float(o["box"][0]), float(o["box"][1]), float(o["box"][2]), float(o["box"][3])),
            )
            for o in json.loads(text)
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"{where}: column 'objects' is not a valid object list ({exc})") from exc


def camera_from_json(text: Any, where: str) -> CameraView | None:
    """Parse the optional `camera` column (absent or null in datasets recorded without it: None)."""
    if text is None:
        return None
    try:
        return CameraView.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{where}: column 'camera' is not a valid camera view ({exc})") from exc


def stats_features(info: Info) -> list[str]:
    """Features with per-episode statistics: the numeric vectors, plus the front camera once it exists."""
    return [*VECTOR_FEATURES, FRONT_KEY] if info.image_size is not None else list(VECTOR_FEATURES)


def read_episode_meta(root: Path, info: Info, index: int) -> EpisodeMeta:
    """Read and validate one episode's meta row from meta/episodes/."""
    path = episode_path(root, EPISODES_PATH, index)
    table = read_table(path)
    if table.num_rows != 1:
        raise DatasetError(f"{path}: expected 1 row for episode {index}, found {table.num_rows}")
    row = {name: table.column(name)[0].as_py() for name in table.column_names}
    required = (
        "episode_index",
        "length",
        "tasks",
        "dataset_from_index",
        "dataset_to_index",
        "target",
        "seed",
        "outcome",
        "objects",
    )
    missing = [key for key in required if key not in row]
    if missing:
        raise DatasetError(f"{path}: columns {missing} missing")
    if row["episode_index"] != index:
        raise DatasetError(f"{path}: episode_index is {row['episode_index']}, expected {index}")
    if not isinstance(row["tasks"], list) or len(row["tasks"]) != 1:
        raise DatasetError(f"{path}: 'tasks' should list exactly one task, found {row['tasks']!r}")
    stats: dict[str, FeatureStats] = {}
    for name in stats_features(info):
        keys = [f"stats/{name}/{key}" for key in (*_STAT_KEYS, "count")]
        if any(key not in row for key in keys):
            raise DatasetError(f"{path}: statistics columns stats/{name}/... missing")
        arrays = [np.asarray(row[key], dtype=np.float64) for key in keys[:4]]
        if name == FRONT_KEY:
            arrays = [a.reshape(3, 1, 1) for a in arrays]
        stats[name] = FeatureStats(arrays[0], arrays[1], arrays[2], arrays[3], int(row[keys[4]]))
    return EpisodeMeta(
        index=index,
        length=int(row["length"]),
        task=str(row["tasks"][0]),
        target=str(row["target"]),
        seed=int(row["seed"]),
        outcome=str(row["outcome"]),
        objects=objects_from_json(row["objects"], str(path)),
        from_index=int(row["dataset_from_index"]),
        to_index=int(row["dataset_to_index"]),
        stats=stats,
        camera=camera_from_json(row.get("camera"), str(path)),
    )


def read_tasks(root: Path, total_tasks: int) -> list[str]:
    """The first `total_tasks` tasks of meta/tasks.parquet (later rows belong to uncommitted episodes)."""
    path = root / TASKS_FILE
    if total_tasks == 0 and not path.exists():
        return []
    table = read_table(path)
    indices = scalar_column(table, "task_index", path)
    tasks = [str(t) for t in scalar_column(table, "task", path)]
    if len(tasks) < total_tasks or list(indices[:total_tasks]) != list(range(total_tasks)):
        raise DatasetError(f"{path}: expected task_index 0..{total_tasks - 1}, found {list(indices)}")
    return tasks[:total_tasks]


def aggregate_stats(metas: list[EpisodeMeta]) -> dict[str, FeatureStats]:
    """Pooled statistics over the given episodes (empty dict for none)."""
    if not metas:
        return {}
    return {name: pool_stats([m.stats[name] for m in metas]) for name in metas[0].stats}


# ---------------------------------------------------------------- the reader


class Dataset:
    """Read-only view of the committed episodes of a dataset at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._info = load_info(self.root)
        self._tasks = read_tasks(self.root, self._info.total_tasks)
        self._metas: dict[int, EpisodeMeta] = {}
        self._stats: dict[str, FeatureStats] | None = None
        self.stats_recomputed = False

    def __len__(self) -> int:
        return self._info.total_episodes

    @property
    def info(self) -> Info:
        """The parsed meta/info.json."""
        return self._info

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self._info.fps

    @property
    def total_frames(self) -> int:
        """Frames over all committed episodes."""
        return self._info.total_frames

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) pixels of the front camera; None for a dataset with no episodes yet."""
        return self._info.image_size

    @property
    def wrist_size(self) -> tuple[int, int] | None:
        """(H, W) pixels of the wrist camera; None when the dataset has no wrist video."""
        return self._info.wrist_size

    @property
    def tasks(self) -> tuple[str, ...]:
        """The command texts, indexed by task_index."""
        return tuple(self._tasks)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} out of range: the dataset has {len(self)} episodes")

    def episode_meta(self, index: int) -> EpisodeMeta:
        """The meta row of committed episode `index`."""
        self._check_index(index)
        if index not in self._metas:
            self._metas[index] = read_episode_meta(self.root, self._info, index)
        return self._metas[index]

    def load_episode(self, index: int, *, images: bool = True, depth: bool = False) -> EpisodeData:
        """Load episode `index`: its frame table, plus decoded videos when `images` / `depth` are set."""
        meta = self.episode_meta(index)
        path = episode_path(self.root, DATA_PATH, index)
        table = read_table(path)
        if table.num_rows != meta.length:
            raise DatasetError(f"{path}: {table.num_rows} rows, but episode {index} has length {meta.length}")
        vectors = {name: vector_column(table, name, len(names), path) for name, names in VECTOR_FEATURES.items()}
        size = self.image_size
        if size is None:
            raise DatasetError(f"{self.root}: info.json has no front camera size")

        def video(key: str, template: str, reader: Any) -> Any:
            frames = reader(episode_path(self.root, template, index, key))
            if frames.shape[0] != meta.length:
                raise DatasetError(f"{key} of episode {index}: {frames.shape[0]} frames, expected {meta.length}")
            return frames

        return EpisodeData(
            index=index,
            task=meta.task,
            timestamps=np.asarray(scalar_column(table, "timestamp", path), dtype=np.float32),
            state=vectors["observation.state"],
            action=vectors["action"],
            ee_pose=vectors["observation.ee_pose"],
            target_box=vectors["observation.target_box"],
            target_visible=np.asarray(scalar_column(table, "observation.target_visible", path), dtype=np.bool_),
            mask_counts=mask_column(table, path),
            mask_shape=size,
            learn=(
                np.asarray(scalar_column(table, LEARN_KEY, path), dtype=np.bool_)
                if LEARN_KEY in table.column_names
                else np.ones(table.num_rows, np.bool_)
            ),
            rgb=video(FRONT_KEY, VIDEO_PATH, read_rgb_video) if images else None,
            wrist_rgb=video(WRIST_KEY, VIDEO_PATH, read_rgb_video) if images and self.wrist_size else None,
            depth_mm=video(DEPTH_KEY, DEPTH_PATH, read_depth_video) if depth else None,
        )

    def iter_frames(self, index: int, camera: str = "front") -> Iterator[npt.NDArray[np.uint8]]:
        """Yield the (H, W, 3) uint8 frames of episode `index` one at a time ("front" or "wrist" camera)."""
        self._check_index(index)
        keys = {"front": FRONT_KEY, **({"wrist": WRIST_KEY} if self.wrist_size else {})}
        if camera not in keys:
            raise ValueError(f"camera {camera!r} not in this dataset; valid: {sorted(keys)}")
        yield from iter_rgb_video(episode_path(self.root, VIDEO_PATH, index, keys[camera]))

    @property
    def stats(self) -> dict[str, FeatureStats]:
        """Per-feature statistics over the committed episodes (see the module docstring)."""
        if self._stats is None:
            path = self.root / STATS_FILE
            covered, stats = -1, dict[str, FeatureStats]()
            if path.is_file():
                covered, stats = parse_stats_document(read_json(path), str(path))
            if covered == len(self):
                self._stats = stats
            else:
                self._stats = aggregate_stats([self.episode_meta(i) for i in range(len(self))])
                self.stats_recomputed = True
        return self._stats
