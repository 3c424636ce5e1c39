"""ACT's own vision backbone for the image baselines: a ResNet-18, built in plain torch and trained from scratch.

The published ACT reads camera frames through an ImageNet ResNet-18 and hands the transformer one token per cell of
its last stage (stride 32, 512 channels). No pretrained weights exist here and torchvision cannot be installed
beside the CPU torch, so this is the same layout learned from the demonstrations alone: a 7x7 stride-2 stem and a
3x3 stride-2 max pool, then four stages of two basic residual blocks (64, 128, 256, 512 channels; the first block
of stages 2-4 halves the map, with a 1x1 projection on its shortcut). GroupNorm replaces BatchNorm: batches of a
few dozen frames from a handful of episodes give poor running statistics, and GroupNorm behaves the same in
training and evaluation.

A W x H frame becomes ceil(W / 32) x ceil(H / 32) tokens of 512 features (`map_size(W, H, RESNET18_STRIDE_STEPS)`):
10 x 8 = 80 at the simulated camera's 320 x 240. Input and pixel normalisation are `ConvEncoder`'s.
"""

from __future__ import annotations

import torch
from torch import nn

from policy.image_encoder import group_norm, normalized_pixels

#: Output channels of the four residual stages.
RESNET18_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)
#: Stride-2 steps from frame to map: stem, max pool, and stages 2-4.
RESNET18_STRIDE_STEPS = 5


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; `stride` 2 halves the map (shortcut projected 1x1)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = group_norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), group_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        out: torch.Tensor = self.relu(y + self.shortcut(x))
        return out


class ResNet18Encoder(nn.Module):
    """Frames (B, H, W, 3) uint8 -> feature map (B, 512, ceil(H / 32), ceil(W / 32)) float32."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, RESNET18_CHANNELS[0], 7, stride=2, padding=3, bias=False),
            group_norm(RESNET18_CHANNELS[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        c_in = RESNET18_CHANNELS[0]
        for i, c in enumerate(RESNET18_CHANNELS):
            blocks += [BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            c_in = c
        self.stages = nn.Sequential(*blocks)
        self.channels = RESNET18_CHANNELS
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.stages:
            if isinstance(block, BasicBlock):  # each residual branch starts as the identity's small correction
                nn.init.zeros_(block.norm2.weight)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The feature map of uint8 frames (B, H, W, 3); the caller checks shapes and dtype."""
        out: torch.Tensor = self.stages(self.stem(normalized_pixels(frames)))
        return out

    def tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """One token per feature-map cell, row-major: (B, h * w, 512)."""
        return self.forward(frames).flatten(2).transpose(1, 2)
