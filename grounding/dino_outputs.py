"""Grounding DINO's raw outputs as `Detection`s: pure functions over arrays, shared by both DINO backends.

The transformers model returns, per query, one logit for every token of the prompt and a box (cx, cy, w, h)
normalised to the image (0..1). `detections_from_token_logits` turns them into detections: a query's score for a
phrase is the highest token probability within that phrase, the query keeps its best phrase, and the phrase it
reports is made of that phrase's tokens that pass the text threshold. IDEA-Research's `groundingdino` package
scores and names its queries itself; `detections_from_gdino_predict` only scales, clips and sorts its results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection, box_iou
from grounding.errors import UnsupportedCommand

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PhraseSpan:
    """One phrase of a prompt: `text` as prompted ("red cup") and the positions of its tokens in the input ids."""

    text: str
    positions: tuple[int, ...]


def check_probability(name: str, value: float) -> None:
    """Raise ValueError unless `value` is a number strictly inside (0, 1) (a threshold on a probability)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(value, bool) or not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be a probability within (0, 1), e.g. 0.35; got {value!r}")


def check_thresholds(box_threshold: float, text_threshold: float) -> None:
    """Raise ValueError unless both thresholds are probabilities strictly inside (0, 1)."""
    check_probability("box_threshold", box_threshold)
    check_probability("text_threshold", text_threshold)


def format_prompt(text: str) -> tuple[str, tuple[str, ...]]:
    """The prompt Grounding DINO expects and its phrases: lower case, each phrase ending with a period.

    "Red Cup" → ("red cup.", ("red cup",)); "red cup. Blue box" → ("red cup. blue box.", ("red cup", "blue box")).
    Raises `UnsupportedCommand` when `text` names nothing.
    """
    if not isinstance(text, str):
        raise UnsupportedCommand(f"the phrase to ground must be text, got {type(text).__name__}")
    phrases = tuple(p for p in (re.sub(r"\s+", " ", part).strip() for part in text.lower().split(".")) if p)
    if not phrases:
        raise UnsupportedCommand(f"the phrase to ground names no object: {text!r}; say what to find, e.g. 'red cup'")
    return " ".join(f"{p}." for p in phrases), phrases


def phrase_spans(input_ids: Sequence[int], phrases: Sequence[str], boundary_ids: frozenset[int]) -> list[PhraseSpan]:
    """Token positions of each phrase: the runs of ids between boundary tokens (special tokens and the period).

    Raises ValueError when the runs do not pair one-to-one with `phrases` (a phrase that tokenises to nothing).
    """
    runs: list[list[int]] = []
    current: list[int] = []
    for pos, token in enumerate(input_ids):
        if int(token) in boundary_ids:
            if current:
                runs.append(current)
                current = []
        else:
            current.append(pos)
    if current:
        runs.append(current)
    if len(runs) != len(phrases):
        raise ValueError(
            f"the prompt's tokens form {len(runs)} phrase(s) but {len(phrases)} were asked for ({list(phrases)}); "
            "each phrase must hold at least one token other than punctuation"
        )
    return [PhraseSpan(text, tuple(run)) for text, run in zip(phrases, runs, strict=True)]


def sigmoid(x: npt.ArrayLike) -> F64:
    """Logistic function without overflow (−inf → 0, +inf → 1)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def cxcywh_to_xyxy_px(boxes: npt.ArrayLike, image_hw: tuple[int, int]) -> F64:
    """Normalised (cx, cy, w, h) boxes (N, 4) → (x0, y0, x1, y1) pixels clipped to an image of `image_hw`."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = image_hw
    half_w, half_h = 0.5 * b[:, 2], 0.5 * b[:, 3]
    xyxy = np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1)
    xyxy *= np.array([w, h, w, h], np.float64)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0.0, float(w))
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0.0, float(h))
    return xyxy


def _check_image_hw(image_hw: tuple[int, int]) -> None:
    if len(image_hw) != 2 or min(image_hw) < 1:
        raise ValueError(f"image_hw must be (height, width) in pixels, both at least 1; got {image_hw}")


def _detection(box: F64, score: float, phrase: str) -> Detection | None:
    """A Detection, or None for a box with no area left inside the image or a non-finite value."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (np.isfinite(box).all() and np.isfinite(score) and x0 < x1 and y0 < y1):
        return None
    return Detection((x0, y0, x1, y1), min(1.0, max(0.0, score)), phrase)


def detections_from_token_logits(
    logits: npt.ArrayLike,
    boxes_cxcywh: npt.ArrayLike,
    input_ids: Sequence[int],
    spans: Sequence[PhraseSpan],
    image_hw: tuple[int, int],
    decode: Callable[[list[int]], str],
    *,
    box_threshold: float,
    text_threshold: float,
) -> list[Detection]:
    """Detections from one image's outputs of the transformers Grounding DINO, best first.

    logits: (Q, T) per query and token (positions past the prompt may be −inf); boxes_cxcywh: (Q, 4) normalised
    to the image; input_ids: the prompt's T' ≤ T token ids; spans: the prompt's phrases (`phrase_spans`);
    image_hw: (height, width) pixels of the image that was grounded; decode: token ids → words.
    A query is kept when its best phrase's score (max token probability) exceeds `box_threshold`; its phrase is
    the decoded tokens of that phrase whose probability exceeds `text_threshold` (the top token when none does).
    Boxes are clipped to the image; a box left with no area is dropped. Ties keep query order.
    """
    check_thresholds(box_threshold, text_threshold)
    _check_image_hw(image_hw)
    lg = np.asarray(logits, np.float64)
    if lg.ndim != 2 or lg.shape[1] < len(input_ids):
        raise ValueError(f"logits must be (queries, tokens ≥ {len(input_ids)}), got shape {lg.shape}")
    boxes = np.asarray(boxes_cxcywh, np.float64)
    if boxes.shape != (lg.shape[0], 4):
        raise ValueError(f"boxes must be (queries, 4) = ({lg.shape[0]}, 4) normalised cx, cy, w, h; got {boxes.shape}")
    if not spans:
        raise ValueError("at least one phrase span is needed")
    for span in spans:
        if not span.positions or max(span.positions) >= len(input_ids) or min(span.positions) < 0:
            raise ValueError(f"phrase {span.text!r} has token positions {span.positions} outside the prompt")
    probs = sigmoid(lg)
    # (Q, phrases): each query's score for each phrase
    per_phrase = np.stack([probs[:, list(s.positions)].max(axis=1) for s in spans], axis=1)
    best = per_phrase.argmax(axis=1)
    scores = per_phrase[np.arange(lg.shape[0]), best]
    xyxy = cxcywh_to_xyxy_px(boxes, image_hw)
    out: list[Detection] = []
    for q in np.flatnonzero(scores > box_threshold):
        span = spans[int(best[q])]
        pos = np.asarray(span.positions)
        p = probs[q, pos]
        chosen = pos[p > text_threshold] if (p > text_threshold).any() else pos[[int(p.argmax())]]
        words = decode([int(input_ids[i]) for i in chosen]).strip()
        det = _detection(xyxy[q], float(scores[q]), words or span.text)
        if det is not None:
            out.append(det)
    return sorted(out, key=lambda d: -d.score)


def detections_from_gdino_predict(
    boxes_cxcywh: npt.ArrayLike,
    scores: npt.ArrayLike,
    phrases: Sequence[str],
    image_hw: tuple[int, int],
    *,
    box_threshold: float,
    fallback_phrase: str,
) -> list[Detection]:
    """Detections from `groundingdino.util.inference.predict`'s (boxes, logits, phrases), best first.

    boxes_cxcywh: (N, 4) normalised to the image; scores: (N,) probabilities (the package's "logits" are already
    sigmoids); phrases: N strings (the package returns "" when no token passed its text threshold: then
    `fallback_phrase`, the prompt's text, is used). Scores not above `box_threshold` are dropped, boxes are clipped
    to an image of `image_hw` (height, width) pixels, and a box left with no area is dropped.
    """
    check_probability("box_threshold", box_threshold)
    _check_image_hw(image_hw)
    s = np.asarray(scores, np.float64).reshape(-1)
    boxes = np.asarray(boxes_cxcywh, np.float64)
    if boxes.shape != (s.size, 4) or len(phrases) != s.size:
        raise ValueError(
            f"expected N boxes (N, 4), N scores and N phrases; got boxes {boxes.shape}, {s.size} scores, "
            f"{len(phrases)} phrases"
        )
    xyxy = cxcywh_to_xyxy_px(boxes, image_hw)
    out: list[Detection] = []
    for i in np.flatnonzero(s > box_threshold):
        det = _detection(xyxy[i], float(s[i]), phrases[int(i)].strip() or fallback_phrase)
        if det is not None:
            out.append(det)
    return sorted(out, key=lambda d: -d.score)


def suppress_duplicates(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """Greedy non-maximum suppression: drop a detection whose box overlaps a better one's by more than `iou`.

    DETR-style queries sometimes land twice on one object; the service would read two equal boxes as an ambiguous
    command. Input must be best first; output keeps that order.
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"duplicate IoU must be within (0, 1], got {iou!r}")
    kept: list[Detection] = []
    for d in detections:
        if all(box_iou(d.box_xyxy_px, k.box_xyxy_px) <= iou for k in kept):
            kept.append(d)
    return kept


def check_image(image: object) -> tuple[int, int]:
    """(height, width) pixels of an (H, W, 3) uint8 RGB array; ValueError saying what was wrong otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy (H, W, 3) uint8 RGB array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if h < 2 or w < 2:
        raise ValueError(f"image must be at least 2 x 2 pixels, got {w} x {h}")
    return h, w
