"""Boolean image masks and their boxes (pixels), shared by the simulator's labels and the tracker's output."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def mask_box(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """Tight box x0, y0, x1, y1 (pixels, x1/y1 exclusive) of a boolean mask; zeros when the mask is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32)
