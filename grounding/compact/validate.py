"""Validation scores of the compact detector on labelled images: recall, precision, colour and shape accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grounding.compact.model import CompactDetector, decode
from grounding.compact.scenes import LabelledImage
from grounding.detection import box_iou

#: Objects showing at least this many pixels count in recall (smaller ones are neither required nor penalised).
CLEARLY_VISIBLE_PX = 60


@dataclass(frozen=True)
class DetectorScores:
    """recall: share of clearly visible objects found at IoU ≥ 0.5; precision: share of detections that match an
    object; colour_accuracy, shape_accuracy: arg-max class right on the matched objects; objects: clearly
    visible objects scored."""

    recall: float
    precision: float
    colour_accuracy: float
    shape_accuracy: float
    objects: int

    def __str__(self) -> str:
        return (
            f"recall {self.recall:.3f}, precision {self.precision:.3f}, colour {self.colour_accuracy:.3f}, "
            f"shape {self.shape_accuracy:.3f} ({self.objects} objects)"
        )


@torch.inference_mode()
def score_detector(model: CompactDetector, items: list[LabelledImage], batch: int = 16) -> DetectorScores:
    """Score `model` on `items` (images at the model's input size)."""
    found = matched = colour_ok = shape_ok = n_obj = n_det = false_det = 0
    for k in range(0, len(items), batch):
        chunk = items[k : k + batch]
        x = torch.stack([torch.from_numpy(it.image).permute(2, 0, 1).float() for it in chunk])
        for it, dets in zip(chunk, decode(model(x), model.config), strict=True):
            used: set[int] = set()
            n_det += len(dets)
            for d in dets:
                ious = [
                    box_iou(d.box_xyxy_px, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
                    if it.visible_px[j]
                    else 0.0
                    for j, b in enumerate(it.boxes)
                ]
                j = int(np.argmax(ious)) if ious else -1
                if j < 0 or ious[j] < 0.5 or j in used:
                    if j < 0 or it.visible_px[j] >= CLEARLY_VISIBLE_PX or j in used:
                        false_det += 1
                    continue
                used.add(j)
                if it.visible_px[j] >= CLEARLY_VISIBLE_PX:
                    matched += 1
                    colour_ok += int(np.argmax(d.colour_probs) == it.colours[j])
                    shape_ok += int(np.argmax(d.shape_probs) == it.shapes[j])
            for j in range(len(it.boxes)):
                if it.visible_px[j] >= CLEARLY_VISIBLE_PX:
                    n_obj += 1
                    found += int(j in used)
    return DetectorScores(
        recall=found / max(n_obj, 1),
        precision=1.0 - false_det / max(n_det, 1),
        colour_accuracy=colour_ok / max(matched, 1),
        shape_accuracy=shape_ok / max(matched, 1),
        objects=n_obj,
    )
