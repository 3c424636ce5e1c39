"""Prompt-frame mask: segmented from the box at full resolution, close to the true mask on drawn and rendered
scenes, the same on every call, and clear errors for what it cannot use."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from policy.features import shape_moments
from policy.prompt_mask import PromptMaskError, refine_prompt_mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def drawn_scene(angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 320x240 noisy table with a turned red bar (the target, 30 x 12 px) and a blue block beside it that the
    window around the target's box takes in: the image, the target's true mask and its box."""
    rng = np.random.default_rng(int(angle_deg))
    img = np.clip(rng.normal((140, 120, 97), 6, (240, 320, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((240, 320), np.uint8)
    corners = cv2.boxPoints(((160.0, 120.0), (30.0, 12.0), angle_deg)).astype(np.float32)
    cv2.fillPoly(truth, [np.round(corners).astype(np.int32)], 1)
    img[truth > 0] = np.clip(rng.normal((190, 40, 35), 6, (int(truth.sum()), 3)), 0, 255).astype(np.uint8)
    img[100:120, 184:196] = (40, 60, 170)
    ys, xs = np.nonzero(truth)
    box = np.array([xs.min() - 1, ys.min() - 1, xs.max() + 2, ys.max() + 2], np.float64)
    return img, truth > 0, box


@pytest.mark.parametrize("angle", [0.0, 25.0, 60.0, 115.0])
def test_the_mask_of_a_drawn_bar_is_close_and_keeps_its_orientation(angle: float) -> None:
    img, truth, box = drawn_scene(angle)
    mask = refine_prompt_mask(img, box)
    assert iou(mask, truth) > 0.85
    assert not mask[100:120, 184:196].any()  # the block beside it stays background
    m = shape_moments(mask)
    found = math.degrees(0.5 * math.atan2(m[1], m[0]))  # the long axis in image coordinates (y down)
    assert abs((found - angle + 90) % 180 - 90) < 4.0
    # a coarse mask, as the tracker's quarter-resolution logits give, reads the same bar less precisely
    coarse = cv2.resize(cv2.resize(truth.astype(np.uint8), (64, 48), interpolation=cv2.INTER_AREA), (320, 240)) > 0
    assert iou(mask, truth) > iou(coarse, truth)
    np.testing.assert_array_equal(refine_prompt_mask(img, box), mask)  # seeded: the same pixels, the same mask


@pytest.mark.render
def test_rendered_targets_are_segmented_close_to_the_simulators_masks() -> None:
    from robot.sim.config import CellConfig
    from robot.sim.env import PickEnv

    env = PickEnv(CellConfig(image_width=320, image_height=240, depth=False))
    scores = []
    for seed in range(10_000_000, 10_000_008):
        obs, _ = env.reset(seed)
        assert obs.rgb is not None
        if obs.target_mask is None or obs.target_mask.sum() < 20:
            continue
        scores.append(iou(refine_prompt_mask(obs.rgb, obs.target_box), obs.target_mask))
    env.close()
    assert len(scores) >= 6
    assert float(np.median(scores)) > 0.85


def test_bad_images_boxes_and_settings_are_clear_errors() -> None:
    img, _, box = drawn_scene(0.0)
    with pytest.raises(PromptMaskError, match=r"\(H, W, 3\) uint8"):
        refine_prompt_mask(img.astype(np.float32), box)
    with pytest.raises(PromptMaskError, match="x1 > x0"):
        refine_prompt_mask(img, [50, 50, 40, 60])
    with pytest.raises(PromptMaskError, match="x1 > x0"):
        refine_prompt_mask(img, [50, 50, np.nan, 60])
    with pytest.raises(PromptMaskError, match="outside the 320x240 image"):
        refine_prompt_mask(img, [400, 10, 420, 30])
    with pytest.raises(PromptMaskError, match=r"iterations within 1\.\.20"):
        refine_prompt_mask(img, box, iterations=0)
    # a box over the whole image leaves no background to learn from: an empty mask, not a guess
    assert not refine_prompt_mask(img, [0, 0, 320, 240]).any()
