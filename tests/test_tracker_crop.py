"""The tracker's crop region (`TrackerConfig.crop`): SAM2 sees only the region, results come back in full-frame
pixels, offline == streaming still holds, the crop the weights were trained on travels in the checkpoint and
into cache keys, and bad regions are clear errors. Compact model at 64 px with random weights (as in
test_tracker.py), the object-score bias raised so that masks are not empty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_tracker import BOX0, _assert_same_steps, _max_diff, frame_at, frames, present_model, true_mask

from policy.cache import cache_key, load_tracker
from policy.cache_store import CacheKey
from policy.features import FeatureSpec
from policy.sam2_build import (
    COMPACT,
    checkpoint_crop,
    save_safetensors,
    tracker_metadata,
    tracker_spec,
)
from policy.tracker import (
    SAM2Tracker,
    TrackerConfig,
    TrackerInputError,
    check_crop,
    crop_pixels,
    parse_crop,
)

torch.set_num_threads(1)

#: x 0..60%, y 10..90% of the 96 x 72 test frames: pixels x 0..58, y 7..65, holding BOX0 (10..26, 20..36).
CROP = (0.0, 0.1, 0.6, 0.9)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return present_model()


def test_crop_pixels_and_parsing() -> None:
    assert crop_pixels(None, 72, 96) == (0, 0, 96, 72)
    assert crop_pixels(CROP, 72, 96) == (0, 7, 58, 65)
    assert parse_crop("full") is None
    assert parse_crop("none") is None
    assert parse_crop("0,0.1,0.6,0.9") == CROP
    assert TrackerConfig(crop=[0.0, 0.1, 0.6, 0.9]).crop == CROP  # type: ignore[arg-type]  # as read from JSON


@pytest.mark.parametrize(
    ("crop", "match"),
    [
        ((0.5, 0.1, 0.4, 0.9), "need 0 <= x0 < x1 <= 1"),
        ((0.0, 0.0, 1.2, 1.0), "need 0 <= x0 < x1 <= 1"),
        ((0.0, 0.0, 0.05, 1.0), "each side >= 0.1"),
        ((0.0, 0.0, 1.0), "4 fractions"),
        ((0.0, float("nan"), 1.0, 1.0), "4 fractions"),
    ],
)
def test_bad_crops_are_clear_errors(crop: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_crop(crop)
    with pytest.raises(ValueError, match=match):
        TrackerConfig(crop=crop)


def test_parse_crop_names_the_valid_form() -> None:
    with pytest.raises(ValueError, match="'x0,y0,x1,y1' fractions"):
        parse_crop("left half")


def test_cropped_tracking_returns_full_frame_results_and_agrees_offline_and_streaming(
    model: torch.nn.Module,
) -> None:
    config = TrackerConfig(crop=CROP, encode_batch=3)
    n = 10
    offline = list(SAM2Tracker(model, config).track(frames(n), BOX0))
    tracker = SAM2Tracker(model, config)
    it = frames(n)
    streaming = [tracker.start(next(it), BOX0)]
    streaming.extend(tracker.step(f) for f in it)
    _assert_same_steps(offline, streaming)
    x0, y0, x1, y1 = crop_pixels(CROP, 72, 96)
    outside = np.ones((72, 96), dtype=bool)
    outside[y0:y1, x0:x1] = False
    for step in offline:
        assert step.mask.shape == (72, 96)
        assert not step.mask[outside].any()  # nothing outside the region SAM2 saw
    assert any(step.mask.any() for step in offline)
    # SAM2 really sees another image: the features differ from the uncropped tracker's
    full = list(SAM2Tracker(model, TrackerConfig(encode_batch=3)).track(frames(n), BOX0))
    assert _max_diff(full[0].raw.pix_feat, offline[0].raw.pix_feat) > 1e-3


def test_pixels_outside_the_crop_do_not_change_the_features(model: torch.nn.Module) -> None:
    config = TrackerConfig(crop=CROP)
    a = SAM2Tracker(model, config).start(frame_at(0), BOX0)
    changed = frame_at(0).copy()
    changed[:, 70:] = 255  # right of the crop
    changed[:5] = 0  # above it
    b = SAM2Tracker(model, config).start(changed, BOX0)
    assert _max_diff(a.raw.pix_feat, b.raw.pix_feat) == 0.0


def test_cropped_oracle_masks_are_returned_whole(model: torch.nn.Module) -> None:
    config = TrackerConfig(crop=CROP, mask_source="oracle")
    tracker = SAM2Tracker(model, config)
    step = tracker.start(frame_at(0), BOX0, true_mask(0))
    assert np.array_equal(step.mask, true_mask(0))
    step = tracker.step(frame_at(1), true_mask(1))
    assert np.array_equal(step.mask, true_mask(1))


def test_a_prompt_outside_the_crop_is_a_clear_error(model: torch.nn.Module) -> None:
    tracker = SAM2Tracker(model, TrackerConfig(crop=CROP))
    with pytest.raises(TrackerInputError, match=r"outside the tracker's crop region x 0\.\.58, y 7\.\.65"):
        tracker.start(frame_at(0), [70.0, 20.0, 90.0, 40.0])


def test_the_trained_crop_travels_in_the_checkpoint_and_the_cache_key(model: torch.nn.Module, tmp_path: Path) -> None:
    spec = tracker_spec(COMPACT, 64)
    plain, cropped = tmp_path / "plain.safetensors", tmp_path / "cropped.safetensors"
    save_safetensors(model, plain, tracker_metadata(spec))
    save_safetensors(model, cropped, tracker_metadata(spec, CROP))
    assert checkpoint_crop(plain) is None
    assert checkpoint_crop(None) is None
    assert checkpoint_crop(cropped) == CROP
    t_plain = load_tracker(COMPACT, image_size=64, checkpoint=plain)
    t_crop = load_tracker(COMPACT, image_size=64, checkpoint=cropped)
    assert t_plain.config.crop is None
    assert t_crop.config.crop == CROP
    # an explicit crop wins over the recorded one
    other = (0.1, 0.1, 0.9, 0.9)
    explicit = load_tracker(COMPACT, image_size=64, checkpoint=cropped, config=TrackerConfig(crop=other))
    assert explicit.config.crop == other
    spec_f = FeatureSpec()
    k_plain, k_crop = cache_key(COMPACT, t_plain, spec_f), cache_key(COMPACT, t_crop, spec_f)
    assert k_plain.crop == "full"
    assert k_crop.crop == "0.0000,0.1000,0.6000,0.9000"
    assert k_plain.digest != k_crop.digest
    # keys of caches built before the field existed keep their names
    old_fields = {k: v for k, v in k_plain.__dict__.items() if k != "crop"}
    assert CacheKey(**old_fields).digest == k_plain.digest
    doc = {"format": 1, "key": k_crop.digest, "key_fields": k_crop.__dict__}
    assert CacheKey.from_manifest(json.loads(json.dumps(doc)), tmp_path) == k_crop
