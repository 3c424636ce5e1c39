"""Training targets of the compact detector, built from labelled images (one concept: labels → dense maps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from grounding.compact.config import DetectorConfig
from grounding.compact.scenes import MIN_VISIBLE_PX, LabelledImage

#: Heat-map loss ignored in a don't-care object's box (objects barely visible), and colour/shape supervised in
#: the 3x3 cells around each centre, because a peak may land one cell off.
ATTRIBUTE_RADIUS = 1


@dataclass(frozen=True)
class Targets:
    """Dense targets at stride 4, one batch.

    heat: (B, H, W) Gaussian peaks 0..1; heat_weight: (B, H, W) 0 where the heat loss is ignored; centre:
    (B, H, W) bool, exactly the centre cells; size: (B, 2, H, W) log box size in cells; offset: (B, 2, H, W)
    sub-cell centre offset; attr_mask: (B, H, W) bool cells with colour/shape labels; colour, shape: (B, H, W)
    class indices (-1 elsewhere).
    """

    heat: torch.Tensor
    heat_weight: torch.Tensor
    centre: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    attr_mask: torch.Tensor
    colour: torch.Tensor
    shape: torch.Tensor


def _gaussian(h: int, w: int, cx: float, cy: float, sigma: float) -> npt.NDArray[np.float32]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    g: npt.NDArray[np.float32] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2)).astype(np.float32)
    return g


def build_targets(items: list[LabelledImage], boxes: list[npt.NDArray[np.float32]], config: DetectorConfig) -> Targets:
    """Targets of `items` whose boxes (network-input pixels, already augmented) are `boxes`."""
    s = config.stride
    h, w = config.input_height // s, config.input_width // s
    b = len(items)
    heat = np.zeros((b, h, w), np.float32)
    weight = np.ones((b, h, w), np.float32)
    centre = np.zeros((b, h, w), bool)
    size = np.zeros((b, 2, h, w), np.float32)
    offset = np.zeros((b, 2, h, w), np.float32)
    attr = np.zeros((b, h, w), bool)
    colour = np.full((b, h, w), -1, np.int64)
    shape = np.full((b, h, w), -1, np.int64)
    for i, (item, bxs) in enumerate(zip(items, boxes, strict=True)):
        for k in range(len(bxs)):
            x0, y0, x1, y1 = (float(v) / s for v in bxs[k])
            if item.visible_px[k] < MIN_VISIBLE_PX or x1 <= x0 or y1 <= y0:
                if item.visible_px[k] > 0:
                    weight[i, max(0, int(y0)) : int(np.ceil(y1)) + 1, max(0, int(x0)) : int(np.ceil(x1)) + 1] = 0.0
                continue
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            gx, gy = min(w - 1, max(0, int(cx))), min(h - 1, max(0, int(cy)))
            sigma = max(0.6, 0.16 * float(np.sqrt((x1 - x0) * (y1 - y0))))
            heat[i] = np.maximum(heat[i], _gaussian(h, w, gx, gy, sigma))
            centre[i, gy, gx] = True
            size[i, :, gy, gx] = np.log([max(x1 - x0, 0.25), max(y1 - y0, 0.25)])
            offset[i, :, gy, gx] = (cx - gx, cy - gy)
            r = ATTRIBUTE_RADIUS
            ya, yb, xa, xb = max(0, gy - r), min(h, gy + r + 1), max(0, gx - r), min(w, gx + r + 1)
            attr[i, ya:yb, xa:xb] = True
            colour[i, ya:yb, xa:xb] = item.colours[k]
            shape[i, ya:yb, xa:xb] = item.shapes[k]
    t = torch.from_numpy
    return Targets(t(heat), t(weight), t(centre), t(size), t(offset), t(attr), t(colour), t(shape))
