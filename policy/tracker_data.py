"""Frames and ground-truth target masks of simulated episodes, resized for training the compact tracker."""

from __future__ import annotations

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
    ds = Dataset(root)
    picks = list(range(len(ds))) if episodes is None else episodes

    def one(e: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
        ep = ds.load_episode(e)
        if ep.rgb is None:
            raise ValueError(f"episode {e} of {root} has no colour frames")
        full = np.stack([ep.target_mask(t) for t in range(len(ep))]).astype(np.uint8) * 255
        x0, y0, x1, y1 = crop_pixels(crop, *ep.rgb.shape[1:3])
        rgb = np.ascontiguousarray(ep.rgb[:, y0:y1, x0:x1])
        target = np.ascontiguousarray(full[:, y0:y1, x0:x1])
        return _resize(rgb, size, nearest=False), _resize(target, size, nearest=False) >= 128

    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(one, picks))
    else:
        parts = [one(e) for e in picks]
    starts = np.cumsum([0] + [len(f) for f, _ in parts])
    return TrackingClips(
        np.concatenate([f for f, _ in parts]), np.concatenate([m for _, m in parts]), starts.astype(np.int64)
    )
