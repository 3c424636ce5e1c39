"""F_t, the object-aware features the action head reads, built from one tracker step under a named spec.

The SAM2Grasp paper leaves open which SAM2 tensors form F_t; the project ships several specs and chooses by
measured policy success. Every spec gives `tokens` (n, C) for the head's encoder and `extras` (7,): the object
score logit, its sigmoid, the mask box normalised to 0..1 (x0, y0, x1, y1) and the mask's share of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from policy.tracker import TrackStep

#: Number of `extras` values of every spec.
EXTRAS_DIM = 7


@dataclass(frozen=True)
class FeatureSpec:
    """How F_t is formed.

    kind: "pooled" — memory-conditioned pixel features average-pooled to a grid x grid map (grid² tokens) plus the
    object pointer; "masked" — pixel features pooled under the predicted mask and over the whole map (2 tokens)
    plus the object pointer; "pointer" — the object pointer alone.
    grid: cells per side for "pooled" (1..16).
    """

    kind: str = "pooled"
    grid: int = 4

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; valid kinds: {', '.join(FEATURE_KINDS)}")
        if not 1 <= self.grid <= 16:
            raise ValueError(f"grid must be within 1..16, got {self.grid}")

    @property
    def name(self) -> str:
        """Short name used in cache keys and checkpoints: "pooled4", "masked", "pointer"."""
        return f"pooled{self.grid}" if self.kind == "pooled" else self.kind

    def num_tokens(self) -> int:
        """Tokens per frame."""
        return {"pooled": self.grid * self.grid + 1, "masked": 3, "pointer": 1}[self.kind]


FEATURE_KINDS: tuple[str, ...] = ("pooled", "masked", "pointer")


def parse_feature_spec(text: str) -> FeatureSpec:
    """ "pooled4" / "pooled2" / "masked" / "pointer" as a spec, or an error listing the valid forms."""
    if not isinstance(text, str):  # a spec read from a JSON file may be any JSON value
        raise ValueError(
            f"feature spec must be a string (pooledN, masked, pointer), got {type(text).__name__} {text!r}"
        )
    if text.startswith("pooled"):
        digits = text[len("pooled") :] or "4"
        if digits.isascii() and digits.isdecimal():
            return FeatureSpec("pooled", int(digits))
    elif text in FEATURE_KINDS:
        return FeatureSpec(text)
    raise ValueError(f"unknown feature spec {text!r}; valid: pooledN (N = 1..16, e.g. pooled4), masked, pointer")


@dataclass(frozen=True)
class Features:
    """F_t of one frame: tokens (n, C) float32 and extras (7,) float32."""

    tokens: npt.NDArray[np.float32]
    extras: npt.NDArray[np.float32]


def extract(step: TrackStep, spec: FeatureSpec) -> Features:
    """F_t of a tracker step under `spec`."""
    raw = step.raw
    pix = raw.pix_feat  # (C, h, w)
    ptr = raw.obj_ptr.reshape(1, -1)
    if spec.kind == "pooled":
        pooled = F.adaptive_avg_pool2d(pix.unsqueeze(0), spec.grid)[0]  # (C, g, g)
        tokens = torch.cat([pooled.flatten(1).T, ptr], dim=0)
    elif spec.kind == "masked":
        weight = torch.sigmoid(F.interpolate(raw.mask_logits[None, None], size=pix.shape[-2:], mode="area")[0, 0])
        masked = (pix * weight).sum(dim=(1, 2)) / weight.sum().clamp_min(1e-6)
        tokens = torch.cat([masked.reshape(1, -1), pix.mean(dim=(1, 2)).reshape(1, -1), ptr], dim=0)
    else:
        tokens = ptr
    h, w = step.mask.shape
    box = step.box / np.array([w, h, w, h], dtype=np.float32)
    score = float(raw.object_score)
    sigmoid = 0.5 * (1.0 + np.tanh(score / 2.0))  # no overflow for very negative scores
    extras = np.array([score, sigmoid, *box.tolist(), float(step.mask.mean())], dtype=np.float32)
    return Features(tokens.numpy().astype(np.float32), extras)
