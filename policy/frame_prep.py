"""Frames as the image baselines see them: downscaled to the policy's size, the target's box drawn for the
condition variant. Training (dataset frames + the dataset's per-frame box) and evaluation (camera frames + the
tracker's box) go through the same `prepare_frame`, so the two can never disagree on resizing or drawing.

Boxes are pixels x0, y0, x1, y1 of the frame they belong to (x1, y1 exclusive, as the dataset and the tracker give
them); all zeros means "no box" (the target hidden, or the tracker lost it) and nothing is drawn.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from PIL import Image

from policy.image_act_config import ImageACTConfig

U8 = npt.NDArray[np.uint8]


def _check_rgb(rgb: object) -> U8:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.shape} {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"frame must be an (H, W, 3) uint8 RGB array, got {got}")
    return rgb


def resize_frame(rgb: U8, size: tuple[int, int]) -> U8:
    """`rgb` (H, W, 3) uint8 resized to `size` (width, height) with PIL's bilinear filter (antialiased when
    shrinking); returned unchanged (a copy) when it already has that size."""
    frame = _check_rgb(rgb)
    width, height = size
    if frame.shape[:2] == (height, width):
        return frame.copy()
    resized = Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # writable (torch.from_numpy needs it)


def scale_box(box: npt.ArrayLike, from_size: tuple[int, int], to_size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """A box in pixels of a `from_size` (width, height) frame, in pixels of a `to_size` frame."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,):
        raise ValueError(f"box must be 4 numbers x0, y0, x1, y1 in pixels, got shape {b.shape}")
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    scaled: npt.NDArray[np.float64] = b * np.array([sx, sy, sx, sy])
    return scaled


def draw_box(image: U8, box: npt.ArrayLike, colour: tuple[int, int, int], thickness: int) -> U8:
    """A copy of `image` (h, w, 3) uint8 with the outline of `box` (pixels, x1 and y1 exclusive) drawn inside the
    box, `thickness` pixels wide and clipped to the image. An all-zero, non-finite or empty box draws nothing."""
    out = _check_rgb(image).copy()
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,):
        raise ValueError(f"box must be 4 numbers x0, y0, x1, y1 in pixels, got shape {b.shape}")
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1 pixel, got {thickness}")
    if not np.all(np.isfinite(b)) or not np.any(b):
        return out
    h, w = out.shape[:2]
    x0, y0 = max(0, math.floor(b[0])), max(0, math.floor(b[1]))
    x1, y1 = min(w, math.ceil(b[2])), min(h, math.ceil(b[3]))  # exclusive
    if x1 <= x0 or y1 <= y0:
        return out
    c = np.array(colour, dtype=np.uint8)
    t = thickness
    out[y0 : min(y0 + t, y1), x0:x1] = c
    out[max(y1 - t, y0) : y1, x0:x1] = c
    out[y0:y1, x0 : min(x0 + t, x1)] = c
    out[y0:y1, max(x1 - t, x0) : x1] = c
    return out


def prepare_frame(rgb: U8, box: npt.ArrayLike | None, config: ImageACTConfig) -> U8:
    """The frame a baseline reads: `rgb` downscaled to the config's size and, for the condition variant, `box`
    (pixels of `rgb`; all zeros: none) drawn on it. A box is required exactly when the config draws one."""
    frame = _check_rgb(rgb)
    small = resize_frame(frame, config.image_size)
    if config.draws_box:
        if box is None:
            raise ValueError(f"policy {config.policy!r} draws the target's box on every frame: a box is required")
        scaled = scale_box(box, (frame.shape[1], frame.shape[0]), config.image_size)
        return draw_box(small, scaled, config.box_colour, config.box_thickness)
    return small
