"""File layout, commit record (`meta/info.json`), and statistics (`meta/stats.json`) of a dataset.

An episode exists iff its index < info.json's `total_episodes`: info.json is the commit record and is
always replaced last, so anything on disk for higher indices (or with a `.tmp` suffix) is a leftover of a
killed write.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.dataset.records import EE_POSE_NAMES, JOINT_NAMES

CODEBASE_VERSION = "v3.0"
FORMAT_VERSION = 1
CHUNKS_SIZE = 1000
ROBOT_TYPE = "ur5e"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
DEPTH_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mkv"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_FILE = "meta/info.json"
STATS_FILE = "meta/stats.json"
TASKS_FILE = "meta/tasks.parquet"
LOCK_FILE = "meta/.writer.lock"
TMP_SUFFIX = ".tmp"

#: Per-frame bool: the action is a label to learn (absent in datasets written before it: every label learned).
LEARN_KEY = "action.learn"
FRONT_KEY = "observation.images.front"
WRIST_KEY = "observation.images.wrist"
DEPTH_KEY = "observation.depth.front"
MASK_KEY = "observation.target_mask"
#: Numeric per-frame vectors: column name -> entry names (the length is the vector size).
VECTOR_FEATURES: dict[str, tuple[str, ...]] = {
    "observation.state": JOINT_NAMES,
    "action": JOINT_NAMES,
    "observation.ee_pose": EE_POSE_NAMES,
    "observation.target_box": ("x0", "y0", "x1", "y1"),
}
#: `records.Frame` attribute -> column, for the numeric per-frame vectors.
FRAME_FIELDS = dict(zip(("state", "action", "ee_pose", "target_box"), VECTOR_FEATURES, strict=True))
#: Frames per episode, evenly spaced, whose pixels feed the image statistics.
IMAGE_STATS_FRAMES = 8
IMAGE_STATS_NOTE = f"computed on up to {IMAGE_STATS_FRAMES} evenly spaced frames per episode, all pixels"
_TOTALS = ("total_episodes", "total_frames", "total_tasks")
_LAYOUT_KEYS = ("chunks_size", "data_path", "video_path", "features", "sam2grasp")
REQUIRED_INFO_KEYS: tuple[str, ...] = ("codebase_version", "fps", *_TOTALS, *_LAYOUT_KEYS)
_EPISODE_FILE = re.compile(r"^chunk-(\d{3,})/file-(\d{3,})\.(parquet|mp4|mkv)$")


class DatasetError(ValueError):
    """The directory is not a (valid) dataset, or an operation on it is not possible; the message says why."""


def episode_path(root: Path, template: str, episode_index: int, video_key: str = "") -> Path:
    """Path of one episode's file from a layout template (chunk = index // 1000, file = index % 1000)."""
    chunk, file = divmod(episode_index, CHUNKS_SIZE)
    return root / template.format(chunk_index=chunk, file_index=file, video_key=video_key)


def episode_files(root: Path, episode_index: int, has_wrist: bool) -> dict[str, Path]:
    """Every file of one episode, by role: data, front, wrist (when recorded), depth, meta."""
    files = {
        "data": episode_path(root, DATA_PATH, episode_index),
        "front": episode_path(root, VIDEO_PATH, episode_index, FRONT_KEY),
        "depth": episode_path(root, DEPTH_PATH, episode_index, DEPTH_KEY),
        "meta": episode_path(root, EPISODES_PATH, episode_index),
    }
    if has_wrist:
        files["wrist"] = episode_path(root, VIDEO_PATH, episode_index, WRIST_KEY)
    return files


def scan_episode_files(root: Path) -> tuple[list[tuple[int, Path]], list[Path]]:
    """Per-episode files under data/, videos/, meta/ with their episode index; and all temp files."""
    indexed: list[tuple[int, Path]] = []
    temps: list[Path] = []
    for top in (root / "data", root / "videos", root / "meta"):
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            if not path.is_file():
                continue
            if path.name.endswith(TMP_SUFFIX):
                temps.append(path)
                continue
            match = _EPISODE_FILE.match(f"{path.parent.name}/{path.name}")
            if match:
                indexed.append((int(match[1]) * CHUNKS_SIZE + int(match[2]), path))
    return indexed, temps


# ---------------------------------------------------------------- temp names, JSON


def tmp_path(path: Path) -> Path:
    """The temporary name next to `path` under which it is written before `os.replace`."""
    return path.with_name(path.name + TMP_SUFFIX)


def read_json(path: Path) -> Any:
    """Parse a JSON file; DatasetError naming the file when it is missing or invalid."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: missing") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be parsed as JSON ({exc})") from exc


# ---------------------------------------------------------------- info.json


@dataclass(frozen=True)
class Info:
    """The parsed commit record. image_size / wrist_size are (H, W) pixels, None before the first episode."""

    fps: float
    total_episodes: int
    total_frames: int
    total_tasks: int
    image_size: tuple[int, int] | None
    wrist_size: tuple[int, int] | None
    raw: dict[str, Any]


def _video_feature(size: tuple[int, int], fps: float) -> dict[str, Any]:
    height, width = size
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": "h264",
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def build_info(
    fps: float,
    total_episodes: int,
    total_frames: int,
    total_tasks: int,
    image_size: tuple[int, int] | None,
    wrist_size: tuple[int, int] | None,
) -> dict[str, Any]:
    """The info.json document for the given totals and camera sizes ((H, W) pixels)."""
    scalar = {"shape": [1], "names": None}
    features: dict[str, Any] = {
        name: {"dtype": "float32", "shape": [len(names)], "names": list(names)}
        for name, names in VECTOR_FEATURES.items()
    }
    features["observation.target_visible"] = {"dtype": "bool", **scalar}
    features[MASK_KEY] = {
        "dtype": "int32",
        "shape": [-1],
        "names": None,
        "info": {"encoding": "rle, row-major, first run = False", "mask_shape": list(image_size or [])},
    }
    features["next.done"] = {"dtype": "bool", **scalar}
    features[LEARN_KEY] = {"dtype": "bool", **scalar}
    features["timestamp"] = {"dtype": "float32", **scalar}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", **scalar}
    cameras: dict[str, Any] = {}
    if image_size is not None:
        features[FRONT_KEY] = _video_feature(image_size, fps)
        cameras["front"] = {"key": FRONT_KEY, "height": image_size[0], "width": image_size[1]}
    if wrist_size is not None:
        features[WRIST_KEY] = _video_feature(wrist_size, fps)
        cameras["wrist"] = {"key": WRIST_KEY, "height": wrist_size[0], "width": wrist_size[1]}
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": ROBOT_TYPE,
        "fps": fps,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
        "sam2grasp": {
            "format": FORMAT_VERSION,
            "cameras": cameras,
            "depth_path": DEPTH_PATH,
            "depth": {
                "key": DEPTH_KEY,
                "codec": "ffv1",
                "pix_fmt": "gray16le",
                "container": "matroska",
                "unit": "mm",
                "lossless": True,
            },
            "episodes_path": EPISODES_PATH,
        },
    }


def _int(raw: dict[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DatasetError(f"{where}: '{key}' must be an int >= 0, found {value!r}")
    return value


def _size(camera: Any, where: str) -> tuple[int, int] | None:
    if camera is None:
        return None
    try:
        return int(camera["height"]), int(camera["width"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: camera entry needs int 'height' and 'width', found {camera!r}") from exc


def parse_info(raw: Any, where: str) -> Info:
    """Validate an info.json document; DatasetError naming the missing or wrong key."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected a JSON object, found {type(raw).__name__}")
    missing = [key for key in REQUIRED_INFO_KEYS if key not in raw]
    if missing:
        raise DatasetError(f"{where}: missing keys {missing}")
    if raw["codebase_version"] != CODEBASE_VERSION:
        raise DatasetError(f"{where}: codebase_version is {raw['codebase_version']!r}, expected {CODEBASE_VERSION!r}")
    fps = raw["fps"]
    if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise DatasetError(f"{where}: 'fps' must be a number > 0, found {fps!r}")
    ours = raw["sam2grasp"]
    if not isinstance(ours, dict) or ours.get("format") != FORMAT_VERSION:
        raise DatasetError(f"{where}: 'sam2grasp.format' must be {FORMAT_VERSION}, found {ours!r}")
    layout = {
        "chunks_size": (raw["chunks_size"], CHUNKS_SIZE),
        "data_path": (raw["data_path"], DATA_PATH),
        "video_path": (raw["video_path"], VIDEO_PATH),
        "sam2grasp.depth_path": (ours.get("depth_path"), DEPTH_PATH),
    }
    for key, (found, expected) in layout.items():
        if found != expected:
            raise DatasetError(f"{where}: '{key}' is {found!r}, this reader supports only {expected!r}")
    cameras = ours.get("cameras")
    if not isinstance(cameras, dict):
        raise DatasetError(f"{where}: 'sam2grasp.cameras' must be an object, found {cameras!r}")
    info = Info(
        fps=float(fps),
        total_episodes=_int(raw, "total_episodes", where),
        total_frames=_int(raw, "total_frames", where),
        total_tasks=_int(raw, "total_tasks", where),
        image_size=_size(cameras.get("front"), where),
        wrist_size=_size(cameras.get("wrist"), where),
        raw=raw,
    )
    if info.total_episodes > 0 and info.image_size is None:
        raise DatasetError(f"{where}: {info.total_episodes} episodes but no 'sam2grasp.cameras.front' size")
    return info


def load_info(root: Path) -> Info:
    """Read and validate `root/meta/info.json`."""
    path = root / INFO_FILE
    if not path.is_file():
        what = "directory does not exist" if not root.exists() else f"{INFO_FILE} is missing"
        raise DatasetError(f"{root} is not a dataset: {what}")
    return parse_info(read_json(path), str(path))


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class FeatureStats:
    """Statistics of one feature over `count` frames: per-entry min, max, mean, population std (float64).

    Vectors have shape (D,); images have shape (3, 1, 1) (channels, values in [0, 1]) and `count` is the
    number of frames sampled.
    """

    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    count: int

    def to_json(self) -> dict[str, Any]:
        """The stats.json entry (LeRobot style: arrays as nested lists, count as [n])."""
        return {
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "count": [self.count],
        }

    @staticmethod
    def from_json(entry: Any, where: str) -> FeatureStats:
        """Parse a stats.json entry; DatasetError naming `where` when a key is missing or malformed."""
        try:
            arrays = [np.asarray(entry[key], dtype=np.float64) for key in ("min", "max", "mean", "std")]
            count = int(np.asarray(entry["count"]).reshape(-1)[0])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DatasetError(f"{where}: needs min, max, mean, std and count ({exc})") from exc
        return FeatureStats(arrays[0], arrays[1], arrays[2], arrays[3], count)

    def close_to(self, other: FeatureStats, tol: float) -> bool:
        """True when every array agrees within `tol` (absolute) and the counts are equal."""
        pairs = zip(
            (self.min, self.max, self.mean, self.std),
            (other.min, other.max, other.mean, other.std),
            strict=True,
        )
        return self.count == other.count and all(
            a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol)) for a, b in pairs
        )


def compute_stats(values: npt.NDArray[np.floating[Any]]) -> FeatureStats:
    """Statistics over the first axis of a (T, D) array (population std)."""
    data = np.asarray(values, dtype=np.float64)
    return FeatureStats(data.min(axis=0), data.max(axis=0), data.mean(axis=0), data.std(axis=0), int(data.shape[0]))


def image_sample_indices(length: int) -> npt.NDArray[np.int64]:
    """Indices of the frames of a `length`-frame episode used for image statistics."""
    return np.unique(np.linspace(0, length - 1, min(IMAGE_STATS_FRAMES, length)).round().astype(np.int64))


def compute_image_stats(frames: npt.NDArray[np.uint8]) -> FeatureStats:
    """Per-channel statistics, values in [0, 1], of (N, H, W, 3) uint8 frames; arrays shaped (3, 1, 1)."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = compute_stats(pixels)
    shape = (3, 1, 1)
    return FeatureStats(
        stats.min.reshape(shape),
        stats.max.reshape(shape),
        stats.mean.reshape(shape),
        stats.std.reshape(shape),
        int(frames.shape[0]),
    )


def pool_stats(parts: Sequence[FeatureStats]) -> FeatureStats:
    """Exact statistics of the union of groups, from each group's count, mean and std."""
    if not parts:
        raise ValueError("cannot pool an empty list of statistics")
    counts = np.array([p.count for p in parts], dtype=np.float64)
    total = float(counts.sum())
    weights = counts.reshape((-1,) + (1,) * parts[0].mean.ndim) / total
    means = np.stack([p.mean for p in parts])
    mean = (weights * means).sum(axis=0)
    var = (weights * (np.stack([p.std for p in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    return FeatureStats(
        np.min(np.stack([p.min for p in parts]), axis=0),
        np.max(np.stack([p.max for p in parts]), axis=0),
        mean,
        np.sqrt(np.maximum(var, 0.0)),
        int(total),
    )


def stats_document(episodes: int, stats: dict[str, FeatureStats]) -> dict[str, Any]:
    """The stats.json document: one entry per feature plus "episodes" (how many episodes it covers)."""
    doc: dict[str, Any] = {"episodes": episodes}
    for name, feature in stats.items():
        doc[name] = feature.to_json()
        if name == FRONT_KEY:
            doc[name]["subsample"] = IMAGE_STATS_NOTE
    return doc


def parse_stats_document(raw: Any, where: str) -> tuple[int, dict[str, FeatureStats]]:
    """(episodes covered, per-feature stats) of a stats.json document."""
    if not isinstance(raw, dict) or not isinstance(raw.get("episodes"), int):
        raise DatasetError(f"{where}: expected an object with an int 'episodes'")
    stats = {
        name: FeatureStats.from_json(entry, f"{where} [{name}]") for name, entry in raw.items() if name != "episodes"
    }
    return int(raw["episodes"]), stats
