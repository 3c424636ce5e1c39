"""Training samples for the ACT head: every frame t of every episode with its K-step action chunk.

A chunk at t is actions[t : t+K]; past the episode's end it is padded with the episode's last action and
`is_pad` marks the padded steps (the loss ignores them). Episodes are held in memory as `EpisodeArrays`
(cached F_t tokens, extras, proprioception and actions, one row per frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from policy.act import PolicyInput, PolicyTarget

T = TypeVar("T")


@dataclass(frozen=True)
class EpisodeArrays:
    """One episode, T frames: tokens (T, n, C) float16/float32, extras (T, E), state (T, S), action (T, A);
    ignore (T, A) bool: labels kept out of the loss (`policy.undone_closes`), None for none."""

    tokens: npt.NDArray[np.floating]
    extras: npt.NDArray[np.floating]
    state: npt.NDArray[np.floating]
    action: npt.NDArray[np.floating]
    ignore: npt.NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3:
            raise ValueError(f"EpisodeArrays.tokens must be (T, n, C), got shape {self.tokens.shape}")
        if self.tokens.dtype not in (np.float16, np.float32):
            raise ValueError(f"EpisodeArrays.tokens must be float16 or float32, got {self.tokens.dtype}")
        n_frames = self.tokens.shape[0]
        if n_frames < 1:
            raise ValueError("EpisodeArrays needs at least one frame, got T=0")
        for name in ("extras", "state", "action"):
            arr: npt.NDArray[np.floating] = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != n_frames:
                raise ValueError(f"EpisodeArrays.{name} must be (T={n_frames}, dim), got shape {arr.shape}")
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"EpisodeArrays.{name} must be floating point, got {arr.dtype}")
        for name in ("tokens", "extras", "state", "action"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"EpisodeArrays.{name} holds NaN or inf")
        if self.ignore is not None and (self.ignore.shape != self.action.shape or self.ignore.dtype != np.bool_):
            raise ValueError(
                f"EpisodeArrays.ignore must be a bool array shaped like action {self.action.shape}, "
                f"got {self.ignore.dtype} {self.ignore.shape}"
            )

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def split_by_episode(episodes: Sequence[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Train and validation episodes (whole episodes; at least one of each when val_fraction > 0); any per-episode
    items split the same way for the same count, fraction and seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within [0, 1), got {val_fraction}")
    n = len(episodes)
    if val_fraction == 0.0:
        return list(episodes), []
    if n < 2:
        raise ValueError(f"a train/val split needs at least 2 episodes, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(n * val_fraction)))
    val = sorted(int(i) for i in order[:k])
    train = sorted(int(i) for i in order[k:])
    return [episodes[i] for i in train], [episodes[i] for i in val]


class ChunkDataset(Dataset[tuple[PolicyInput, PolicyTarget]]):
    """Every (episode, t) as a sample; `batch(indices)` gathers many at once, `__getitem__` gives one.

    state_extras_from: the first `extras` column computed from the arm's state (the place values,
    `policy.place`), which a sample with a lagged state (`policy.state_lag`) takes from the same earlier frame as
    the state; None when no extras depend on the state.
    """

    def __init__(self, episodes: Sequence[EpisodeArrays], chunk_size: int, state_extras_from: int | None = None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not episodes:
            raise ValueError("ChunkDataset needs at least one episode, got none")
        first = episodes[0]
        for i, e in enumerate(episodes):
            for name in ("tokens", "extras", "state", "action"):
                a, b = getattr(e, name).shape[1:], getattr(first, name).shape[1:]
                if a != b:
                    raise ValueError(f"episode {i} has {name} of per-frame shape {a}; episode 0 has {b}")
        extras_dim = first.extras.shape[1]
        if state_extras_from is not None and not 0 <= state_extras_from <= extras_dim:
            raise ValueError(
                f"state_extras_from must be within 0..{extras_dim} (extras columns), got {state_extras_from}"
            )
        self.chunk_size = chunk_size
        self.state_extras_from = state_extras_from
        self.tokens = np.concatenate([e.tokens for e in episodes])
        self.extras = np.concatenate([e.extras for e in episodes]).astype(np.float32)
        self.state = np.concatenate([e.state for e in episodes]).astype(np.float32)
        self.action = np.concatenate([e.action for e in episodes]).astype(np.float32)
        self.ignore = np.concatenate(
            [e.ignore if e.ignore is not None else np.zeros(e.action.shape, dtype=bool) for e in episodes]
        )
        lengths = np.array([len(e) for e in episodes])
        ends = np.cumsum(lengths)  # exclusive end of each episode in the flat arrays
        self.episode_of = np.repeat(np.arange(len(episodes)), lengths)
        self._last = (ends - 1)[self.episode_of]  # flat index of each frame's episode's last frame
        self._first = (ends - lengths)[self.episode_of]  # ... and of its first frame

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def _chunk_index(self, idx: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        raw = idx[:, None] + np.arange(self.chunk_size)[None, :]
        last = self._last[idx][:, None]
        return np.minimum(raw, last), raw > last

    def batch(
        self, indices: Sequence[int] | npt.NDArray[np.int64], lags: npt.NDArray[np.int64] | None = None
    ) -> tuple[PolicyInput, PolicyTarget]:
        """Samples `indices` stacked: tokens (B, n, C) float32, extras (B, E), state (B, S); actions (B, K, A).

        lags: (len(self),) frames per sample (`policy.state_lag.draw_lags`): a sample with lag d > 0 takes its
        state, and its extras from `state_extras_from` on, from d frames earlier (clipped at its episode's first
        frame); its tokens, other extras and actions stay its own.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or len(idx) == 0:
            raise ValueError(f"indices must be a non-empty 1-D sequence, got shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= len(self):
            raise ValueError(f"indices must be within 0..{len(self) - 1}, got {int(idx.min())}..{int(idx.max())}")
        chunk, pad = self._chunk_index(idx)
        extras = self.extras[idx]
        source = idx
        if lags is not None:
            if lags.shape != (len(self),) or (lags < 0).any():
                raise ValueError(f"lags must be ({len(self)},) non-negative frame counts, got shape {lags.shape}")
            source = np.maximum(idx - lags[idx], self._first[idx])
            if self.state_extras_from is not None:
                extras[:, self.state_extras_from :] = self.extras[source, self.state_extras_from :]
        inp = PolicyInput(
            tokens=torch.from_numpy(self.tokens[idx].astype(np.float32)),
            extras=torch.from_numpy(extras),
            state=torch.from_numpy(self.state[source]),
        )
        target = PolicyTarget(
            actions=torch.from_numpy(self.action[chunk]),
            is_pad=torch.from_numpy(pad),
            ignore=torch.from_numpy(self.ignore[chunk]),
        )
        return inp, target

    def __getitem__(self, i: int) -> tuple[PolicyInput, PolicyTarget]:
        """One sample, unbatched: tokens (n, C), extras (E,), state (S,); actions (K, A), is_pad (K,)."""
        inp, target = self.batch([int(i)])
        return (
            PolicyInput(inp.tokens[0], inp.extras[0], inp.state[0]),
            PolicyTarget(target.actions[0], target.is_pad[0], None if target.ignore is None else target.ignore[0]),
        )


def _stack_ignore(targets: Sequence[PolicyTarget]) -> torch.Tensor | None:
    """The samples' ignore masks stacked; None when no sample has one (a sample without one ignores nothing)."""
    if all(t.ignore is None for t in targets):
        return None
    masks = [t.ignore if t.ignore is not None else torch.zeros_like(t.actions, dtype=torch.bool) for t in targets]
    return torch.stack(masks)


def collate(samples: Sequence[tuple[PolicyInput, PolicyTarget]]) -> tuple[PolicyInput, PolicyTarget]:
    """Stack unbatched samples (as `ChunkDataset.__getitem__` gives them) into one batch."""
    if not samples:
        raise ValueError("collate needs at least one sample, got none")
    inputs = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    return (
        PolicyInput(
            tokens=torch.stack([x.tokens for x in inputs]),
            extras=torch.stack([x.extras for x in inputs]),
            state=torch.stack([x.state for x in inputs]),
        ),
        PolicyTarget(
            actions=torch.stack([t.actions for t in targets]),
            is_pad=torch.stack([t.is_pad for t in targets]),
            ignore=_stack_ignore(targets),
        ),
    )
