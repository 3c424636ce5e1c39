"""Frames and ground-truth target masks of simulated episodes, resized for training the compact tracker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from pipeline.dataset.reader import Dataset
from policy.tracker import crop_pixels


@dataclass(frozen=True)
class TrackingClips:
    """Episodes held in memory at the tracker's resolution.

    frames: (N, S, S, 3) uint8; masks: (N, S, S) bool target masks; starts: (E + 1,) frame offset of each episode.
    """

    frames: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.bool_]
    starts: npt.NDArray[np.int64]

    @property
    def episodes(self) -> int:
        """Number of episodes."""
        return len(self.starts) - 1

    def episode_range(self, e: int) -> tuple[int, int]:
        """First and one-past-last frame index of episode `e`."""
        return int(self.starts[e]), int(self.starts[e + 1])


def _resize(frames: npt.NDArray[np.uint8], size: int, *, nearest: bool) -> npt.NDArray[np.uint8]:
    x = torch.from_numpy(frames)
    x = x.permute(0, 3, 1, 2).float() if x.ndim == 4 else x[:, None].float()
    if nearest:
        y = F.interpolate(x, size=(size, size), mode="nearest")
    else:
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    y = y.round().clamp(0, 255).to(torch.uint8)
    out = y.permute(0, 2, 3, 1) if frames.ndim == 4 else y[:, 0]
    return np.ascontiguousarray(out.numpy())


def load_clips(
    root: Path,
    size: int,
    episodes: list[int] | None = None,
    *,
    workers: int = 1,
    crop: tuple[float, float, float, float] | None = None,
) -> TrackingClips:
    """Decode the given episodes (default: all) of the dataset at `root`, cut to `crop` (fractions x0, y0, x1, y1
    of the frame, as `TrackerConfig.crop`; None = whole frame) and resized to `size` x `size`; `workers` threads
    decode episodes side by side (video decoding releases the GIL)."""
    picks = list(range(len(Dataset(root)))) if episodes is None else episodes
    return load_clips_from([(root, picks)], size, workers=workers, crop=crop)


def load_clips_from(
    sources: Sequence[tuple[Path, list[int]]],
    size: int,
    *,
    workers: int = 1,
    crop: tuple[float, float, float, float] | None = None,
) -> TrackingClips:
    """`load_clips` over several datasets: the episodes of each `(root, episodes)` in turn, as one `TrackingClips`
    (episodes numbered on from one dataset to the next). The arrays are allocated once from the recorded episode
    lengths and filled in place, so memory peaks at the result's size."""
    jobs: list[tuple[Dataset, Path, int]] = []
    for root, picks in sources:
        ds = Dataset(root)
        jobs.extend((ds, root, e) for e in picks)
    if not jobs:
        raise ValueError("no episodes to load: every source lists none")
    lengths = [ds.episode_meta(e).length for ds, _, e in jobs]
    starts = np.cumsum([0, *lengths]).astype(np.int64)
    frames = np.empty((int(starts[-1]), size, size, 3), dtype=np.uint8)
    masks = np.empty((int(starts[-1]), size, size), dtype=bool)

    def one(i: int) -> None:
        ds, root, e = jobs[i]
        ep = ds.load_episode(e)
        if ep.rgb is None:
            raise ValueError(f"episode {e} of {root} has no colour frames")
        full = np.stack([ep.target_mask(t) for t in range(len(ep))]).astype(np.uint8) * 255
        x0, y0, x1, y1 = crop_pixels(crop, *ep.rgb.shape[1:3])
        rgb = np.ascontiguousarray(ep.rgb[:, y0:y1, x0:x1])
        target = np.ascontiguousarray(full[:, y0:y1, x0:x1])
        frames[starts[i] : starts[i + 1]] = _resize(rgb, size, nearest=False)
        masks[starts[i] : starts[i + 1]] = _resize(target, size, nearest=False) >= 128

    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(jobs))))
    else:
        for i in range(len(jobs)):
            one(i)
    return TrackingClips(frames, masks, starts)
