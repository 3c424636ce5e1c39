"""Spatial words applied to detections, in the image as the camera sees it (x right, y down, pixels).

"Nearest" means nearest to the camera: the object whose contact with the table (its box's bottom edge) is lowest
in the image. Each rule ranks candidates by one number; when the best two are closer than a margin the words do
not decide, and the caller reports the command as ambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grounding.detection import Detection, box_iou
from grounding.vocabulary import Relation

#: Two candidates whose positions differ by less than this share of the image width are a tie.
TIE_FRACTION = 0.02
#: Two candidates whose sizes (square root of box area) differ by less than this ratio are a tie.
SIZE_TIE_RATIO = 1.15
#: A reference and a candidate overlapping more than this are the same object.
SAME_OBJECT_IOU = 0.6


@dataclass(frozen=True)
class Ranked:
    """Candidates best first by the relation, and whether the best is clearly ahead of the second."""

    order: tuple[Detection, ...]
    decided: bool


def _bottom(d: Detection) -> float:
    return d.box_xyxy_px[3]


def _distance(a: Detection, b: Detection) -> float:
    (ax, ay), (bx, by) = a.centre_px, b.centre_px
    return math.hypot(ax - bx, ay - by)


def _unary_key(relation: Relation, d: Detection) -> float:
    """Smaller is better."""
    x, _ = d.centre_px
    keys = {
        Relation.LEFTMOST: x,
        Relation.RIGHTMOST: -x,
        Relation.NEAREST: -_bottom(d),
        Relation.FARTHEST: _bottom(d),
        Relation.BIGGEST: -0.5 * math.log(d.area_px),
        Relation.SMALLEST: 0.5 * math.log(d.area_px),
    }
    return keys[relation]


def side_margin(relation: Relation, d: Detection, ref: Detection) -> float:
    """Pixels by which `d` stands on the side of `ref` that `relation` names (negative: the other side;
    infinite for "next to", which has no side)."""
    (dx, _), (rx, _) = d.centre_px, ref.centre_px
    sides = {
        Relation.NEXT_TO: math.inf,
        Relation.BEHIND: _bottom(ref) - _bottom(d),
        Relation.IN_FRONT_OF: _bottom(d) - _bottom(ref),
        Relation.LEFT_OF: rx - dx,
        Relation.RIGHT_OF: dx - rx,
    }
    return sides[relation]


def _binary_key(relation: Relation, d: Detection, ref: Detection) -> float | None:
    """Distance to `ref` when `d` stands where `relation` says, else None."""
    return _distance(d, ref) if side_margin(relation, d, ref) > 0 else None


def rank(relation: Relation, candidates: list[Detection], references: list[Detection], image_width: int) -> Ranked:
    """Order `candidates` by `relation` (with `references` for binary relations); empty when none qualifies."""
    sized = relation in (Relation.BIGGEST, Relation.SMALLEST)
    margin = math.log(SIZE_TIE_RATIO) if sized else TIE_FRACTION * image_width
    scored: list[tuple[float, Detection]] = []
    for d in candidates:
        if references:
            keys = [
                k
                for ref in references
                if box_iou(d.box_xyxy_px, ref.box_xyxy_px) < SAME_OBJECT_IOU
                and (k := _binary_key(relation, d, ref)) is not None
            ]
            if keys:
                scored.append((min(keys), d))
        else:
            scored.append((_unary_key(relation, d), d))
    scored.sort(key=lambda kd: kd[0])
    decided = len(scored) == 1 or (len(scored) > 1 and scored[1][0] - scored[0][0] >= margin)
    return Ranked(tuple(d for _, d in scored), decided)
