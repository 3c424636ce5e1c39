"""On-disk format and reader of the offline feature cache (built by `policy.cache`).

Layout of a cache directory `<root>/<key>/` (root defaults to `<DATA>/cache`):
- `ep-XXXXXX.safetensors`, one per episode: `tokens` (T, n, C) float16, `extras` (T, 7 or 11) float32 (see
  `policy.features`), `boxes` (T, 4) float32 mask boxes in frame pixels, `scores` (T,) float32 object-score logits;
  string metadata: format, key, episode index, episode hash, frames.
- `manifest.json`: the key's fields; once complete (after a run without a shard, or `merge_cache`), also the
  episode list and the totals. `FeatureCache` reads only complete caches.
- `shard-I-of-N.json`: which shard ran on how many episodes and whether it finished (for merge's messages).

The key is a short sha256 of the cache format, tracker name, image size, the tracker settings that change its
numbers (memory_frames, score_threshold, dtype; not encode_batch, which only batches the encoder), the sha256 of
the model's state dict (checkpoint or seeded random init alike) and the feature spec's name. A changed setting is
another directory: stale features are never read. The episode hash is a sha256 of the episode's data parquet and
front video bytes. An episode file is reused when its metadata names the current key and episode hash, otherwise
recomputed. Files are written under a unique temporary name, fsynced and `os.replace`d: a kill leaves at most a
`*.tmp` file, which the next run that owns that episode removes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.dataset.layout import DATA_PATH, FRONT_KEY, VIDEO_PATH, episode_path
from pipeline.dataset.reader import Dataset
from policy.features import FeatureSpec, parse_feature_spec

#: Bumped whenever stored numbers would change for the same inputs (feature extraction, file contents).
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_TENSORS = ("tokens", "extras", "boxes", "scores")


#: Key fields added after the first caches were built, with the defaults those caches were built under.
_LATER_FIELDS: dict[str, object] = {"mask_source": "tracker", "occlusion": 0.0, "crop": "full"}
_UNSET = object()


class CacheError(ValueError):
    """A cache that cannot be built, merged or read as asked; the message says what is missing or stale."""


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class CacheKey:
    """What the cached numbers depend on. image_size: tracker input pixels; weights_sha256: hex sha256 of the
    model's state dict; features: feature spec name ("pooled4", "masked", "pointer")."""

    tracker: str
    image_size: int
    memory_frames: int
    score_threshold: float
    dtype: str
    weights_sha256: str
    features: str
    mask_source: str = "tracker"
    occlusion: float = 0.0
    crop: str = "full"

    @property
    def digest(self) -> str:
        """16 hex digits naming the cache directory (the fields added later — mask_source, occlusion, crop — enter only
        when they differ from their defaults, so caches built before they existed keep their names)."""
        fields = {k: v for k, v in asdict(self).items() if _LATER_FIELDS.get(k, _UNSET) != v}
        text = json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_manifest(cls, doc: Any, where: Path) -> CacheKey:
        """The key recorded in a manifest; CacheError naming the file when fields are missing or of another format."""
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise CacheError(f"{where}: not a feature-cache manifest of format {CACHE_FORMAT} (format: {found})")
        try:
            fields = doc["key_fields"]
            key = cls(**{name: fields.get(name, _LATER_FIELDS.get(name)) for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise CacheError(f"{where}: key_fields incomplete ({exc}); rerun `sam2grasp cache`") from exc
        if key.digest != doc.get("key"):
            raise CacheError(f"{where}: key {doc.get('key')!r} does not match its fields (digest {key.digest})")
        return key


# ---------------------------------------------------------------- files


def episode_file(directory: Path, episode: int) -> Path:
    """Path of one episode's features in a cache directory."""
    return directory / f"ep-{episode:06d}.safetensors"


def episode_sha256(dataset: Dataset, episode: int) -> str:
    """Hex sha256 of the episode's data parquet and front video bytes (changes whenever the episode does)."""
    digest = hashlib.sha256()
    for path in (
        episode_path(dataset.root, DATA_PATH, episode),
        episode_path(dataset.root, VIDEO_PATH, episode, FRONT_KEY),
    ):
        try:
            with open(path, "rb") as handle:
                digest.update(f"{path.name}|{os.fstat(handle.fileno()).st_size}|".encode())
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise CacheError(
                f"episode {episode}: {path} is missing; the dataset is damaged (sam2grasp dataset-check)"
            ) from exc
    return digest.hexdigest()


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, list[int]]] | None:
    """(metadata, tensor shapes) of a safetensors file, or None when it is absent or unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
            return dict(handle.metadata() or {}), shapes
    except (OSError, SafetensorError, ValueError):
        return None


def _stale_reason(path: Path, key: str, episode_hash: str, frames: int, extras_dim: int) -> str | None:
    """None when `path` holds this episode's features under `key` (`extras_dim` extras a frame); otherwise why it
    cannot be used."""
    header = _read_header(path)
    if header is None:
        return "missing" if not path.exists() else "unreadable"
    meta, shapes = header
    if meta.get("format") != str(CACHE_FORMAT) or meta.get("key") != key:
        return f"written under another key ({meta.get('key')})"
    if meta.get("episode_hash") != episode_hash:
        return "stale: the episode changed since it was cached"
    expected = {"extras": [frames, extras_dim], "boxes": [frames, 4], "scores": [frames]}
    if sorted(shapes) != sorted(_TENSORS) or any(shapes[k] != v for k, v in expected.items()):
        return f"holds {shapes}, expected {frames} frames of {', '.join(_TENSORS)}"
    if len(shapes["tokens"]) != 3 or shapes["tokens"][0] != frames:
        return f"tokens of shape {shapes['tokens']}, expected ({frames}, n, C)"
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: cannot be parsed as JSON ({exc}); delete it and rerun `sam2grasp cache`") from exc


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class CachedEpisode:
    """Cached F_t of one episode: tokens (T, n, C) float16 or float32, extras (T, 7 or 11) float32, boxes (T, 4)
    float32 mask boxes in frame pixels, scores (T,) float32 object-score logits."""

    episode: int
    tokens: npt.NDArray[np.floating[Any]]
    extras: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class FeatureCache:
    """A complete cache directory (written by a run without shards, or by `merge_cache`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        doc = _read_json(self.path / MANIFEST)
        if doc is None:
            raise CacheError(f"no feature cache at {self.path} ({MANIFEST} missing); run `sam2grasp cache`")
        self.key = CacheKey.from_manifest(doc, self.path / MANIFEST)
        if doc.get("complete") is not True:
            raise CacheError(f"cache {self.path} is incomplete: finish its shards and run `sam2grasp cache-merge`")
        self._entries: dict[int, dict[str, Any]] = {int(x["episode"]): x for x in doc["episodes"]}
        shape = doc.get("token_shape") or [0, 0]
        #: (n, C): tokens per frame and channels.
        self.token_shape = (int(shape[0]), int(shape[1]))

    @property
    def spec(self) -> FeatureSpec:
        """The feature spec the tokens were made with."""
        return parse_feature_spec(self.key.features)

    @property
    def episodes(self) -> tuple[int, ...]:
        """Cached episode indices, ascending."""
        return tuple(sorted(self._entries))

    @property
    def frames(self) -> int:
        """Frames over all cached episodes."""
        return sum(int(x["frames"]) for x in self._entries.values())

    def load(self, episode: int, dtype: str = "float32") -> CachedEpisode:
        """One episode's features, tokens as `dtype` ("float32" or "float16")."""
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        entry = self._entries.get(episode)
        if entry is None:
            held = f"{min(self._entries)}..{max(self._entries)}" if self._entries else "none"
            raise CacheError(f"episode {episode} is not in the cache {self.path} (episodes {held})")
        path = episode_file(self.path, episode)
        reason = _stale_reason(
            path, self.key.digest, str(entry["episode_hash"]), int(entry["frames"]), self.spec.extras_dim
        )
        if reason is not None:
            raise CacheError(f"{path}: {reason} since the manifest was written; rerun `sam2grasp cache` and merge")
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
        return CachedEpisode(
            episode=episode,
            tokens=arrays["tokens"].astype(dtype, copy=False),
            extras=arrays["extras"],
            boxes=arrays["boxes"],
            scores=arrays["scores"],
        )

    def verify(self, data: Path) -> list[str]:
        """Problems of this cache against the dataset at `data` (episodes changed, added or removed since)."""
        dataset = Dataset(data)
        problems = [f"episode {e} is not cached" for e in range(len(dataset)) if e not in self._entries]
        problems += [f"episode {e} is no longer in the dataset" for e in self._entries if e >= len(dataset)]
        for e, entry in sorted(self._entries.items()):
            if e < len(dataset) and episode_sha256(dataset, e) != entry["episode_hash"]:
                problems.append(f"episode {e} changed since it was cached")
        return problems
