"""Resolving parsed picks to one box: spatial words, ambiguity with candidates, no-match messages.

The backend here is a stand-in that returns fixed detections per phrase (named `TableGrounder`); the compact and
Grounding DINO backends are tested in their own files.
"""

from __future__ import annotations

import numpy as np
import pytest

from grounding.commands import parse_command, parse_object_phrase
from grounding.detection import Detection
from grounding.errors import AmbiguousTarget, NoMatch
from grounding.service import GroundingService, ResolveConfig

IMAGE = np.zeros((240, 320, 3), np.uint8)


class TableGrounder:
    """Stand-in backend: objects given as (name, box); a phrase matches by colour/shape words, score 0.9."""

    def __init__(self, objects: list[tuple[str, tuple[float, float, float, float]]]) -> None:
        self.objects = objects

    def ground(self, image: np.ndarray, text: str) -> list[Detection]:
        p = parse_object_phrase(text)
        out = []
        for name, box in self.objects:
            colour, shape = name.split()
            if (p.colour is None or p.colour.value == colour) and (p.shape is None or p.shape.value == shape):
                out.append(Detection(box, 0.9, p.text))
        return out

    def describe(self, image: np.ndarray) -> list[Detection]:
        return [Detection(box, 0.9, name) for name, box in self.objects]


SCENE = [
    ("red cup", (40.0, 100.0, 70.0, 130.0)),
    ("red cup", (200.0, 110.0, 230.0, 140.0)),
    ("blue box", (90.0, 150.0, 160.0, 175.0)),
    ("green ball", (215.0, 60.0, 235.0, 80.0)),
    ("yellow can", (120.0, 60.0, 140.0, 95.0)),
]


def locate(command: str, objects: list[tuple[str, tuple[float, float, float, float]]] = SCENE) -> Detection:
    service = GroundingService(TableGrounder(objects))
    return service.locate(IMAGE, parse_command(command)[0])


def test_unique_object() -> None:
    assert locate("pick the blue box").box_xyxy_px == SCENE[2][1]


def test_two_equal_matches_are_ambiguous_with_both_candidates() -> None:
    with pytest.raises(AmbiguousTarget) as info:
        locate("pick the red cup")
    boxes = sorted(c.box_xyxy_px for c in info.value.candidates)
    assert boxes == sorted([SCENE[0][1], SCENE[1][1]])
    doc = info.value.to_json()
    assert doc["type"] == "ambiguous"
    assert len(doc["candidates"]) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "index"),
    [
        ("pick the red cup on the left", 0),
        ("pick the rightmost red cup", 1),
        ("pick the nearest red cup", 1),
        ("pick the red cup at the back", 0),
        ("pick the red cup next to the green ball", 1),
        ("pick the red cup left of the yellow can", 0),
        ("pick the cup behind the blue box", 0),
        ("pick the biggest object", 2),
        ("pick the smallest object", 3),
    ],
)
def test_spatial_words_decide(command: str, index: int) -> None:
    assert locate(command).box_xyxy_px == SCENE[index][1]


def test_a_tie_in_position_is_ambiguous() -> None:
    twins = [("red cup", (100.0, 100.0, 130.0, 130.0)), ("red cup", (102.0, 60.0, 132.0, 90.0))]
    with pytest.raises(AmbiguousTarget):
        locate("pick the red cup on the left", twins)


def test_nothing_matching_says_what_was_asked_and_seen() -> None:
    with pytest.raises(NoMatch) as info:
        locate("pick the purple ball")
    msg = str(info.value)
    assert "purple ball" in msg
    assert "green ball" in msg
    assert "blue box" in msg


def test_missing_reference_is_no_match() -> None:
    with pytest.raises(NoMatch, match="no white box"):
        locate("pick the red cup next to the white box")


def test_relation_nobody_satisfies_is_no_match() -> None:
    with pytest.raises(NoMatch):
        locate("pick the green ball in front of the blue box")


def test_low_scores_do_not_match() -> None:
    class Weak(TableGrounder):
        def ground(self, image: np.ndarray, text: str) -> list[Detection]:
            return [Detection(d.box_xyxy_px, 0.2, d.phrase) for d in super().ground(image, text)]

    service = GroundingService(Weak(SCENE), ResolveConfig(match_threshold=0.35))
    with pytest.raises(NoMatch):
        service.locate(IMAGE, parse_command("pick the blue box")[0])


def test_bad_image_and_config_are_errors() -> None:
    service = GroundingService(TableGrounder(SCENE))
    with pytest.raises(ValueError, match="uint8"):
        service.locate(np.zeros((240, 320), np.float32), parse_command("pick the blue box")[0])
    with pytest.raises(ValueError, match="match_threshold"):
        ResolveConfig(match_threshold=1.5)


def test_detection_validation() -> None:
    with pytest.raises(ValueError, match="x0 < x1"):
        Detection((10.0, 10.0, 5.0, 20.0), 0.5, "x")
    with pytest.raises(ValueError, match="score"):
        Detection((0.0, 0.0, 5.0, 5.0), 1.5, "x")
    with pytest.raises(ValueError, match="finite"):
        Detection((0.0, float("nan"), 5.0, 5.0), 0.5, "x")
