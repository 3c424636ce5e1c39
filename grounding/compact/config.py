"""The compact grounder's configuration: network sizes, input size and decoding thresholds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from grounding.compact.scenes import COLOURS, SHAPES


@dataclass(frozen=True)
class DetectorConfig:
    """Sizes and thresholds of the compact detector.

    input_width, input_height: pixels the image is resized to; stride: output cells per input pixel (4);
    widths: channels of the four backbone stages; head_width: channels of the stride-4 map the heads read;
    min_confidence: centre score (0..1) below which a peak is not an object; max_objects: peaks kept per image;
    n_colours, n_shapes: classes of the attribute heads (the catalogue's).
    """

    input_width: int = 320
    input_height: int = 240
    stride: int = 4
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    head_width: int = 48
    min_confidence: float = 0.3
    max_objects: int = 16
    n_colours: int = len(COLOURS)
    n_shapes: int = len(SHAPES)

    def __post_init__(self) -> None:
        if self.input_width % 16 or self.input_height % 16 or self.input_width <= 0 or self.input_height <= 0:
            raise ValueError(
                f"input size must be positive multiples of 16 pixels, got {self.input_width}x{self.input_height}"
            )
        if self.stride != 4:
            raise ValueError(f"stride must be 4 (the heads read the stride-4 map), got {self.stride}")
        if len(self.widths) != 4 or any(w <= 0 for w in self.widths) or self.head_width <= 0:
            raise ValueError(f"widths must be four positive channel counts and head_width positive, got {self}")
        if not 0.0 < self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be within (0, 1), got {self.min_confidence}")
        if not 1 <= self.max_objects <= 100:
            raise ValueError(f"max_objects must be within 1..100, got {self.max_objects}")
        if self.n_colours != len(COLOURS) or self.n_shapes != len(SHAPES):
            raise ValueError(
                f"the heads must match the catalogue ({len(COLOURS)} colours, {len(SHAPES)} shapes), "
                f"got {self.n_colours} and {self.n_shapes}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        """Parse the JSON form; unknown keys are an error naming the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"unknown detector config keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        args = dict(d)
        if "widths" in args:
            args["widths"] = tuple(int(w) for w in args["widths"])
        return cls(**args)
