"""Training samples of the image baselines: every frame t of every episode, as the policy sees it (downscaled,
box drawn for the condition variant), with its proprioception and K-step action chunk.

Chunks and padding are policy/chunks.py's (`ChunkDataset` over the episodes' state and actions: a chunk past the
episode's end repeats the last action and `is_pad` marks it); the frames ride alongside in the same flat order.
Frames are held in memory as uint8 at the policy's size (128x96: 37 KB a frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from policy.act import PolicyTarget
from policy.chunks import ChunkDataset, EpisodeArrays
from policy.frame_prep import prepare_frame
from policy.image_act_config import ImageACTConfig


@dataclass(frozen=True)
class ImageEpisode:
    """One episode, T frames: frames (T, h, w, 3) uint8 as the policy sees them, state (T, S) and action targets
    (T, A) in physical units; ignore (T, A) bool: labels kept out of the loss (None: none)."""

    frames: npt.NDArray[np.uint8]
    state: npt.NDArray[np.float32]
    action: npt.NDArray[np.float32]
    ignore: npt.NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or f.shape[0] < 1:
            raise ValueError(f"ImageEpisode.frames must be (T >= 1, h, w, 3) uint8, got {f.shape} {f.dtype}")
        for name in ("state", "action"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != f.shape[0]:
                raise ValueError(f"ImageEpisode.{name} must be (T={f.shape[0]}, dim), got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"ImageEpisode.{name} holds NaN or inf")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def arrays(self) -> EpisodeArrays:
        """State and actions as `EpisodeArrays` (an empty token and a zero extras value per frame), for
        `policy.normalize.compute_stats` and `ChunkDataset`."""
        t = len(self)
        return EpisodeArrays(
            tokens=np.zeros((t, 1, 1), dtype=np.float16),
            extras=np.zeros((t, 1), dtype=np.float32),
            state=self.state,
            action=self.action,
            ignore=self.ignore,
        )


def load_image_episodes(
    data: Path | str,
    config: ImageACTConfig,
    action_mode: str = "joint",
    episodes: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    learn_undone_closes: bool = False,
) -> list[ImageEpisode]:
    """The dataset's episodes (all, or `episodes`) as the policy sees them.

    Frames: the front camera, downscaled to the config's size, with the dataset's per-frame target box drawn for
    the condition variant. Targets: joint mode the dataset's `action`; ee mode the TCP pose its joint targets
    command and the commanded opening; the close labels a demonstration opens again are ignored unless
    learn_undone_closes (`pipeline.train_policy.episode_targets`, as SAM2Grasp trains). progress(i, n) after
    each episode.
    """
    from pipeline.dataset.reader import Dataset
    from pipeline.train_policy import episode_targets

    if action_mode not in ("joint", "ee"):
        raise ValueError(f"unknown action mode {action_mode!r}; valid: joint, ee")
    dataset = Dataset(Path(data))
    picks = list(range(len(dataset))) if episodes is None else [int(e) for e in episodes]
    bad = [e for e in picks if not 0 <= e < len(dataset)]
    if bad:
        raise ValueError(f"episodes {bad} are not in the dataset {data}; valid: 0..{len(dataset) - 1}")
    if not picks:
        raise ValueError(f"dataset {data} holds no episodes to train on")
    out = []
    for i, e in enumerate(picks):
        ep = dataset.load_episode(e, images=True)
        if ep.rgb is None:
            raise ValueError(f"episode {e} of {data} has no front-camera video")
        frames = np.stack([prepare_frame(ep.rgb[t], ep.target_box[t], config) for t in range(len(ep))])
        target, ignore = episode_targets(
            ep.action, action_mode, learn_undone_closes=learn_undone_closes, learn=ep.learn
        )
        out.append(ImageEpisode(frames, ep.state.astype(np.float32), target, ignore))
        if progress is not None:
            progress(i + 1, len(picks))
    return out


class ImageChunkDataset:
    """Every (episode, t) as a sample; `batch(indices)` gathers frames, state and action chunks at once."""

    def __init__(self, episodes: Sequence[ImageEpisode], chunk_size: int) -> None:
        if not episodes:
            raise ValueError("ImageChunkDataset needs at least one episode, got none")
        shapes = {e.frames.shape[1:] for e in episodes}
        if len(shapes) != 1:
            raise ValueError(f"episodes hold frames of different sizes {sorted(shapes)}; valid: one size")
        self.chunks = ChunkDataset([e.arrays() for e in episodes], chunk_size)
        self.frames = np.concatenate([e.frames for e in episodes])

    def __len__(self) -> int:
        return len(self.chunks)

    def batch(self, indices: Sequence[int] | npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor, PolicyTarget]:
        """Samples `indices` stacked: frames (B, h, w, 3) uint8, state (B, S) float32, target chunks (B, K, A)."""
        inp, target = self.chunks.batch(indices)
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.frames[idx]), inp.state, target
