"""The target's mask on the prompt frame at the camera's full resolution, segmented from the prompt box and the image.

The tracker's masks come from low-resolution logits (a quarter of its input size, upsampled), so a target 20 pixels
across is 4 to 6 logits wide: enough to follow it, too coarse for the orientation moments the grasp-yaw estimator
reads (`policy.grasp_yaw`). On the prompt frame the box is known, so the target can be segmented once at full
resolution: a two-component colour model (OpenCV's GrabCut, Gaussian mixtures over colour with a graph cut) is
fitted with everything outside the box as background and the box's inside as probable foreground, over a window of
the image around the box. It costs a few milliseconds once per pick.

`refine_prompt_mask` is deterministic (the colour models' k-means initialisation is seeded) so that training
samples and the agent's prompt frame get the same mask from the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: Share of the box's width and height added on every side to form the window the colour models are fitted on.
WINDOW_MARGIN = 0.5
#: GrabCut iterations (colour-model refits and graph cuts).
ITERATIONS = 5


class PromptMaskError(ValueError):
    """An image or box that no prompt-frame mask can be segmented from."""


def refine_prompt_mask(
    rgb: npt.NDArray[np.uint8], box: npt.ArrayLike, *, margin: float = WINDOW_MARGIN, iterations: int = ITERATIONS
) -> npt.NDArray[np.bool_]:
    """(H, W) bool mask of the object in `box` (pixels x0, y0, x1, y1) of `rgb` (H, W, 3) uint8.

    The window is the box grown by `margin` of its size on every side, clipped to the image; a box with no image
    around it inside the window (it fills the window) leaves nothing to learn the background from and gives an
    empty mask, as does a segmentation that keeps no pixel. A PromptMaskError names a bad image, box or setting.
    """
    import cv2

    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise PromptMaskError(f"rgb must be an (H, W, 3) uint8 image, got {img.dtype} of shape {img.shape}")
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    h, w = img.shape[:2]
    if b.shape != (4,) or not np.all(np.isfinite(b)) or not (b[2] > b[0] and b[3] > b[1]):
        raise PromptMaskError(f"box must be 4 finite pixels x0, y0, x1, y1 with x1 > x0 and y1 > y0, got {b.tolist()}")
    if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
        raise PromptMaskError(f"box {b.tolist()} lies outside the {w}x{h} image")
    if not margin > 0 or not 1 <= iterations <= 20:
        raise PromptMaskError(f"margin must be > 0 and iterations within 1..20, got {margin} and {iterations}")
    x0, y0 = max(0, math.floor(b[0])), max(0, math.floor(b[1]))
    x1, y1 = min(w, math.ceil(b[2])), min(h, math.ceil(b[3]))
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    wx0, wy0 = max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my))
    wx1, wy1 = min(w, math.ceil(x1 + mx)), min(h, math.ceil(y1 + my))
    out = np.zeros((h, w), dtype=bool)
    if (x0, y0, x1, y1) == (wx0, wy0, wx1, wy1):
        return out
    window = np.ascontiguousarray(img[wy0:wy1, wx0:wx1])
    labels = np.zeros(window.shape[:2], np.uint8)
    rect = (x0 - wx0, y0 - wy0, x1 - x0, y1 - y0)
    cv2.setRNGSeed(0)
    cv2.grabCut(window, labels, rect, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_RECT)
    out[wy0:wy1, wx0:wx1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out
