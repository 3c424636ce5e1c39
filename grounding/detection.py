"""One detected object: a pixel box, a score and the phrase it answers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """An object found in an image.

    box_xyxy_px: (x0, y0, x1, y1) pixels in the image that was grounded, x0 < x1 and y0 < y1;
    score: 0..1, how well the object matches the phrase; phrase: the words of the command it answers
    ("red cup"), or the detector's label when no command was given.
    """

    box_xyxy_px: tuple[float, float, float, float]
    score: float
    phrase: str

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box_xyxy_px
        if not all(math.isfinite(v) for v in self.box_xyxy_px):
            raise ValueError(f"box must be finite pixels, got {self.box_xyxy_px}")
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box must satisfy x0 < x1 and y0 < y1, got {self.box_xyxy_px}")
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"score must be within [0, 1], got {self.score}")

    @property
    def centre_px(self) -> tuple[float, float]:
        """Box centre (x, y), pixels."""
        x0, y0, x1, y1 = self.box_xyxy_px
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))

    @property
    def area_px(self) -> float:
        """Box area, square pixels."""
        x0, y0, x1, y1 = self.box_xyxy_px
        return (x1 - x0) * (y1 - y0)

    def to_json(self) -> dict[str, object]:
        """JSON form: `box` [x0, y0, x1, y1] pixels, `score`, `phrase`."""
        return {"box": [round(v, 2) for v in self.box_xyxy_px], "score": round(self.score, 4), "phrase": self.phrase}


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two xyxy boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
