"""F_t, the object-aware features the action head reads, built from one tracker step under a named spec.

The SAM2Grasp paper leaves open which SAM2 tensors form F_t; the project ships several specs and chooses by
measured policy success. Every spec gives `tokens` (n, C) for the head's encoder and `extras`: the object score
logit, its sigmoid, the mask box normalised to 0..1 (x0, y0, x1, y1) and the mask's share of the image (7 values);
a spec named with "+shape" appends the mask's orientation moments (4 values, see `shape_moments`), which carry the
object's yaw that pooled pixel features average away and the grasp needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from policy.tracker import TrackStep

#: Number of `extras` values of every spec without "+shape".
EXTRAS_DIM = 7
#: Extra `extras` values of a "+shape" spec.
SHAPE_DIM = 4
#: Suffix of a spec name that adds the mask's orientation moments to the extras.
SHAPE_SUFFIX = "+shape"


@dataclass(frozen=True)
class FeatureSpec:
    """How F_t is formed.

    kind: "pooled" — memory-conditioned pixel features average-pooled to a grid x grid map (grid² tokens) plus the
    object pointer; "masked" — pixel features pooled under the predicted mask and over the whole map (2 tokens)
    plus the object pointer; "pointer" — the object pointer alone.
    grid: cells per side for "pooled" (1..16).
    shape: append the mask's orientation moments (`shape_moments`) to the extras.
    """

    kind: str = "pooled"
    grid: int = 4
    shape: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; valid kinds: {', '.join(FEATURE_KINDS)}")
        if not 1 <= self.grid <= 16:
            raise ValueError(f"grid must be within 1..16, got {self.grid}")

    @property
    def name(self) -> str:
        """Short name used in cache keys and checkpoints: "pooled4", "masked", "pointer", "pooled4+shape"."""
        base = f"pooled{self.grid}" if self.kind == "pooled" else self.kind
        return base + SHAPE_SUFFIX if self.shape else base

    @property
    def extras_dim(self) -> int:
        """Values of `extras` per frame: 7, or 11 with the shape moments."""
        return EXTRAS_DIM + (SHAPE_DIM if self.shape else 0)

    def num_tokens(self) -> int:
        """Tokens per frame."""
        return {"pooled": self.grid * self.grid + 1, "masked": 3, "pointer": 1}[self.kind]


FEATURE_KINDS: tuple[str, ...] = ("pooled", "masked", "pointer")


def parse_feature_spec(text: str) -> FeatureSpec:
    """ "pooled4" / "pooled2" / "masked" / "pointer", each optionally + "+shape", as a spec, or an error listing the
    valid forms."""
    valid = "pooledN (N = 1..16, e.g. pooled4), masked, pointer, each optionally followed by +shape"
    if not isinstance(text, str):  # a spec read from a JSON file may be any JSON value
        raise ValueError(f"feature spec must be a string ({valid}), got {type(text).__name__} {text!r}")
    shape = text.endswith(SHAPE_SUFFIX)
    base = text[: -len(SHAPE_SUFFIX)] if shape else text
    if base.startswith("pooled"):
        digits = base[len("pooled") :] or "4"
        if digits.isascii() and digits.isdecimal():
            return FeatureSpec("pooled", int(digits), shape)
    elif base in FEATURE_KINDS:
        return FeatureSpec(base, shape=shape)
    raise ValueError(f"unknown feature spec {text!r}; valid: {valid}")


@dataclass(frozen=True)
class Features:
    """F_t of one frame: tokens (n, C) float32 and extras (spec.extras_dim,) float32."""

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
    values = [score, sigmoid, *box.tolist(), float(step.mask.mean())]
    if spec.shape:
        values.extend(shape_moments(step.mask).tolist())
    return Features(tokens.numpy().astype(np.float32), np.array(values, dtype=np.float32))


def shape_moments(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """The mask's orientation as two normalised complex moments about its centroid, (4,) float32.

    With z = (x - x̄) + i(y - ȳ) over the mask's pixels (image axes, y down): m2 = Σz² / Σ|z|² and
    m4 = Σz⁴ / Σ|z|⁴, returned as (Re m2, Im m2, Re m4, Im m4). |m2| is the elongation (0 for a disc or a square,
    towards 1 for a line) and arg(m2)/2 the long axis' angle. m4 turns four times as fast, so it still gives the
    orientation of a square (mod 90°; its corners weigh most, so an axis-aligned square has arg m4 = π), where m2
    vanishes. Both ignore the mask's position and size and change continuously with its angle, so a head can learn
    the grasp yaw from them. An empty or one-pixel mask gives zeros.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) < 2:
        return np.zeros(SHAPE_DIM, np.float32)
    z = (xs - xs.mean()) + 1j * (ys - ys.mean())
    r2 = (z * z.conjugate()).real
    if r2.sum() <= 0.0:
        return np.zeros(SHAPE_DIM, np.float32)
    z2 = z * z
    m2 = z2.sum() / r2.sum()
    m4 = (z2 * z2).sum() / (r2 * r2).sum()
    return np.array([m2.real, m2.imag, m4.real, m4.imag], dtype=np.float32)
