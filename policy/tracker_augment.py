"""Changes to the compact tracker's training frames that keep the target's mask valid: a horizontal mirror and a
colour change (brightness, contrast, saturation, a gain per channel), each drawn once per sample and applied alike
to every frame of a clip, so that the memory sees one consistent scene. With a few hundred simulated scenes the
tracker otherwise learns the scenes themselves (tracked over whole episodes: mIoU 0.89 on training episodes against
0.73 on unseen ones)."""

from __future__ import annotations

import numpy as np
import torch


def check_augment(flip_prob: float, color_jitter: float) -> None:
    """Raise ValueError unless `flip_prob` is a probability and `color_jitter` a relative change within [0, 0.5]."""
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be a probability within [0, 1], got {flip_prob}")
    if not 0.0 <= color_jitter <= 0.5:
        raise ValueError(f"color_jitter must be a relative change within [0, 0.5] (0 = off), got {color_jitter}")


def augment_clips(
    frames: torch.Tensor,
    masks: torch.Tensor,
    flip_prob: float,
    color_jitter: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror and recolour a batch of clips; returns new tensors (the inputs are not changed).

    frames: (B, K, S, S, 3) uint8; masks: (B, K, S, S) bool. Sample b is mirrored left-right with probability
    `flip_prob` (frames and masks together); its brightness, contrast and saturation are scaled by factors drawn
    from [1 - color_jitter, 1 + color_jitter] and each channel by one from [1 - color_jitter / 2, 1 +
    color_jitter / 2]. A black frame stays black.
    """
    check_augment(flip_prob, color_jitter)
    if frames.ndim != 5 or masks.ndim != 4 or frames.shape[:4] != masks.shape:
        raise ValueError(
            f"frames must be (B, K, S, S, 3) and masks (B, K, S, S) alike, got {tuple(frames.shape)} and "
            f"{tuple(masks.shape)}"
        )
    b = frames.shape[0]
    flip = torch.from_numpy(rng.random(b) < flip_prob).to(frames.device)
    if bool(flip.any()):
        frames = torch.where(flip.view(b, 1, 1, 1, 1), frames.flip(3), frames)
        masks = torch.where(flip.view(b, 1, 1, 1), masks.flip(3), masks)
    if color_jitter == 0.0:
        return frames.clone(), masks.clone()
    j = color_jitter

    def factors(*shape: int, half: float) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(1 - half, 1 + half, (b, *shape))).float().to(frames.device)

    x = frames.float()
    x = x * factors(1, 1, 1, 1, half=j)  # brightness
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    x = (x - mean) * factors(1, 1, 1, 1, half=j) + mean  # contrast about each frame's mean
    grey = x.mean(dim=4, keepdim=True)
    x = (x - grey) * factors(1, 1, 1, 1, half=j) + grey  # saturation
    x = x * factors(1, 1, 1, 3, half=j / 2)  # white balance
    return x.round().clamp(0, 255).to(torch.uint8), masks.clone()
