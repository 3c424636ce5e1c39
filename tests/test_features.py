"""F_t from a tracker step: token counts of every spec match what `extract` returns (on hand-made steps and on a
real step of the compact SAM2), pooled grids average the right cells, "masked" weights pixels by the mask, the
extras are the score, its sigmoid, the normalised box and the mask area, and bad specs are clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policy.features import (
    EXTRAS_DIM,
    FEATURE_KINDS,
    SHAPE_DIM,
    Features,
    FeatureSpec,
    extract,
    parse_feature_spec,
    shape_moments,
)
from policy.sam2_build import COMPACT, build_model, tracker_spec
from policy.tracker import RawFeatures, SAM2Tracker, TrackStep, mask_to_box

torch.set_num_threads(1)

W, H = 96, 72
SPECS = ["pooled1", "pooled2", "pooled4", "pooled7", "pooled16", "masked", "pointer", "pooled4+shape", "masked+shape"]


def _step(
    pix_feat: torch.Tensor,
    obj_ptr: torch.Tensor | None = None,
    mask_logits: torch.Tensor | None = None,
    score: float = 2.0,
    mask: np.ndarray | None = None,
) -> TrackStep:
    c, h, w = pix_feat.shape
    if obj_ptr is None:
        obj_ptr = torch.linspace(-1.0, 1.0, c)
    if mask_logits is None:
        mask_logits = torch.zeros(4 * h, 4 * w)
    if mask is None:
        mask = np.zeros((H, W), dtype=bool)
        mask[10:30, 20:50] = True
    raw = RawFeatures(pix_feat, obj_ptr, mask_logits, torch.tensor(score))
    return TrackStep(0, mask, mask_to_box(mask), score, score > 0, raw)


def _check_shapes(features: Features, spec: FeatureSpec, channels: int) -> None:
    assert features.tokens.shape == (spec.num_tokens(), channels)
    assert features.tokens.dtype == np.float32
    assert features.extras.shape == (spec.extras_dim,)
    assert features.extras.dtype == np.float32
    assert np.isfinite(features.tokens).all()
    assert np.isfinite(features.extras).all()


# ------------------------------------------------------------------ token counts


@pytest.mark.parametrize("text", SPECS)
def test_token_count_matches_extract_on_a_hand_made_step(text: str) -> None:
    spec = parse_feature_spec(text)
    step = _step(torch.randn(32, 6, 6, generator=torch.Generator().manual_seed(0)))
    _check_shapes(extract(step, spec), spec, 32)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("pooled1", 2), ("pooled2", 5), ("pooled4", 17), ("pooled16", 257), ("masked", 3), ("pointer", 1)],
)
def test_token_counts(text: str, tokens: int) -> None:
    assert parse_feature_spec(text).num_tokens() == tokens


@pytest.fixture(scope="module")
def real_step() -> TrackStep:
    torch.manual_seed(0)
    model = build_model(tracker_spec(COMPACT, 64))
    frame = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return SAM2Tracker(model).start(frame, [20, 10, 60, 40])


@pytest.mark.parametrize("text", SPECS)
def test_token_count_matches_extract_on_a_real_tracker_step(real_step: TrackStep, text: str) -> None:
    spec = parse_feature_spec(text)
    features = extract(real_step, spec)
    _check_shapes(features, spec, 64)  # the compact model's width
    np.testing.assert_array_equal(features.tokens[-1], real_step.raw.obj_ptr.numpy())  # the pointer comes last


# ------------------------------------------------------------------ pooled


def test_pooled_grid_averages_its_cells() -> None:
    pix = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    ptr = torch.tensor([7.0, -7.0])
    step = _step(pix, obj_ptr=ptr)
    two = extract(step, FeatureSpec("pooled", 2)).tokens
    cells = [pix[:, :2, :2], pix[:, :2, 2:], pix[:, 2:, :2], pix[:, 2:, 2:]]  # row-major: top-left, top-right, ...
    for i, cell in enumerate(cells):
        np.testing.assert_allclose(two[i], cell.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(two[4], ptr.numpy())
    one = extract(step, FeatureSpec("pooled", 1)).tokens
    np.testing.assert_allclose(one[0], pix.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    four = extract(step, FeatureSpec("pooled", 4)).tokens  # a grid the size of the map keeps every cell
    np.testing.assert_array_equal(four[:16], pix.flatten(1).T.numpy())


# ------------------------------------------------------------------ masked


def _region_step(inside: float, outside: float, logit_inside: float, logit_outside: float) -> TrackStep:
    pix = torch.full((3, 4, 4), outside)
    pix[:, 0:2, 1:3] = inside  # feature cells rows 0-1, columns 1-2 ...
    logits = torch.full((16, 16), logit_outside)
    logits[0:8, 4:12] = logit_inside  # ... are the same region at 4x the resolution
    return _step(pix, obj_ptr=torch.tensor([0.5, 0.25, -1.0]), mask_logits=logits)


def test_masked_token_weights_pixels_by_the_mask() -> None:
    tokens = extract(_region_step(1.0, 0.0, 20.0, -20.0), FeatureSpec("masked")).tokens
    np.testing.assert_allclose(tokens[0], 1.0, atol=1e-6)  # under the mask
    np.testing.assert_allclose(tokens[1], 4 / 16, atol=1e-6)  # over the whole map
    np.testing.assert_array_equal(tokens[2], [0.5, 0.25, -1.0])  # the object pointer
    outside = extract(_region_step(0.0, 1.0, 20.0, -20.0), FeatureSpec("masked")).tokens
    np.testing.assert_allclose(outside[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(outside[1], 12 / 16, atol=1e-6)


def test_masked_token_with_an_uncertain_mask_is_the_mean() -> None:
    tokens = extract(_region_step(1.0, 0.0, 0.0, 0.0), FeatureSpec("masked")).tokens
    np.testing.assert_allclose(tokens[0], tokens[1], atol=1e-6)


def test_masked_token_of_an_absent_object_is_finite() -> None:
    """SAM2 sets an absent object's mask logits to -1024: the weights are all zero, the token must not be NaN."""
    tokens = extract(_region_step(1.0, 0.0, -1024.0, -1024.0), FeatureSpec("masked")).tokens
    assert np.isfinite(tokens).all()
    np.testing.assert_allclose(tokens[0], 0.0, atol=1e-6)


# ------------------------------------------------------------------ extras


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_extras_are_score_sigmoid_normalised_box_and_area(kind: str) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[12:36, 24:72] = True  # 24 rows x 48 columns
    step = _step(torch.randn(8, 4, 4), score=1.5, mask=mask)
    extras = extract(step, FeatureSpec(kind)).extras
    expected = [1.5, 1 / (1 + math.exp(-1.5)), 24 / W, 12 / H, 72 / W, 36 / H, 24 * 48 / (H * W)]
    np.testing.assert_allclose(extras, expected, rtol=1e-6)


def test_extras_of_an_empty_mask_and_extreme_scores() -> None:
    empty = np.zeros((H, W), dtype=bool)
    low = extract(_step(torch.randn(8, 4, 4), score=-30.0, mask=empty), FeatureSpec("pointer")).extras
    np.testing.assert_allclose(low, [-30.0, 1 / (1 + math.exp(30.0)), 0, 0, 0, 0, 0], rtol=1e-6, atol=1e-12)
    full = np.ones((H, W), dtype=bool)
    high = extract(_step(torch.randn(8, 4, 4), score=30.0, mask=full), FeatureSpec("pointer")).extras
    np.testing.assert_allclose(high, [30.0, 1.0, 0, 0, 1, 1, 1], rtol=1e-6)


def test_extras_of_a_real_step_agree_with_its_fields(real_step: TrackStep) -> None:
    extras = extract(real_step, FeatureSpec()).extras
    assert extras[0] == pytest.approx(real_step.object_score, rel=1e-6)
    assert extras[1] == pytest.approx(1 / (1 + math.exp(-real_step.object_score)), rel=1e-6)
    np.testing.assert_allclose(extras[2:6], real_step.box / np.array([W, H, W, H]), rtol=1e-6)
    assert extras[6] == pytest.approx(real_step.mask.mean(), rel=1e-6)


# ------------------------------------------------------------------ shape moments


def _rectangle(cx: float, cy: float, length: float, width: float, angle: float, size: int = 160) -> np.ndarray:
    """Mask of a filled rectangle (pixels) whose long side points `angle` radians from the image x axis."""
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xs - cx, ys - cy
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    inside: np.ndarray = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    return inside


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.0, -0.7, 1.5, 2.6])
def test_shape_moments_give_a_rectangles_long_axis(angle: float) -> None:
    m = shape_moments(_rectangle(80, 80, 60, 20, angle))
    m2 = complex(m[0], m[1])
    assert abs(m2) > 0.6  # elongated: (L² - W²) / (L² + W²) = 0.8 for a 3:1 rectangle
    wrapped = (math.atan2(m2.imag, m2.real) / 2 - angle + math.pi / 2) % math.pi - math.pi / 2
    assert abs(wrapped) < 0.05


@pytest.mark.parametrize("angle", [0.0, 0.2, 0.5, -0.6])
def test_shape_moments_give_a_squares_orientation_modulo_a_quarter_turn(angle: float) -> None:
    m = shape_moments(_rectangle(70, 90, 40, 40, angle))
    assert abs(complex(m[0], m[1])) < 0.05  # a square has no long axis ...
    m4 = complex(m[2], m[3])
    assert abs(m4) > 0.1  # ... but its fourfold moment turns with it (its corners weigh most: arg m4 = 4·angle + π)
    wrapped = ((math.atan2(m4.imag, m4.real) - math.pi) / 4 - angle + math.pi / 4) % (math.pi / 2) - math.pi / 4
    assert abs(wrapped) < 0.05


def test_shape_moments_ignore_position_and_size_and_vanish_for_a_disc() -> None:
    a = shape_moments(_rectangle(50, 60, 40, 16, 0.4))
    b = shape_moments(_rectangle(100, 90, 80, 32, 0.4))
    np.testing.assert_allclose(a, b, atol=0.02)
    ys, xs = np.mgrid[0:160, 0:160]
    disc = (xs - 80) ** 2 + (ys - 80) ** 2 <= 30**2
    np.testing.assert_allclose(shape_moments(disc), 0.0, atol=0.03)  # pixel steps leave a faint fourfold term


def test_shape_moments_of_empty_and_one_pixel_masks_are_zero() -> None:
    empty = np.zeros((H, W), dtype=bool)
    np.testing.assert_array_equal(shape_moments(empty), np.zeros(SHAPE_DIM))
    empty[5, 7] = True
    np.testing.assert_array_equal(shape_moments(empty), np.zeros(SHAPE_DIM))


def test_shape_spec_appends_the_moments_to_the_plain_extras() -> None:
    mask = _rectangle(48, 36, 40, 12, 0.8, size=96)[:H]
    step = _step(torch.randn(8, 4, 4), score=1.5, mask=mask)
    plain = extract(step, FeatureSpec("pooled", 4)).extras
    shaped = extract(step, FeatureSpec("pooled", 4, shape=True)).extras
    np.testing.assert_array_equal(shaped[:EXTRAS_DIM], plain)
    np.testing.assert_array_equal(shaped[EXTRAS_DIM:], shape_moments(mask))


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("pooled4", FeatureSpec("pooled", 4)),
        ("pooled2", FeatureSpec("pooled", 2)),
        ("pooled", FeatureSpec("pooled", 4)),
        ("pooled16", FeatureSpec("pooled", 16)),
        ("masked", FeatureSpec("masked")),
        ("pointer", FeatureSpec("pointer")),
        ("pooled4+shape", FeatureSpec("pooled", 4, shape=True)),
        ("pooled+shape", FeatureSpec("pooled", 4, shape=True)),
        ("masked+shape", FeatureSpec("masked", shape=True)),
        ("pointer+shape", FeatureSpec("pointer", shape=True)),
    ],
)
def test_parse_feature_spec(text: str, spec: FeatureSpec) -> None:
    assert parse_feature_spec(text) == spec
    assert parse_feature_spec(spec.name) == spec  # names round-trip


def test_spec_names() -> None:
    assert FeatureSpec().name == "pooled4"
    assert FeatureSpec("pooled", 2).name == "pooled2"
    assert FeatureSpec("masked").name == "masked"
    assert FeatureSpec("pointer").name == "pointer"
    assert FeatureSpec("pooled", 4, shape=True).name == "pooled4+shape"
    assert FeatureSpec("masked", shape=True).name == "masked+shape"
    assert (FeatureSpec().extras_dim, FeatureSpec(shape=True).extras_dim) == (EXTRAS_DIM, EXTRAS_DIM + SHAPE_DIM)


@pytest.mark.parametrize(
    "text",
    ["", "pool4", "pooledx", "pooled-1", "pooled 4", "Masked", "pointer2", "masked4", "+shape", "pooled4+Shape"],
)
def test_parse_feature_spec_errors_list_the_valid_forms(text: str) -> None:
    with pytest.raises(ValueError, match="unknown feature spec") as err:
        parse_feature_spec(text)
    message = str(err.value)
    assert repr(text) in message
    for form in ("pooledN", "1..16", "masked", "pointer", "+shape"):
        assert form in message


@pytest.mark.parametrize("text", ["pooled0", "pooled17", "pooled99"])
def test_parse_feature_spec_rejects_grids_out_of_range(text: str) -> None:
    with pytest.raises(ValueError, match=r"grid must be within 1\.\.16, got \d+"):
        parse_feature_spec(text)


def test_parse_feature_spec_with_a_superscript_digit_lists_the_valid_forms() -> None:
    with pytest.raises(ValueError, match="valid: pooledN"):
        parse_feature_spec("pooled²")


@pytest.mark.parametrize("grid", [0, 17, -1])
def test_feature_spec_rejects_bad_grids(grid: int) -> None:
    with pytest.raises(ValueError, match=rf"grid must be within 1\.\.16, got {grid}"):
        FeatureSpec("pooled", grid)


def test_feature_spec_rejects_an_unknown_kind_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown feature kind 'attention'; valid kinds: pooled, masked, pointer"):
        FeatureSpec("attention")
