"""Drawing on camera frames: the target box, its mask and a caption (for videos and the stream)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw


def draw_overlay(
    rgb: npt.NDArray[np.uint8],
    *,
    box: npt.ArrayLike | None = None,
    mask: npt.NDArray[np.bool_] | None = None,
    caption: str = "",
    colour: tuple[int, int, int] = (0, 255, 120),
) -> npt.NDArray[np.uint8]:
    """A copy of `rgb` (H, W, 3 uint8) with the mask tinted, the box outlined and a caption at the top left.

    box: pixels x0, y0, x1, y1 (ignored when all zeros); mask: (H, W) bool.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    out = rgb.copy()
    if mask is not None:
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {rgb.shape[:2]}")
        tint = np.array(colour, dtype=np.float32)
        out[mask] = (0.7 * out[mask] + 0.3 * tint).astype(np.uint8)
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    if box is not None:
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,):
            raise ValueError(f"box must be 4 numbers x0, y0, x1, y1, got shape {b.shape}")
        if np.any(b != 0):
            draw.rectangle([float(b[0]), float(b[1]), float(b[2]) - 1, float(b[3]) - 1], outline=colour, width=2)
    if caption:
        draw.rectangle([0, 0, 7 * len(caption) + 8, 16], fill=(0, 0, 0))
        draw.text((4, 2), caption, fill=(255, 255, 255))
    return np.asarray(image, dtype=np.uint8)
