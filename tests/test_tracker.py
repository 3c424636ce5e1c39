"""The SAM2 tracker wrapper over the real `sam2` model code, with the compact model at 64 px and random weights:
offline and streaming give the same F_t (also with encoder batch boundaries mid-sequence), memory stays bounded
(memory size, step time and process memory over 2,000 frames), bfloat16 runs, bad frames and boxes are clear
errors, and each TrackStep's fields agree with one another.

Random weights are enough for equivalence and memory; the object-score head's output bias is raised so the
object counts as present and masks are not empty (an absent object's mask is a constant, which would make
"same masks" trivially true)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from policy.sam2_build import COMPACT, build_model, tracker_spec
from policy.tracker import (
    MIN_BOX_SIDE,
    SAM2Tracker,
    TrackerConfig,
    TrackerInputError,
    TrackStep,
    mask_to_box,
    validate_box,
    validate_frame,
)

torch.set_num_threads(1)

W, H = 96, 72
SIDE = 16
BOX0 = np.array([10.0, 20.0, 10.0 + SIDE, 20.0 + SIDE])
TOL = 1e-4


def _background() -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(7)
    noise = rng.random((H // 8 + 1, W // 8 + 1, 3))
    coarse = np.kron(noise, np.ones((8, 8, 1)))[:H, :W]  # blocky texture
    return 60 + 80 * coarse + 20 * rng.random((H, W, 3))


_BG = _background()


def frame_at(t: int) -> npt.NDArray[np.uint8]:
    """A red square moving right and down (bouncing inside the frame) over a textured background."""
    img = _BG.copy()
    x = 10 + (2 * t) % (2 * (W - SIDE - 10))
    x = x if x <= W - SIDE else 2 * (W - SIDE) - x
    y = 20 + t % (H - SIDE - 20)
    img[y : y + SIDE, x : x + SIDE] = (220, 30, 30)
    return img.astype(np.uint8)


def frames(n: int) -> Iterator[npt.NDArray[np.uint8]]:
    return (frame_at(t) for t in range(n))


def present_model() -> torch.nn.Module:
    """The compact model at 64 px, random weights (seed 0), object-score bias raised: the object counts as present."""
    torch.manual_seed(0)
    m = build_model(tracker_spec(COMPACT, 64))
    head: Any = m.get_submodule("sam_mask_decoder.pred_obj_score_head")
    with torch.no_grad():
        head.layers[-1].bias.add_(5.0)
    return m


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return present_model()


def _stream(tracker: SAM2Tracker, n: int) -> list[TrackStep]:
    it = frames(n)
    out = [tracker.start(next(it), BOX0)]
    out.extend(tracker.step(f) for f in it)
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def _assert_same_steps(offline: list[TrackStep], streaming: list[TrackStep]) -> None:
    assert len(offline) == len(streaming)
    for t, (a, b) in enumerate(zip(offline, streaming, strict=True)):
        assert a.index == b.index == t
        assert _max_diff(a.raw.pix_feat, b.raw.pix_feat) <= TOL, t
        assert _max_diff(a.raw.obj_ptr, b.raw.obj_ptr) <= TOL, t
        assert _max_diff(a.raw.mask_logits, b.raw.mask_logits) <= TOL, t
        assert _max_diff(a.raw.object_score, b.raw.object_score) <= TOL, t
        assert abs(a.object_score - b.object_score) <= TOL, t
        assert np.array_equal(a.mask, b.mask), t
        assert np.array_equal(a.box, b.box), t
        assert a.visible == b.visible, t


# ------------------------------------------------------------------ offline == streaming


@pytest.mark.parametrize(
    "config",
    [TrackerConfig(), TrackerConfig(encode_batch=3), TrackerConfig(memory_frames=4, encode_batch=3)],
    ids=["default", "batch3", "batch3-memory4"],
)
def test_offline_and_streaming_give_the_same_features(model: torch.nn.Module, config: TrackerConfig) -> None:
    n = 20
    offline = list(SAM2Tracker(model, config).track(frames(n), BOX0))
    streaming = _stream(SAM2Tracker(model, config), n)
    _assert_same_steps(offline, streaming)
    # the check is not vacuous: masks are non-empty, and memory makes later frames differ from a fresh prompt
    assert all(s.visible and s.mask.any() for s in offline)
    assert _max_diff(offline[-1].raw.pix_feat, offline[0].raw.pix_feat) > 1e-2


def test_memory_changes_the_features(model: torch.nn.Module) -> None:
    """A longer memory changes F_t once frames fall out of the shorter one (so the bound is real)."""
    short = _stream(SAM2Tracker(model, TrackerConfig(memory_frames=1)), 6)
    long = _stream(SAM2Tracker(model, TrackerConfig(memory_frames=15)), 6)
    assert _max_diff(short[1].raw.pix_feat, long[1].raw.pix_feat) <= TOL  # same memory at frame 1
    assert _max_diff(short[-1].raw.pix_feat, long[-1].raw.pix_feat) > 1e-3


def test_start_again_forgets_the_previous_track(model: torch.nn.Module) -> None:
    tracker = SAM2Tracker(model, TrackerConfig(memory_frames=3))
    first = _stream(tracker, 8)
    for f in frames(5):  # carry on a while, then re-prompt
        tracker.step(f)
    again = _stream(tracker, 8)
    _assert_same_steps(first, again)
    assert tracker.memory_size == 4


# ------------------------------------------------------------------ bounded memory


@pytest.mark.parametrize("memory_frames", [1, 4, 15])
def test_memory_size_never_exceeds_memory_frames_plus_one(model: torch.nn.Module, memory_frames: int) -> None:
    tracker = SAM2Tracker(model, TrackerConfig(memory_frames=memory_frames))
    assert tracker.memory_size == 0
    tracker.start(frame_at(0), BOX0)
    sizes = [tracker.memory_size]
    for t in range(1, 100):
        tracker.step(frame_at(t))
        sizes.append(tracker.memory_size)
    assert max(sizes) == memory_frames + 1
    assert sizes[:3] == [1, min(2, memory_frames + 1), min(3, memory_frames + 1)]
    assert sizes[-1] == memory_frames + 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _held_tensor_bytes(tracker: SAM2Tracker) -> int:
    total = 0
    stack: list[Any] = [tracker._memory]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


@pytest.mark.slow
def test_two_thousand_streaming_frames_keep_time_and_memory_flat(model: torch.nn.Module) -> None:
    config = TrackerConfig(memory_frames=15)
    tracker = SAM2Tracker(model, config)
    n = 2000
    times = np.zeros(n)
    rss: dict[int, int] = {}
    held: dict[int, int] = {}
    tracker.start(frame_at(0), BOX0)
    for t in range(1, n):
        frame = frame_at(t)
        t0 = time.perf_counter()
        tracker.step(frame)
        times[t] = time.perf_counter() - t0
        assert tracker.memory_size <= config.memory_frames + 1
        if t in (300, n - 1):
            rss[t] = _rss_bytes()
            held[t] = _held_tensor_bytes(tracker)
    early, late = float(np.median(times[100:300])), float(np.median(times[-200:]))
    assert late <= 1.5 * early, (
        f"step time grew: median {early * 1e3:.1f} ms (100-300) -> {late * 1e3:.1f} ms (last 200)"
    )
    assert held[n - 1] == held[300]  # the tensors the tracker holds do not grow
    # measured here: +0.2 MB bounded; an unpruned memory bank (every frame kept) grows ~13 MB over these frames
    growth = rss[n - 1] - rss[300]
    assert growth < 5e6, f"process memory grew {growth / 1e6:.1f} MB over {n - 300} frames"


# ------------------------------------------------------------------ bfloat16


def test_bfloat16_runs_and_stays_close_to_float32(model: torch.nn.Module) -> None:
    n = 4
    ref = _stream(SAM2Tracker(model), n)
    bf = _stream(SAM2Tracker(model, TrackerConfig(dtype="bfloat16")), n)
    for a, b in zip(ref, bf, strict=True):
        for x, y in [
            (a.raw.pix_feat, b.raw.pix_feat),
            (a.raw.obj_ptr, b.raw.obj_ptr),
            (a.raw.mask_logits, b.raw.mask_logits),
        ]:
            assert y.dtype == torch.float32
            assert torch.isfinite(y).all()
            cos = torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)
            assert float(cos) > 0.95
        assert np.isfinite(b.object_score)
        assert abs(a.object_score - b.object_score) < 0.25 * (1 + abs(a.object_score))
        assert (a.mask != b.mask).mean() < 0.05


def test_tracker_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"memory_frames must be within 1\.\.64, got 0"):
        TrackerConfig(memory_frames=0)
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'bfloat16', got 'float16'"):
        TrackerConfig(dtype="float16")
    with pytest.raises(ValueError, match="encode_batch must be positive, got 0"):
        TrackerConfig(encode_batch=0)


# ------------------------------------------------------------------ TrackStep fields


def test_track_step_fields_agree(model: torch.nn.Module) -> None:
    steps = list(SAM2Tracker(model, TrackerConfig(encode_batch=4)).track(frames(6), BOX0))
    for t, s in enumerate(steps):
        assert s.index == t
        assert s.mask.shape == (H, W)
        assert s.mask.dtype == np.bool_
        assert s.box.dtype == np.float32
        assert np.array_equal(s.box, mask_to_box(s.mask))
        assert s.visible == (s.object_score > 0.0)
        assert s.object_score == pytest.approx(float(s.raw.object_score))
        assert s.raw.pix_feat.shape == (64, 4, 4)  # d_model 64 at stride 16 of 64 px
        assert s.raw.obj_ptr.shape == (64,)
        assert s.raw.mask_logits.shape == (16, 16)
        assert s.raw.object_score.shape == ()
        for tensor in (s.raw.pix_feat, s.raw.obj_ptr, s.raw.mask_logits):
            assert tensor.dtype == torch.float32
            assert tensor.device.type == "cpu"


def test_visible_follows_the_score_threshold(model: torch.nn.Module) -> None:
    score = SAM2Tracker(model).start(frame_at(0), BOX0).object_score
    above = SAM2Tracker(model, TrackerConfig(score_threshold=score - 0.01)).start(frame_at(0), BOX0)
    below = SAM2Tracker(model, TrackerConfig(score_threshold=score + 0.01)).start(frame_at(0), BOX0)
    assert above.visible
    assert not below.visible
    assert above.object_score == below.object_score == score


def test_mask_to_box_is_tight_with_exclusive_max() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    assert np.array_equal(mask_to_box(mask), np.zeros(4, dtype=np.float32))
    mask[2:5, 3:9] = True
    mask[7, 1] = True
    box = mask_to_box(mask)
    assert box.dtype == np.float32
    assert box.tolist() == [1.0, 2.0, 9.0, 8.0]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ([], r"box must be 4 finite numbers x0, y0, x1, y1"),
        ([10, 10, 30], r"box must be 4 finite numbers x0, y0, x1, y1"),
        ([10, 10, 30, 30, 1], r"box must be 4 finite numbers x0, y0, x1, y1"),
        ([[10, 10], [30, 30]], r"box must be 4 finite numbers x0, y0, x1, y1"),
        ([10, float("nan"), 30, 30], r"box must be 4 finite numbers .*got \[10. +nan 30. 30.\]"),
        ([10, 10, float("inf"), 30], r"box must be 4 finite numbers"),
        ([30, 10, 10, 30], r"empty or degenerate: need x1 - x0 and y1 - y0 >= 2.0 pixels"),  # x1 < x0
        ([10, 10, 10, 30], r"empty or degenerate"),  # zero width
        ([10, 10, 30, 10], r"empty or degenerate"),  # zero height
        ([10, 10, 11.5, 30], r"empty or degenerate"),  # under 2 px
        ([-5, 10, 30, 30], r"outside the 96x72 image \(valid: 0\.\.96, 0\.\.72\)"),
        ([10, 10, 97, 30], r"outside the 96x72 image"),
        ([10, 60, 30, 73], r"outside the 96x72 image"),
        ([200, 200, 240, 240], r"outside the 96x72 image"),
    ],
)
def test_bad_boxes_are_clear_errors(model: torch.nn.Module, box: list[float], match: str) -> None:
    tracker = SAM2Tracker(model)
    with pytest.raises(TrackerInputError, match=match):
        tracker.start(frame_at(0), box)
    assert tracker.memory_size == 0
    with pytest.raises(RuntimeError, match=r"call start\(frame, box\) before step\(frame\)"):
        tracker.step(frame_at(1))  # a refused prompt starts nothing


def test_smallest_valid_box_and_whole_image_box_are_accepted() -> None:
    validate_box([0, 0, MIN_BOX_SIDE, MIN_BOX_SIDE], H, W)
    assert validate_box((0, 0, W, H), H, W).tolist() == [0.0, 0.0, float(W), float(H)]
    assert validate_box(np.array([1, 2, 3, 4], dtype=np.int64), H, W).dtype == np.float64


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((H, W, 3), dtype=np.float32), r"frame must be uint8 RGB, got dtype float32"),
        (np.zeros((H, W, 3), dtype=np.uint16), r"frame must be uint8 RGB, got dtype uint16"),
        (np.zeros((H, W), dtype=np.uint8), r"shape \(H, W, 3\) with H, W >= 16, got \(72, 96\)"),
        (np.zeros((H, W, 4), dtype=np.uint8), r"shape \(H, W, 3\) with H, W >= 16, got \(72, 96, 4\)"),
        (np.zeros((3, H, W), dtype=np.uint8), r"shape \(H, W, 3\) with H, W >= 16, got \(3, 72, 96\)"),
        (np.zeros((8, 8, 3), dtype=np.uint8), r"H, W >= 16, got \(8, 8, 3\)"),
        (np.zeros((1, H, W, 3), dtype=np.uint8), r"shape \(H, W, 3\)"),
        ([[0, 0, 0]], r"frame must be a numpy array \(H, W, 3\) uint8, got list"),
    ],
)
def test_bad_frames_are_clear_errors(model: torch.nn.Module, frame: Any, match: str) -> None:
    with pytest.raises(TrackerInputError, match=match):
        validate_frame(frame)
    with pytest.raises(TrackerInputError, match=match):
        SAM2Tracker(model).start(frame, BOX0)
    tracker = SAM2Tracker(model)
    tracker.start(frame_at(0), BOX0)
    with pytest.raises(TrackerInputError, match=match):
        tracker.step(frame)
    with pytest.raises(TrackerInputError, match=match):
        list(SAM2Tracker(model).track([frame_at(0), frame_at(1), frame], BOX0))


def test_a_frame_of_another_size_mid_track_is_an_error(model: torch.nn.Module) -> None:
    tracker = SAM2Tracker(model)
    tracker.start(frame_at(0), BOX0)
    tracker.step(frame_at(1))
    other = np.zeros((H, W + 32, 3), dtype=np.uint8)
    with pytest.raises(TrackerInputError, match=r"frame size \(72, 128\) differs from the prompt frame's \(72, 96\)"):
        tracker.step(other)
    tracker.step(frame_at(2))  # the track goes on with frames of the right size
    offline = SAM2Tracker(model, TrackerConfig(encode_batch=2)).track([frame_at(0), frame_at(1), other], BOX0)
    with pytest.raises(TrackerInputError, match="differs from the prompt frame's"):
        list(offline)


def test_step_before_start_and_empty_track_are_errors(model: torch.nn.Module) -> None:
    with pytest.raises(RuntimeError, match=r"call start\(frame, box\) before step\(frame\)"):
        SAM2Tracker(model).step(frame_at(0))
    with pytest.raises(TrackerInputError, match="at least one frame"):
        list(SAM2Tracker(model).track([], BOX0))


# ------------------------------------------------------------------ oracle masks (perception upper bound)


def true_mask(t: int) -> npt.NDArray[np.bool_]:
    """The red square's pixels in frame_at(t), empty every 5th frame (as if the target were hidden)."""
    img = frame_at(t)
    mask = (img[..., 0] == 220) & (img[..., 1] == 30) & (img[..., 2] == 30)
    return np.zeros_like(mask) if t % 5 == 4 else mask


def test_oracle_masks_replace_the_trackers_and_agree_offline_and_streaming(model: torch.nn.Module) -> None:
    n = 12
    config = TrackerConfig(mask_source="oracle", encode_batch=5)
    masks = [true_mask(t) for t in range(n)]
    offline = list(SAM2Tracker(model, config).track(frames(n), BOX0, masks))
    tracker = SAM2Tracker(model, config)
    it = frames(n)
    streaming = [tracker.start(next(it), BOX0, masks[0])]
    streaming.extend(tracker.step(f, masks[t]) for t, f in enumerate(it, start=1))
    _assert_same_steps(offline, streaming)
    for t, step in enumerate(offline):
        assert np.array_equal(step.mask, masks[t])
        assert np.array_equal(step.box, mask_to_box(masks[t]))
        assert step.visible == bool(masks[t].any())
    # the true masks reach SAM2's memory: the features differ from those of the tracker's own masks
    own = list(SAM2Tracker(model, TrackerConfig(encode_batch=5)).track(frames(n), BOX0))
    assert _max_diff(own[-1].raw.pix_feat, offline[-1].raw.pix_feat) > 1e-3


def test_mask_source_mismatches_are_clear_errors(model: torch.nn.Module) -> None:
    oracle = SAM2Tracker(model, TrackerConfig(mask_source="oracle"))
    with pytest.raises(TrackerInputError, match="needs the target's true mask"):
        oracle.start(frame_at(0), BOX0)
    with pytest.raises(TrackerInputError, match=r"frame's shape \(72, 96\)"):
        oracle.start(frame_at(0), BOX0, np.zeros((10, 10), dtype=bool))
    with pytest.raises(TrackerInputError, match="fewer masks than frames"):
        list(oracle.track(frames(3), BOX0, [true_mask(0)]))
    plain = SAM2Tracker(model)
    with pytest.raises(TrackerInputError, match="mask_source is 'tracker'"):
        plain.start(frame_at(0), BOX0, true_mask(0))
    with pytest.raises(ValueError, match="mask_source must be one of tracker, oracle"):
        TrackerConfig(mask_source="perfect")
