"""Offline feature cache: the frozen tracker runs once over every episode and F_t is stored, so only the head trains.

This module builds, shards and merges caches; their on-disk layout, key and the reader (`FeatureCache`) are in
`policy.cache_store`.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from pipeline.atomic_file import write_atomic, write_json
from pipeline.dataset.reader import Dataset
from pipeline.dataset.writer import make_dirs
from policy.cache_store import (
    CACHE_FORMAT,
    MANIFEST,
    CacheError,
    CacheKey,
    _read_header,
    _read_json,
    _stale_reason,
    episode_file,
    episode_sha256,
)
from policy.features import FeatureSpec, extract, parse_feature_spec
from policy.sam2_build import build_sam2, checkpoint_crop, format_crop, tracker_spec
from policy.tracker import SAM2Tracker, TrackerConfig, TrackerInputError

_X = TypeVar("_X")


# ---------------------------------------------------------------- keys and shards


@dataclass(frozen=True)
class Shard:
    """Episodes with index % count == index belong to this shard (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard must be I/N with N >= 1 and 0 <= I < N (e.g. 0/2, 1/2), got {self.label}")

    @property
    def label(self) -> str:
        """ "I/N"."""
        return f"{self.index}/{self.count}"

    def owns(self, episode: int) -> bool:
        """True when `episode` is this shard's work."""
        return episode % self.count == self.index


def parse_shard(text: str) -> Shard:
    """ "I/N" as a Shard, or a ValueError saying what is valid."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shard must be I/N with 0 <= I < N (e.g. 0/2, 1/2), got {text!r}")
    return Shard(int(parts[0]), int(parts[1]))


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex sha256 over the names, dtypes, shapes and bytes of `model`'s state dict."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_key(tracker_name: str, tracker: SAM2Tracker, features: FeatureSpec, occlusion: float = 0.0) -> CacheKey:
    """The key of caching `features` with `tracker` (built as `tracker_name`); occlusion: share of frames after the
    first that are blacked out before tracking (see `track_episode`), within [0, 1)."""
    if not 0.0 <= occlusion < 1.0:
        raise ValueError(f"occlusion must be a share of frames within [0, 1), got {occlusion}")
    cfg = tracker.config
    return CacheKey(
        tracker=tracker_name,
        image_size=tracker.image_size,
        memory_frames=cfg.memory_frames,
        score_threshold=float(cfg.score_threshold),
        dtype=cfg.dtype,
        weights_sha256=weights_sha256(tracker.model),
        features=features.name,
        mask_source=cfg.mask_source,
        occlusion=float(occlusion),
        crop=format_crop(cfg.crop),
    )


def load_tracker(
    name: str,
    *,
    image_size: int | None = None,
    checkpoint: Path | None = None,
    allow_random: bool = False,
    seed: int = 0,
    config: TrackerConfig | None = None,
    device: str | torch.device = "cpu",
) -> SAM2Tracker:
    """A tracker to cache with. Without `checkpoint` the model is randomly initialised from torch seed `seed`,
    which is refused unless `allow_random` (features of an untrained tracker are for tests and benchmarks only)."""
    spec = tracker_spec(name, image_size)
    if checkpoint is None and not allow_random:
        raise CacheError(
            "no checkpoint given: caching features of an untrained tracker is refused; "
            "pass --checkpoint PATH (.safetensors or an official .pt) or --allow-random (tests and benchmarks)"
        )
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; give a .safetensors or official .pt file")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(spec, Path(checkpoint) if checkpoint is not None else None)
    config = config or TrackerConfig()
    if config.crop is None:  # a tracker trained on a region of the frame sees that region unless told otherwise
        config = replace(config, crop=checkpoint_crop(None if checkpoint is None else Path(checkpoint)))
    return SAM2Tracker(model.to(device), config)


def cache_dir(data: Path, key: CacheKey | str, root: Path | None = None) -> Path:
    """`<root>/<key digest>`, root defaulting to `<data>/cache`."""
    digest = key.digest if isinstance(key, CacheKey) else key
    return (Path(root) if root is not None else Path(data) / "cache") / digest


def _remove_temps(directory: Path, episodes: list[int] | None) -> None:
    """Delete the temp files of `episodes` left by killed runs (every temp file when None)."""
    prefixes = None if episodes is None else tuple(episode_file(directory, e).name + "." for e in episodes)
    for path in directory.glob("*.tmp"):
        if prefixes is None or path.name.startswith(prefixes):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class CacheReport:
    """Result of a cache run or merge.

    episodes / frames / bytes: what this run's episodes hold in the cache (file bytes); computed / reused:
    episodes tracked now vs valid files kept; frames_per_s: frames tracked now per second of the episode loop
    (0 when everything was reused); seconds: wall time of the run; complete: the manifest lists every episode.
    """

    path: str
    key: str
    shard: str
    episodes: int
    frames: int
    computed: int
    reused: int
    frames_per_s: float
    bytes: int
    seconds: float
    complete: bool


def _prefetch(items: Iterator[_X], depth: int = 16) -> Generator[_X, None, None]:
    """Yield `items` while a thread produces up to `depth` of them ahead (video decoding overlaps tracking)."""
    slots: queue.Queue[tuple[int, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((0, item)):
                    return
            put((1, None))
        except BaseException as exc:  # handed to the consumer
            put((2, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="cache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == 1:
                return
            if kind == 2:
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def blacked_out(episode: int, length: int, occlusion: float) -> npt.NDArray[np.bool_]:
    """Which frames of an episode an occlusion-augmented cache blacks out: each frame after the first with
    probability `occlusion`, drawn from a generator seeded by the episode index (the same on every rerun)."""
    hidden = np.random.default_rng(episode).random(length) < occlusion
    hidden[0] = False
    return hidden


def track_episode(
    dataset: Dataset, episode: int, tracker: SAM2Tracker, spec: FeatureSpec, occlusion: float = 0.0
) -> dict[str, npt.NDArray[Any]]:
    """Track one episode from its first-frame target box; the arrays stored per episode (see the module doc).

    occlusion: share of frames blacked out (`blacked_out`) before the tracker sees them, as the evaluation's
    occlusion does, so that a head learns from what the tracker gives while the camera sees nothing; an oracle's
    true mask of such a frame is empty."""
    length = dataset.episode_meta(episode).length
    labels = dataset.load_episode(episode, images=False)
    box = labels.target_box[0]
    hidden = blacked_out(episode, length, occlusion)

    def true_mask(t: int) -> npt.NDArray[np.bool_]:
        mask = labels.target_mask(t)
        return np.zeros_like(mask) if hidden[t] else mask

    masks = (true_mask(t) for t in range(length)) if tracker.config.oracle else None
    out: dict[str, npt.NDArray[Any]] = {
        "extras": np.zeros((length, spec.extras_dim), np.float32),
        "boxes": np.zeros((length, 4), np.float32),
        "scores": np.zeros(length, np.float32),
    }
    t = -1
    seen = (np.zeros_like(f) if hidden[t] else f for t, f in enumerate(dataset.iter_frames(episode)))
    frames = _prefetch(seen)
    try:
        for t, step in enumerate(tracker.track(frames, box, masks)):
            if t >= length:
                raise CacheError(f"episode {episode}: its video holds more than its {length} frames")
            feats = extract(step, spec)
            if t == 0:
                out["tokens"] = np.zeros((length, *feats.tokens.shape), np.float16)
            out["tokens"][t] = feats.tokens
            out["extras"][t] = feats.extras
            out["boxes"][t] = step.box
            out["scores"][t] = step.object_score
    except TrackerInputError as exc:
        raise CacheError(
            f"episode {episode}: cannot track from its first-frame target box {box.tolist()}: {exc}"
        ) from exc
    finally:
        frames.close()
    if t + 1 != length:
        raise CacheError(f"episode {episode}: its video holds {t + 1} frames, its meta row {length}")
    if not np.isfinite(out["tokens"]).all():
        raise CacheError(f"episode {episode}: features overflow float16 (|value| > 65504) or are not finite")
    return out


def _ensure_manifest(directory: Path, key: CacheKey) -> None:
    """Write the key's manifest unless one is there; refuse a directory that holds another key's manifest."""
    path = directory / MANIFEST
    doc = _read_json(path)
    if doc is not None:
        if CacheKey.from_manifest(doc, path) != key:
            raise CacheError(f"{path} belongs to key {doc.get('key')}, not {key.digest}: choose another --cache-root")
        return
    write_json(path, {"format": CACHE_FORMAT, "key": key.digest, "key_fields": asdict(key), "complete": False})


def _shard_record(directory: Path, shard: Shard) -> Path:
    return directory / f"shard-{shard.index}-of-{shard.count}.json"


def build_cache(
    data: Path,
    tracker: SAM2Tracker,
    key: CacheKey,
    *,
    root: Path | None = None,
    shard: Shard | None = None,
    progress: bool | None = None,
) -> CacheReport:
    """Cache F_t of every episode of `data` that `shard` owns (all when None), reusing valid files.

    Without a shard (or with 0/1) the run also verifies everything and writes the complete manifest; with one,
    run `merge_cache` when all shards are done. progress: tqdm bar on stderr (None: only when stderr is a TTY).
    """
    start = time.perf_counter()
    shard = shard or Shard()
    spec = parse_feature_spec(key.features)
    cfg = tracker.config
    ours = (tracker.image_size, cfg.memory_frames, float(cfg.score_threshold), cfg.dtype)
    if ours != (key.image_size, key.memory_frames, key.score_threshold, key.dtype):
        raise CacheError(f"key {key} was not made from this tracker (image size, memory, threshold, dtype: {ours})")
    dataset = Dataset(data)
    directory = cache_dir(data, key, root)
    make_dirs(directory)
    _ensure_manifest(directory, key)
    mine = [e for e in range(len(dataset)) if shard.owns(e)]
    _remove_temps(directory, None if shard.count == 1 else mine)
    record = {"shard": shard.label, "status": "running", "dataset_episodes": len(dataset), "started": time.time()}
    write_json(_shard_record(directory, shard), record, durable=False)
    lengths = {e: dataset.episode_meta(e).length for e in mine}
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    bar = tqdm(total=sum(lengths.values()), disable=not show, unit="frame", desc=f"cache {shard.label}")
    computed = frames_computed = 0
    loop_start = time.perf_counter()
    pending: Future[int] | None = None
    hashes: dict[int, str] = {}
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-write") as writer:
        for e in mine:
            episode_hash = hashes[e] = episode_sha256(dataset, e)
            path = episode_file(directory, e)
            if _stale_reason(path, key.digest, episode_hash, lengths[e], spec.extras_dim) is not None:
                arrays = track_episode(dataset, e, tracker, spec, key.occlusion)
                meta = {"format": str(CACHE_FORMAT), "key": key.digest, "episode": str(e)}
                meta |= {"episode_hash": episode_hash, "frames": str(lengths[e]), "features": key.features}
                if pending is not None:
                    pending.result()
                pending = writer.submit(_serialise_and_write, path, arrays, meta)
                computed += 1
                frames_computed += lengths[e]
            bar.update(lengths[e])
        if pending is not None:
            pending.result()
    loop_seconds = time.perf_counter() - loop_start
    write_json(_shard_record(directory, shard), record | {"status": "done", "finished": time.time()}, durable=False)
    complete = False
    if shard.count == 1:
        merge_cache(data, directory, hashes=hashes)
        complete = True
    return CacheReport(
        path=str(directory),
        key=key.digest,
        shard=shard.label,
        episodes=len(mine),
        frames=sum(lengths.values()),
        computed=computed,
        reused=len(mine) - computed,
        frames_per_s=frames_computed / loop_seconds if computed else 0.0,
        bytes=sum(episode_file(directory, e).stat().st_size for e in mine),
        seconds=time.perf_counter() - start,
        complete=complete,
    )


def _serialise_and_write(path: Path, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, str]) -> int:
    from safetensors.numpy import save

    return write_atomic(path, save(arrays, metadata=meta))


# ---------------------------------------------------------------- merging


def _missing_message(directory: Path, problems: dict[int, str]) -> str:
    """Which episodes are missing or stale, and which shard should have made each."""
    records = []
    for path in sorted(directory.glob("shard-*-of-*.json")):
        doc = _read_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("shard"), str):
            records.append(doc)
    latest = max(records, key=lambda r: float(r.get("started", 0.0)), default=None)
    count = parse_shard(latest["shard"]).count if latest else 1
    by_label = {r["shard"]: r for r in records}
    lines = []
    for e, reason in sorted(problems.items())[:20]:
        label = f"{e % count}/{count}"
        rec = by_label.get(label)
        if rec is None:
            status = "which has not run with this key"
        elif rec.get("status") != "done":
            status = "which started but did not finish (killed?)"
        elif e >= int(rec.get("dataset_episodes", 0)):
            status = "which finished before this episode was added"
        else:
            status = "which finished before this episode changed"
        lines.append(f"episode {e}: {reason} (shard {label} should have made it, {status})")
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return (
        f"cache {directory} is incomplete: {len(problems)} episode(s) missing or stale: "
        + "; ".join(lines)
        + more
        + ". Run `sam2grasp cache` with those shards (same options), then `sam2grasp cache-merge`."
    )


def merge_cache(data: Path, directory: Path, *, hashes: dict[int, str] | None = None) -> CacheReport:
    """Verify that `directory` holds valid features of every episode of `data` and write the complete manifest;
    CacheError listing the missing or stale episodes and the shard that should have made each. hashes: episode
    hashes already computed by the caller (the rest are computed here)."""
    start = time.perf_counter()
    directory = Path(directory)
    doc = _read_json(directory / MANIFEST)
    if doc is None:
        root = directory.parent
        keys = sorted(p.name for p in root.glob("*") if (p / MANIFEST).is_file()) if root.is_dir() else []
        raise CacheError(f"no cache at {directory} (no {MANIFEST}); caches under {root}: {keys or 'none'}")
    key = CacheKey.from_manifest(doc, directory / MANIFEST)
    extras_dim = parse_feature_spec(key.features).extras_dim
    dataset = Dataset(data)
    problems: dict[int, str] = {}
    entries: list[dict[str, Any]] = []
    token_shape: list[int] | None = None
    for e in range(len(dataset)):
        length = dataset.episode_meta(e).length
        episode_hash = (hashes or {}).get(e) or episode_sha256(dataset, e)
        path = episode_file(directory, e)
        reason = _stale_reason(path, key.digest, episode_hash, length, extras_dim)
        if reason is not None:
            problems[e] = reason
            continue
        header = _read_header(path)
        token_shape = header[1]["tokens"][1:] if header else token_shape
        entries.append({"episode": e, "frames": length, "episode_hash": episode_hash, "bytes": path.stat().st_size})
    if problems:
        raise CacheError(_missing_message(directory, problems))
    _remove_temps(directory, None)
    frames = sum(int(x["frames"]) for x in entries)
    size = sum(int(x["bytes"]) for x in entries)
    manifest = {"format": CACHE_FORMAT, "key": key.digest, "key_fields": asdict(key), "complete": True}
    manifest |= {"token_shape": token_shape, "total_frames": frames, "total_bytes": size, "episodes": entries}
    write_json(directory / MANIFEST, manifest)
    return CacheReport(
        path=str(directory),
        key=key.digest,
        shard="merge",
        episodes=len(entries),
        frames=frames,
        computed=0,
        reused=len(entries),
        frames_per_s=0.0,
        bytes=size,
        seconds=time.perf_counter() - start,
        complete=True,
    )
