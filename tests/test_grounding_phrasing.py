"""The benchmark's generated commands agree with the resolver when the backend sees exactly the simulator's boxes
(a stand-in backend, `GroundTruthGrounder`): any disagreement is a labelling bug in the generator or the rules."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import grounding.evaluate as evaluation
from grounding.commands import parse_object_phrase
from grounding.compact.scenes import COLOURS, SHAPES, LabelledImage
from grounding.detection import Detection
from grounding.phrasing import Expect, cases_for
from grounding.service import GroundingService


class GroundTruthGrounder:
    """Stand-in backend: the current image's ground-truth boxes, score 0.95 for every object the phrase names."""

    item: LabelledImage | None = None

    def ground(self, image: np.ndarray, text: str) -> list[Detection]:
        p, it = parse_object_phrase(text), self.item
        if it is None:
            raise RuntimeError("no image")
        out = []
        for i in range(len(it.boxes)):
            if it.visible_px[i] < 12:
                continue
            if (p.colour is None or COLOURS[it.colours[i]] == p.colour) and (
                p.shape is None or SHAPES[it.shapes[i]] == p.shape
            ):
                x0, y0, x1, y1 = (float(v) for v in it.boxes[i])
                out.append(Detection((x0, y0, x1, y1), 0.95, p.text))
        return out


@pytest.mark.render
def test_generated_answers_match_the_rules_on_ground_truth(monkeypatch: pytest.MonkeyPatch) -> None:
    oracle = GroundTruthGrounder()
    from grounding.compact.scenes import iter_rendered as real

    def tracked(*args: object, **kwargs: object) -> Iterator[LabelledImage]:
        for item in real(*args, **kwargs):  # type: ignore[arg-type]
            oracle.item = item
            yield item

    monkeypatch.setattr(evaluation, "iter_rendered", tracked)
    result = evaluation.evaluate_grounding(GroundingService(oracle), scenes=12)
    assert result.commands >= 60
    assert result.failures == []
    assert result.top1 == 1.0
    assert set(result.by_kind) >= {"unique", "ambiguous", "spatial", "no_match"}


def test_cases_cover_both_phrasings_without_images() -> None:
    boxes = np.array([[10, 10, 30, 30], [100, 10, 120, 30], [200, 50, 230, 80]], np.float32)
    item = LabelledImage(
        np.zeros((240, 320, 3), np.uint8), boxes, np.array([0, 0, 2]), np.array([2, 2, 4]), np.array([400] * 3), 1, 0
    )
    rng = np.random.default_rng(0)
    standard = cases_for(item, rng, held_out=False)
    held = cases_for(item, rng, held_out=True)
    kinds = {c.kind: c for c in standard}
    assert kinds["ambiguous"].expect == Expect.AMBIGUOUS
    assert kinds["unique"].target_index == 2
    assert kinds["spatial"].target_index in (0, 1)
    assert {c.phrasing for c in held} == {"held_out"}
