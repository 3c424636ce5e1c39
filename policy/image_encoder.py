"""The image baselines' vision backbone: a small CNN in plain torch, trained from scratch with the ACT transformer.

No pretrained backbone exists here (the paper's ACT baselines use an ImageNet ResNet-18; torchvision cannot be
installed beside the CPU torch), so the baselines learn their vision from the demonstrations alone. This small CNN
is the default, sized to train on two CPU cores; `policy.resnet_encoder` holds ACT's own ResNet-18 layout. Each stage is
a stride-2 3x3 convolution and a stride-1 3x3 convolution, each followed by GroupNorm and ReLU; after S stages a
W x H frame becomes a map of ceil(W / 2^S) x ceil(H / 2^S) cells of `channels[-1]` features, and every cell
becomes one encoder token of the ACT transformer (the transformer's learned position embeddings tell the cells
apart).

Input: uint8 RGB frames (B, H, W, 3), 0..255; the encoder scales them to (x / 255 - 0.5) / 0.25 itself, so
training and inference can never disagree on the pixel normalisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Pixel normalisation: x / 255 mapped to (x - PIXEL_MEAN) / PIXEL_STD.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
#: GroupNorm groups (or the largest divisor of the channel count below it).
GROUPS = 8


def map_size(width: int, height: int, stages: int) -> tuple[int, int]:
    """Feature-map cells (w, h) of a `width` x `height` frame after `stages` stride-2 stages (3x3, padding 1)."""
    w, h = width, height
    for _ in range(stages):
        w, h = (w + 1) // 2, (h + 1) // 2
    return w, h


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over `channels` in `GROUPS` groups (or the largest common divisor of the two)."""
    return nn.GroupNorm(math.gcd(GROUPS, channels), channels)


def normalized_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) as float32 (B, 3, H, W) scaled to (x / 255 - PIXEL_MEAN) / PIXEL_STD."""
    x = frames.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (x - PIXEL_MEAN) / PIXEL_STD


class ConvEncoder(nn.Module):
    """Frames (B, H, W, 3) uint8 -> feature map (B, channels[-1], h, w) float32, h and w as `map_size` gives."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"ConvEncoder channels must be one or more integers >= 1, got {channels!r}")
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False),
                group_norm(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                group_norm(c),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.channels = tuple(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The feature map of uint8 frames (B, H, W, 3); the caller checks shapes and dtype."""
        out: torch.Tensor = self.body(normalized_pixels(frames))
        return out

    def tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """One token per feature-map cell, row-major: (B, h * w, channels[-1])."""
        return self.forward(frames).flatten(2).transpose(1, 2)
