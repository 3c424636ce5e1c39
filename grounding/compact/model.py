"""The compact detector: a small convolutional network that finds every catalogue object in an image.

It predicts, on a grid of stride 4, a centre heat map (one channel: "an object's visible centre is here"), the
box size and sub-cell offset, and colour and shape logits. Objects are read at the heat map's local maxima.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from grounding.compact.config import DetectorConfig


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))


@dataclass(frozen=True)
class DetectorOutput:
    """Raw maps at stride 4, (B, C, H/4, W/4): heat logits (1), log size (2: w, h in cells), offset (2, cells),
    colour logits, shape logits."""

    heat: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    colour: torch.Tensor
    shape: torch.Tensor


@dataclass(frozen=True)
class ObjectDetection:
    """One object the detector found.

    box_xyxy_px: pixels of the image given to `detect`; confidence: 0..1 centre score; colour_probs,
    shape_probs: class probabilities in the catalogue's order (grounding.compact.scenes.COLOURS / SHAPES).
    """

    box_xyxy_px: tuple[float, float, float, float]
    confidence: float
    colour_probs: npt.NDArray[np.float32]
    shape_probs: npt.NDArray[np.float32]


class CompactDetector(nn.Module):
    """Four-stage backbone (strides 2, 4, 8, 16), a top-down merge to stride 4, and five prediction heads."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        h = config.head_width
        self.stage1 = _conv(3, w1, 3, 2)
        self.stage2 = nn.Sequential(_conv(w1, w2, 3, 2), _conv(w2, w2))
        self.stage3 = nn.Sequential(_conv(w2, w3, 3, 2), _conv(w3, w3))
        self.stage4 = nn.Sequential(_conv(w3, w4, 3, 2), _conv(w4, w4))
        self.merge3 = nn.Sequential(_conv(w4 + w3, w3, 1), _conv(w3, w3))
        self.merge2 = nn.Sequential(_conv(w3 + w2, h, 1), _conv(h, h))
        self.trunk = _conv(h, h)
        self.split = (1, 2, 2, config.n_colours, config.n_shapes)
        self.heads = nn.Conv2d(h, sum(self.split), 1)
        # a prior of ~1% objects per cell keeps the first steps of focal training stable
        bias = self.heads.bias
        if bias is not None:
            with torch.no_grad():
                bias[0] = -4.6
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """`images`: (B, 3, H, W) float pixels 0..255 at the config's input size."""
        x = (images - self.mean) / self.std
        f2 = self.stage2(self.stage1(x))
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        m3 = self.merge3(torch.cat([F.interpolate(f4, size=f3.shape[-2:], mode="nearest"), f3], 1))
        m2 = self.merge2(torch.cat([F.interpolate(m3, size=f2.shape[-2:], mode="nearest"), f2], 1))
        heat, size, offset, colour, shape = self.heads(self.trunk(m2)).split(self.split, dim=1)
        return DetectorOutput(heat, size, offset, colour, shape)

    def prepare(self, image: npt.NDArray[np.uint8]) -> tuple[torch.Tensor, float, float]:
        """An (H, W, 3) uint8 RGB image as a (1, 3, h, w) input at the config's size, and the x, y scale back."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
        cfg = self.config
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        h, w = image.shape[:2]
        if (h, w) != (cfg.input_height, cfg.input_width):
            t = F.interpolate(t, size=(cfg.input_height, cfg.input_width), mode="bilinear", antialias=True)
        return t, w / cfg.input_width, h / cfg.input_height

    @torch.inference_mode()
    def detect(self, image: npt.NDArray[np.uint8]) -> list[ObjectDetection]:
        """Every object found in `image`, most confident first, boxes in `image` pixels."""
        t, sx, sy = self.prepare(image)
        return decode(self(t.to(self.mean.device)), self.config, sx, sy)[0]


def decode(
    out: DetectorOutput, config: DetectorConfig, sx: float = 1.0, sy: float = 1.0
) -> list[list[ObjectDetection]]:
    """Objects at the heat map's 3x3 local maxima above `config.min_confidence`, per image of the batch.

    sx, sy: scale from the network's input pixels to the caller's image pixels.
    """
    heat = torch.sigmoid(out.heat[:, 0])
    peaks = heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]
    scores = (heat * peaks).flatten(1)
    top, idx = scores.topk(min(config.max_objects, scores.shape[1]), dim=1)
    width = heat.shape[2]
    stride = config.stride
    colour = torch.softmax(out.colour, 1)
    shape = torch.softmax(out.shape, 1)
    results: list[list[ObjectDetection]] = []
    for b in range(heat.shape[0]):
        found: list[ObjectDetection] = []
        for score, flat in zip(top[b].tolist(), idx[b].tolist(), strict=True):
            if score < config.min_confidence:
                break
            gy, gx = divmod(flat, width)
            cx = (gx + float(out.offset[b, 0, gy, gx])) * stride
            cy = (gy + float(out.offset[b, 1, gy, gx])) * stride
            bw = float(torch.exp(out.size[b, 0, gy, gx])) * stride
            bh = float(torch.exp(out.size[b, 1, gy, gx])) * stride
            box = ((cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy)
            found.append(
                ObjectDetection(
                    box,
                    score,
                    colour[b, :, gy, gx].float().cpu().numpy(),
                    shape[b, :, gy, gx].float().cpu().numpy(),
                )
            )
        results.append(found)
    return results
