"""Temporal ensembling of the predictions that cover one control tick (ACT, Zhao et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def ensemble_weights(n: int, m: float) -> F64:
    """Normalised weights exp(-m·i) for i = 0 (the oldest prediction) .. n-1 (the newest).

    m > 0 favours older predictions (ACT's choice, e.g. 0.01), m = 0 is the plain mean, m < 0 favours newer ones.
    """
    if n < 1:
        raise ValueError(f"need at least one prediction to weight, got {n}")
    if not math.isfinite(m):
        raise ValueError(f"ensemble coefficient m must be finite, got {m}")
    logw = -m * np.arange(n, dtype=np.float64)
    w = np.exp(logw - logw.max())  # shift so the largest weight is 1: no overflow for any sign of m
    return np.asarray(w / w.sum(), dtype=np.float64)


def ensemble(predictions: Sequence[tuple[npt.ArrayLike, int]] | Sequence[npt.ArrayLike], m: float) -> F64:
    """Weighted mean of the actions predicted for one tick, ordered oldest first.

    `predictions`: (action, age) pairs as `ChunkQueue.predictions_for` returns them, or bare actions; weights are
    exp(-m·i) with i = 0 for the oldest (the first) and normalised to sum to 1.
    """
    if len(predictions) == 0:
        raise ValueError("ensemble needs at least one prediction; the caller must hold when there is none")
    actions = [p[0] if isinstance(p, tuple) else p for p in predictions]
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in actions])
    if stacked.ndim != 2:
        raise ValueError(f"every action must be a vector of the same length, got stacked shape {stacked.shape}")
    return np.asarray(ensemble_weights(len(stacked), m) @ stacked, dtype=np.float64)
