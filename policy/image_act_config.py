"""Configuration of the image-based ACT baselines: a frozen dataclass, validated on construction, stored as JSON.

The paper's baselines, trained from scratch on the same demonstrations as SAM2Grasp:
- `act`: the RGB frame (downscaled to `image_width` x `image_height`) + proprioception -> action chunk, no CVAE;
- `act-cvae`: the same with the CVAE;
- `act-cvae-condition`: the CVAE variant with the target's box drawn on every frame (training: the dataset's
  per-frame box; evaluation: the box of the SAM2 tracker prompted with the first frame's box).

The vision backbone (`backbone`) is a small CNN sized for CPU training ("cnn", the default) or ACT's own ResNet-18
layout ("resnet18", `policy.resnet_encoder`), both trained from scratch. The transformer is policy/act.py's,
configured by a `TokenMapACTConfig` (an `ACTConfig` whose tokens are the backbone map's cells instead of a SAM2
feature spec); its `extras` slot holds one constant zero (the baselines read no tracker features). A checkpoint
is only valid for its policy type, backbone, image size and action mode.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from policy.act_config import ACTConfig
from policy.features import EXTRAS_DIM
from policy.image_encoder import map_size
from policy.resnet_encoder import RESNET18_CHANNELS, RESNET18_STRIDE_STEPS

#: The baselines `sam2grasp train --policy` builds from frames.
POLICY_TYPES: tuple[str, ...] = ("act", "act-cvae", "act-cvae-condition")
#: `ACTConfig.feature_spec` of a transformer reading CNN feature-map cells.
CNN_TOKENS = "cnn-map"
#: Default policy image size (width, height) in pixels: 4:3 like the camera, small enough for CPU training.
DEFAULT_IMAGE_SIZE: tuple[int, int] = (128, 96)
#: Vision backbones: the small CNN (one token per cell after len(channels) stride-2 stages) or ACT's ResNet-18.
BACKBONES: tuple[str, ...] = ("cnn", "resnet18")
#: Stage widths of the small CNN unless given.
DEFAULT_CNN_CHANNELS: tuple[int, ...] = (32, 64, 128, 128)
#: Transformer fields the image config sets itself.
FIXED_HEAD_FIELDS: tuple[str, ...] = (
    "feature_spec",
    "token_dim",
    "n_tokens",
    "extras_dim",
    "use_vae",
    "normalize_tokens",
)
_SIZE_RANGE = (16, 1024)


@dataclass(frozen=True)
class TokenMapACTConfig(ACTConfig):
    """An `ACTConfig` for tokens that are CNN feature-map cells: feature_spec must be `CNN_TOKENS`, n_tokens any
    count >= 1; every other field is validated by `ACTConfig`'s own rules."""

    def __post_init__(self) -> None:
        if self.feature_spec != CNN_TOKENS:
            raise ValueError(f"TokenMapACTConfig.feature_spec must be {CNN_TOKENS!r}, got {self.feature_spec!r}")
        n = self.n_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"TokenMapACTConfig.n_tokens must be an integer >= 1, got {n!r}")
        e = self.extras_dim
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ValueError(f"TokenMapACTConfig.extras_dim must be an integer >= 1, got {e!r}")
        # the other fields under the feature head's rules ("pointer" is a spec of one token and 7 extras)
        ACTConfig(**{**asdict(self), "feature_spec": "pointer", "n_tokens": 1, "extras_dim": EXTRAS_DIM})


def parse_image_size(text: str) -> tuple[int, int]:
    """ "128x96" as (width, height) in pixels, or a ValueError saying what is valid."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise ValueError(f"image size must be WIDTHxHEIGHT in pixels (e.g. 128x96), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _check_channels(channels: object) -> None:
    """ValueError unless `channels` is a tuple of 1 to 6 CNN stage widths within 1..1024."""
    if not isinstance(channels, tuple) or not 1 <= len(channels) <= 6:
        raise ValueError(f"ImageACTConfig.channels must be 1 to 6 stage widths, got {channels!r}")
    if any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 1024 for c in channels):
        raise ValueError(f"ImageACTConfig.channels must be integers within 1..1024, got {channels!r}")


def check_backbone(backbone: object) -> None:
    """ValueError unless `backbone` is one of `BACKBONES`."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown image backbone {backbone!r}; valid: {', '.join(BACKBONES)}")


def uses_cvae(policy: str) -> bool:
    """Whether baseline `policy` trains with the CVAE."""
    return policy != "act"


@dataclass(frozen=True)
class ImageACTConfig:
    """An image baseline: its type, input size, vision backbone and the transformer reading the backbone's map.

    policy: one of `POLICY_TYPES`; image_width, image_height: pixels the frames are downscaled to (16..1024);
    backbone: one of `BACKBONES`; channels: the CNN's stage widths (one stride-2 stage each), or for "resnet18" its
    fixed `RESNET18_CHANNELS`; box_colour: RGB of the drawn target box and
    box_thickness its line width in pixels at the policy's image size (condition variant only);
    head: the transformer, whose token count and width must match the backbone's map (use
    `ImageACTConfig.create`).
    """

    policy: str
    head: TokenMapACTConfig
    image_width: int = DEFAULT_IMAGE_SIZE[0]
    image_height: int = DEFAULT_IMAGE_SIZE[1]
    channels: tuple[int, ...] = DEFAULT_CNN_CHANNELS
    box_colour: tuple[int, int, int] = (0, 255, 255)
    box_thickness: int = 2
    backbone: str = "cnn"

    def __post_init__(self) -> None:
        if self.policy not in POLICY_TYPES:
            raise ValueError(f"ImageACTConfig.policy={self.policy!r}; valid: {', '.join(POLICY_TYPES)}")
        lo, hi = _SIZE_RANGE
        for name in ("image_width", "image_height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"ImageACTConfig.{name} must be an integer within {lo}..{hi} pixels, got {v!r}")
        check_backbone(self.backbone)
        _check_channels(self.channels)
        if self.backbone == "resnet18" and self.channels != RESNET18_CHANNELS:
            raise ValueError(
                f"ImageACTConfig.channels of the resnet18 backbone are fixed at {RESNET18_CHANNELS}, got "
                f"{self.channels} (stage widths are a setting of the cnn backbone only)"
            )
        colour = self.box_colour
        if not (
            isinstance(colour, tuple)
            and len(colour) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
        ):
            raise ValueError(f"ImageACTConfig.box_colour must be 3 integers within 0..255 (RGB), got {colour!r}")
        t = self.box_thickness
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 16:
            raise ValueError(f"ImageACTConfig.box_thickness must be an integer within 1..16 pixels, got {t!r}")
        if not isinstance(self.head, TokenMapACTConfig):
            raise ValueError(f"ImageACTConfig.head must be a TokenMapACTConfig, got {type(self.head).__name__}")
        want = {
            "n_tokens": self.map_cells[0] * self.map_cells[1],
            "token_dim": self.channels[-1],
            "extras_dim": 1,
            "use_vae": uses_cvae(self.policy),
            "normalize_tokens": False,
        }
        wrong = {k: getattr(self.head, k) for k, v in want.items() if getattr(self.head, k) != v}
        if wrong:
            raise ValueError(
                f"ImageACTConfig.head does not fit a {self.policy!r} policy on {self.image_width}x{self.image_height} "
                f"frames with the {self.backbone} backbone (channels {self.channels}): found {wrong}, needs "
                f"{ {k: want[k] for k in wrong} } (build it with ImageACTConfig.create)"
            )

    @classmethod
    def create(
        cls,
        policy: str,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        channels: tuple[int, ...] | None = None,
        backbone: str = "cnn",
        **head: Any,
    ) -> ImageACTConfig:
        """A config whose transformer fits the backbone's map; `head` holds other `ACTConfig` fields (chunk_size,
        ...). channels: None for the backbone's own (`DEFAULT_CNN_CHANNELS`, `RESNET18_CHANNELS`)."""
        fixed = sorted(set(FIXED_HEAD_FIELDS) & set(head))
        if fixed:
            raise ValueError(f"head settings {fixed} follow from the policy type, image size and backbone; remove them")
        if policy not in POLICY_TYPES:
            raise ValueError(f"unknown image policy {policy!r}; valid: {', '.join(POLICY_TYPES)}")
        check_backbone(backbone)
        width, height = image_size
        if channels is None:
            channels = RESNET18_CHANNELS if backbone == "resnet18" else DEFAULT_CNN_CHANNELS
        channels = tuple(channels)
        _check_channels(channels)
        cells = map_size(width, height, _stride_steps(backbone, channels))
        head_cfg = TokenMapACTConfig(
            feature_spec=CNN_TOKENS,
            token_dim=channels[-1],
            n_tokens=cells[0] * cells[1],
            extras_dim=1,
            use_vae=uses_cvae(policy),
            normalize_tokens=False,
            **head,
        )
        return cls(
            policy=policy,
            head=head_cfg,
            image_width=width,
            image_height=height,
            channels=channels,
            backbone=backbone,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image_width, self.image_height

    @property
    def map_cells(self) -> tuple[int, int]:
        """Backbone feature-map cells (w, h): one encoder token each."""
        return map_size(self.image_width, self.image_height, _stride_steps(self.backbone, self.channels))

    @property
    def draws_box(self) -> bool:
        """Whether the target's box is drawn on every frame (the condition variant)."""
        return self.policy == "act-cvae-condition"

    @property
    def input_name(self) -> str:
        """What the policy reads, for reports: "rgb128x96", "rgb128x96+box", with "-resnet18" for that backbone."""
        name = f"rgb{self.image_width}x{self.image_height}" + ("+box" if self.draws_box else "")
        return name + ("" if self.backbone == "cnn" else f"-{self.backbone}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = list(self.channels)
        out["box_colour"] = list(self.box_colour)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> ImageACTConfig:
        """A config from its dict; unknown or missing keys are errors naming the valid ones."""
        if not isinstance(data, dict):
            raise ValueError(f"ImageACTConfig must be a JSON object, got {type(data).__name__}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        missing = sorted({"policy", "head"} - set(data))  # a file without "backbone" predates it: the cnn
        if unknown or missing:
            raise ValueError(f"ImageACTConfig keys: unknown {unknown}, missing {missing}; valid keys: {sorted(valid)}")
        head = data["head"]
        head_valid = {f.name for f in fields(TokenMapACTConfig)}
        if not isinstance(head, dict) or set(head) - head_valid:
            extra = sorted(set(head) - head_valid) if isinstance(head, dict) else type(head).__name__
            raise ValueError(f"ImageACTConfig.head: unknown keys {extra}; valid keys: {sorted(head_valid)}")
        kw = dict(data)
        for name in ("channels", "box_colour"):
            if name in kw:
                if not isinstance(kw[name], list):
                    raise ValueError(f"ImageACTConfig.{name} must be a JSON list, got {kw[name]!r}")
                kw[name] = tuple(kw[name])
        try:
            kw["head"] = TokenMapACTConfig(**head)
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"ImageACTConfig: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageACTConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ImageACTConfig JSON is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _stride_steps(backbone: str, channels: tuple[int, ...]) -> int:
    """Stride-2 steps from frame to token map: one per CNN stage, or the ResNet-18's five."""
    return RESNET18_STRIDE_STEPS if backbone == "resnet18" else len(channels)
