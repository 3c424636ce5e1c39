"""Run-length encoding of boolean masks, as stored in the `observation.target_mask` column.

Format: the mask is flattened in row-major (C) order; `counts` holds the lengths of alternating runs,
starting with a run of False (which is 0 when the first pixel is True). The counts sum to H * W.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def encode_mask(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    """Encode an (H, W) bool mask as int32 run lengths (first run = False pixels, possibly 0)."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"mask must have dtype bool, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {arr.shape}")
    flat = arr.ravel()
    n = flat.size
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if n > np.iinfo(np.int32).max:
        raise ValueError(f"mask has {n} pixels; run lengths are int32, so at most {np.iinfo(np.int32).max}")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [n]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int32)


def decode_mask(counts: npt.ArrayLike | Sequence[int], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Decode run lengths produced by `encode_mask` into an (H, W) bool mask.

    Raises ValueError when `shape` is not two non-negative ints, when a count is negative or not an
    integer, or when the counts do not sum to H * W.
    """
    if len(shape) != 2 or any(int(s) != s or s < 0 for s in shape):
        raise ValueError(f"shape must be (H, W) with non-negative ints, got {shape!r}")
    height, width = int(shape[0]), int(shape[1])
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"counts must be integers, got dtype {arr.dtype}")
    runs = arr.astype(np.int64)
    if runs.size and int(runs.min()) < 0:
        raise ValueError(f"counts must be non-negative, found {int(runs.min())}")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"counts sum to {total} but a mask of shape ({height}, {width}) has {height * width} pixels")
    values = (np.arange(runs.size) % 2).astype(np.bool_)
    return np.repeat(values, runs).reshape(height, width)
