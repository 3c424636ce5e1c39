"""A loss-curve PNG drawn with PIL (matplotlib is not a dependency): train and validation L1 per epoch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_TRAIN = (31, 119, 180)
_VAL = (255, 127, 14)
_AXIS = (40, 40, 40)
_GRID = (225, 225, 225)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    ticks = []
    v = first
    while v <= hi + 1e-12:
        ticks.append(round(v, 10))
        v += step
    return ticks


def draw_loss_curve(
    epochs: Sequence[float],
    train: Sequence[float],
    val: Sequence[float | None],
    path: Path,
    *,
    title: str = "ACT head training",
    y_label: str = "L1 (normalised actions)",
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Write the curves to `path` (PNG); `val` may hold None where no validation ran."""
    if not len(epochs) == len(train) == len(val):
        raise ValueError(f"epochs, train and val must have one value each, got {len(epochs)}, {len(train)}, {len(val)}")
    w, h = size
    left, right, top, bottom = 80, 24, 40, 60
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((left, 12), title, fill=_AXIS, font=font)
    values = [v for v in train if math.isfinite(v)] + [v for v in val if v is not None and math.isfinite(v)]
    x_lo, x_hi = (min(epochs), max(epochs)) if epochs else (0.0, 1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    y_hi = max(values) * 1.05 if values else 1.0
    y_lo = 0.0
    y_ticks = _nice_ticks(y_lo, y_hi)
    y_hi = max(y_hi, y_ticks[-1]) if y_ticks else y_hi

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_lo) / (x_hi - x_lo) * (w - left - right),
            h - bottom - (y - y_lo) / (y_hi - y_lo) * (h - top - bottom),
        )

    for t in y_ticks:
        _, y = px(x_lo, t)
        draw.line([(left, y), (w - right, y)], fill=_GRID)
        draw.text((left - 8, y), f"{t:g}", fill=_AXIS, font=font, anchor="rm")
    for t in _nice_ticks(x_lo, x_hi, 6):
        x, _ = px(t, y_lo)
        draw.line([(x, h - bottom), (x, h - bottom + 5)], fill=_AXIS)
        draw.text((x, h - bottom + 8), f"{t:g}", fill=_AXIS, font=font, anchor="mt")
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=_AXIS, width=2)
    draw.text(((left + w - right) / 2, h - 18), "epoch", fill=_AXIS, font=font, anchor="mm")
    label = Image.new("RGBA", (int(draw.textlength(y_label, font=font)) + 4, 14), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 0), y_label, fill=_AXIS, font=font)
    rotated = label.rotate(90, expand=True)
    img.paste(rotated, (12, int((top + h - bottom) / 2 - rotated.height / 2)), rotated)
    for series, colour in ((list(train), _TRAIN), (list(val), _VAL)):
        pts = [px(x, y) for x, y in zip(epochs, series, strict=True) if y is not None and math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
    for i, (name, colour) in enumerate((("train", _TRAIN), ("validation", _VAL))):
        y = top + 8 + 16 * i
        draw.line([(w - right - 110, y), (w - right - 86, y)], fill=colour, width=3)
        draw.text((w - right - 80, y), name, fill=_AXIS, font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
