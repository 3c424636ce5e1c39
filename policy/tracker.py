"""A frozen SAM2 video tracker over `sam2`'s model code, used offline (a whole episode) and streaming (frame by
frame from a live camera), with the same numbers either way.

The target is prompted once with a box on the first frame; later frames are tracked by SAM2's memory. Memory is
bounded to the prompt frame plus the last `memory_frames` frames, so a long run keeps constant time and memory
per frame. Every step returns the mask, its box, the object score and the raw tensors that features are built
from (`policy.features`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from robot.masks import mask_box

#: ImageNet normalisation SAM2 was trained with.
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
#: `num_frames` given to SAM2 in both modes: only past frames are ever used, and a constant keeps offline and
#: streaming identical (SAM2 caps its object-pointer window by it).
_HORIZON = 1 << 30
#: Smallest prompt box side, pixels.
MIN_BOX_SIDE = 2.0
#: Where the target's mask comes from (`TrackerConfig.mask_source`).
MASK_SOURCES: tuple[str, ...] = ("tracker", "oracle")
#: Logit magnitude an oracle mask is written with (sigmoid 0.99995: a hard mask for SAM2's memory encoder).
_ORACLE_LOGIT = 10.0


def check_crop(crop: Any) -> tuple[float, float, float, float]:
    """A crop region as 4 fractions x0, y0, x1, y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, or an error."""
    c = np.asarray(crop, dtype=np.float64)
    if c.shape != (4,) or not np.all(np.isfinite(c)):
        raise ValueError(f"crop must be 4 fractions x0, y0, x1, y1 of the frame, got {crop!r}")
    x0, y0, x1, y1 = (float(v) for v in c)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0) or x1 - x0 < 0.1 or y1 - y0 < 0.1:
        raise ValueError(
            f"crop {c.tolist()} is invalid: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, each side >= 0.1 of the frame"
        )
    return (x0, y0, x1, y1)


def crop_pixels(crop: tuple[float, float, float, float] | None, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel bounds x0, y0, x1, y1 (end exclusive) of `crop` in a height x width frame; the whole frame for None."""
    if crop is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = crop
    return round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)


def parse_crop(text: str) -> tuple[float, float, float, float] | None:
    """ "x0,y0,x1,y1" fractions (or "none"/"full") as a crop region, or an error naming the valid form."""
    if text.strip().lower() in ("none", "full", ""):
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"crop {text!r} must be 'x0,y0,x1,y1' fractions of the frame (or 'full')") from None
    return check_crop(values)


#: The box of a tracked mask (the same rule as the simulator's labels).
mask_to_box = mask_box


class TrackerInputError(ValueError):
    """A frame or prompt the tracker cannot use."""


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking settings.

    memory_frames: past frames kept besides the prompt frame (SAM2 reads up to 6 mask memories and 15 object
    pointers); score_threshold: object-score logit above which the target counts as visible;
    dtype: "float32" or "bfloat16" (autocast); encode_batch: frames per image-encoder batch offline;
    mask_source: "tracker" (SAM2's own masks) or "oracle" — every frame comes with the target's true mask (the
    simulator's segmentation), which replaces SAM2's mask, box and visibility in the output and in SAM2's memory,
    while SAM2 still computes the pixel features and the object pointer. The oracle bounds what perception costs
    the policy; it needs ground truth and so exists only in simulation.
    crop: the region of the frame SAM2 sees, as fractions x0, y0, x1, y1 of its width and height (None: the whole
    frame). A fixed camera sees the table in part of its frame; cropping to it makes small objects larger at the
    model's input. Masks and boxes are always returned in full-frame pixels (empty outside the crop).
    """

    memory_frames: int = 15
    score_threshold: float = 0.0
    dtype: str = "float32"
    encode_batch: int = 8
    mask_source: str = "tracker"
    crop: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.crop is not None:
            object.__setattr__(self, "crop", check_crop(self.crop))  # a JSON list becomes the tuple
        if not 1 <= self.memory_frames <= 64:
            raise ValueError(f"memory_frames must be within 1..64, got {self.memory_frames}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.encode_batch < 1:
            raise ValueError(f"encode_batch must be positive, got {self.encode_batch}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {', '.join(MASK_SOURCES)}, got {self.mask_source!r}")

    @property
    def oracle(self) -> bool:
        """True when masks come from outside (ground truth) instead of SAM2."""
        return self.mask_source == "oracle"


@dataclass(frozen=True)
class RawFeatures:
    """SAM2 tensors of one step (batch dimension removed, float32 on CPU).

    pix_feat: (C, h, w) memory-conditioned pixel features at stride 16; obj_ptr: (C,) object pointer;
    mask_logits: (h*4, w*4) low-resolution mask logits; object_score: () object-score logit.
    """

    pix_feat: torch.Tensor
    obj_ptr: torch.Tensor
    mask_logits: torch.Tensor
    object_score: torch.Tensor


@dataclass(frozen=True)
class TrackStep:
    """Result of tracking one frame.

    index: frame index since the prompt; mask: (H, W) bool at the frame's resolution; box: (4,) float32 pixels
    x0, y0, x1, y1 of the mask (zeros when empty); object_score: logit; visible: score above threshold.
    """

    index: int
    mask: npt.NDArray[np.bool_]
    box: npt.NDArray[np.float32]
    object_score: float
    visible: bool
    raw: RawFeatures


def validate_frame(frame: Any, shape: tuple[int, int] | None = None) -> npt.NDArray[np.uint8]:
    """The frame as (H, W, 3) uint8, or an error saying what is wrong with it."""
    if not isinstance(frame, np.ndarray):
        raise TrackerInputError(f"frame must be a numpy array (H, W, 3) uint8, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise TrackerInputError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 16 or frame.shape[1] < 16:
        raise TrackerInputError(f"frame must have shape (H, W, 3) with H, W >= 16, got {frame.shape}")
    if shape is not None and frame.shape[:2] != shape:
        raise TrackerInputError(f"frame size {frame.shape[:2]} differs from the prompt frame's {shape}")
    return frame


def validate_box(box: Any, height: int, width: int) -> npt.NDArray[np.float64]:
    """The prompt box x0, y0, x1, y1 in pixels, or an error saying what is wrong and what is valid."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise TrackerInputError(f"box must be 4 finite numbers x0, y0, x1, y1 in pixels, got {np.asarray(box)}")
    x0, y0, x1, y1 = b
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise TrackerInputError(
            f"box {b.tolist()} is empty or degenerate: need x1 - x0 and y1 - y0 >= {MIN_BOX_SIDE} pixels"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise TrackerInputError(
            f"box {b.tolist()} lies outside the {width}x{height} image (valid: 0..{width}, 0..{height})"
        )
    return b


def validate_mask(mask: Any, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """An oracle mask as (H, W) bool matching the frame, or an error saying what is wrong."""
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TrackerInputError(f"oracle mask must be a numpy array of the frame's shape {shape}, got {got}")
    return mask.astype(bool, copy=False)


class SAM2Tracker:
    """Tracks one prompted object with a frozen SAM2 (`model` from `policy.sam2_build.build_sam2`)."""

    def __init__(self, model: torch.nn.Module, config: TrackerConfig | None = None) -> None:
        # SAM2Base's internals (_track_step, forward_image, ...) are untyped; keep the handle as Any.
        self.model: Any = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = config or TrackerConfig()
        self.image_size: int = int(getattr(model, "image_size"))  # noqa: B009
        self.device = next(model.parameters()).device
        self._shape: tuple[int, int] | None = None
        self._index = -1
        self._memory: dict[str, dict[int, dict[str, Any]]] = {}
        self._crop_px: tuple[int, int, int, int] = (0, 0, 0, 0)

    # ------------------------------------------------------------ public API
    def start(
        self, frame: npt.NDArray[np.uint8], box: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None
    ) -> TrackStep:
        """Forget any previous track, prompt with `box` (pixels x0, y0, x1, y1) on `frame`, return step 0.

        mask: the target's true (H, W) mask, required with mask_source "oracle" and refused otherwise."""
        frame = validate_frame(frame)
        h, w = frame.shape[:2]
        b = validate_box(box, h, w)
        given = self._given(mask, (h, w))
        cx0, cy0, cx1, cy1 = crop_pixels(self.config.crop, h, w)
        if b[2] <= cx0 or b[0] >= cx1 or b[3] <= cy0 or b[1] >= cy1:
            raise TrackerInputError(
                f"box {b.tolist()} lies outside the tracker's crop region x {cx0}..{cx1}, y {cy0}..{cy1} pixels "
                "(TrackerConfig.crop): the target must be in the part of the frame the tracker sees"
            )
        self._crop_px = (cx0, cy0, cx1, cy1)
        self._shape = (h, w)
        self._index = -1
        self._memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self._box = b
        return self._step_encoded(self._encode([frame])[0], given)

    def step(self, frame: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_] | None = None) -> TrackStep:
        """Track the object into the next frame (mask: as for `start`)."""
        if self._shape is None:
            raise RuntimeError("call start(frame, box) before step(frame)")
        frame = validate_frame(frame, self._shape)
        return self._step_encoded(self._encode([frame])[0], self._given(mask, self._shape))

    def track(
        self,
        frames: Iterable[npt.NDArray[np.uint8]],
        box: npt.ArrayLike,
        masks: Iterable[npt.NDArray[np.bool_]] | None = None,
    ) -> Iterator[TrackStep]:
        """Offline: prompt on the first frame with `box` and track through the rest, encoding frames in batches.

        masks: one true mask per frame, required with mask_source "oracle" (see `start`)."""
        it = iter(frames)
        mask_it = None if masks is None else iter(masks)

        def next_mask() -> npt.NDArray[np.bool_] | None:
            if mask_it is None:
                return None
            try:
                return next(mask_it)
            except StopIteration:
                raise TrackerInputError("track() was given fewer masks than frames") from None

        try:
            first = next(it)
        except StopIteration:
            raise TrackerInputError("track() needs at least one frame") from None
        yield self.start(first, box, next_mask())
        batch: list[npt.NDArray[np.uint8]] = []
        given: list[npt.NDArray[np.bool_] | None] = []
        for frame in it:
            if self._shape is None:
                raise RuntimeError("tracker lost its prompt")
            batch.append(validate_frame(frame, self._shape))
            given.append(self._given(next_mask(), self._shape))
            if len(batch) == self.config.encode_batch:
                yield from (self._step_encoded(e, m) for e, m in zip(self._encode(batch), given, strict=True))
                batch, given = [], []
        if batch:
            yield from (self._step_encoded(e, m) for e, m in zip(self._encode(batch), given, strict=True))

    @property
    def memory_size(self) -> int:
        """Frames held in memory (prompt frame included)."""
        return sum(len(v) for v in self._memory.values())

    # ------------------------------------------------------------ internals
    def _autocast(self) -> Any:
        enabled = self.config.dtype == "bfloat16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _encode(self, frames: list[npt.NDArray[np.uint8]]) -> list[tuple[list[torch.Tensor], list[torch.Tensor], Any]]:
        """Image-encoder features of each frame: (vision_feats, vision_pos_embeds, feat_sizes)."""
        x0, y0, x1, y1 = self._crop_px
        stacked = np.stack([f[y0:y1, x0:x1] for f in frames])
        x = torch.from_numpy(stacked).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )
        x = (x - _MEAN.to(self.device)) / _STD.to(self.device)
        with torch.inference_mode(), self._autocast():
            out = self.model.forward_image(x)
            _, feats, pos, sizes = self.model._prepare_backbone_features(out)
        return [([f[:, i : i + 1] for f in feats], [p[:, i : i + 1] for p in pos], sizes) for i in range(len(frames))]

    def _given(self, mask: npt.NDArray[np.bool_] | None, shape: tuple[int, int]) -> npt.NDArray[np.bool_] | None:
        """The oracle mask of a frame, checked against the configured mask source."""
        if self.config.oracle:
            if mask is None:
                raise TrackerInputError("mask_source 'oracle' needs the target's true mask with every frame")
            return validate_mask(mask, shape)
        if mask is not None:
            raise TrackerInputError("a mask was given but mask_source is 'tracker'; valid: omit it, or use 'oracle'")
        return None

    def _oracle_logits(
        self, mask: npt.NDArray[np.bool_], high_res: torch.Tensor, low_res: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """High- and low-resolution logits and the object-score logit of a true mask, in SAM2's layouts."""
        m = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device, torch.float32)[None, None]
        hi = F.interpolate(m, size=high_res.shape[-2:], mode="area")
        lo = F.interpolate(m, size=low_res.shape[-2:], mode="area")
        visible = bool(mask.any())
        score = torch.full((1, 1), _ORACLE_LOGIT if visible else -_ORACLE_LOGIT, device=self.device)

        def logits(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return torch.where(x >= 0.5, _ORACLE_LOGIT, -_ORACLE_LOGIT).to(like.dtype)

        return logits(hi, high_res), logits(lo, low_res), score.to(high_res.dtype)

    def _step_encoded(
        self,
        encoded: tuple[list[torch.Tensor], list[torch.Tensor], Any],
        oracle: npt.NDArray[np.bool_] | None = None,
    ) -> TrackStep:
        feats, pos, sizes = encoded
        self._index += 1
        t = self._index
        is_prompt = t == 0
        points = None
        if is_prompt:
            if self._shape is None:
                raise RuntimeError("no prompt frame")
            x0, y0, x1, y1 = self._crop_px
            w, h = x1 - x0, y1 - y0
            scale = np.array([self.image_size / w, self.image_size / h, self.image_size / w, self.image_size / h])
            inside = np.clip(self._box - np.array([x0, y0, x0, y0]), 0, [w, h, w, h])
            corners = torch.tensor((inside * scale).reshape(1, 2, 2), dtype=torch.float32, device=self.device)
            labels = torch.tensor([[2, 3]], dtype=torch.int32, device=self.device)  # box corners, SAM's encoding
            points = {"point_coords": corners, "point_labels": labels}
        model = self.model
        with torch.inference_mode(), self._autocast():
            current, sam_out, _, pix_feat = model._track_step(
                t, is_prompt, feats, pos, sizes, points, None, self._memory, _HORIZON, False, None
            )
            _, _, _, low_res, high_res, obj_ptr, score = sam_out
            if oracle is not None:
                x0, y0, x1, y1 = self._crop_px
                high_res, low_res, score = self._oracle_logits(oracle[y0:y1, x0:x1], high_res, low_res)
            model._encode_memory_in_output(feats, sizes, points, True, high_res, score, current)
        stored = {
            "maskmem_features": current["maskmem_features"],
            "maskmem_pos_enc": current["maskmem_pos_enc"],
            "obj_ptr": obj_ptr,
        }
        if is_prompt:
            self._memory["cond_frame_outputs"][0] = stored
        else:
            bank = self._memory["non_cond_frame_outputs"]
            bank[t] = stored
            for old in [k for k in bank if k <= t - self.config.memory_frames]:
                del bank[old]
        return self._result(t, high_res, low_res, obj_ptr, score, pix_feat, oracle)

    def _result(
        self,
        t: int,
        high_res: torch.Tensor,
        low_res: torch.Tensor,
        obj_ptr: torch.Tensor,
        score: torch.Tensor,
        pix_feat: torch.Tensor,
        oracle: npt.NDArray[np.bool_] | None = None,
    ) -> TrackStep:
        if self._shape is None:
            raise RuntimeError("no prompt frame")
        if oracle is not None:
            mask = oracle.copy()
        else:
            x0, y0, x1, y1 = self._crop_px
            logits = F.interpolate(high_res.float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
            mask = np.zeros(self._shape, dtype=bool)
            mask[y0:y1, x0:x1] = (logits[0, 0] > 0).cpu().numpy()
        score_value = float(score.float().reshape(-1)[0])
        raw = RawFeatures(
            pix_feat=pix_feat.float()[0].cpu(),
            obj_ptr=obj_ptr.float()[0].cpu(),
            mask_logits=low_res.float()[0, 0].cpu(),
            object_score=score.float().reshape(()).cpu(),
        )
        return TrackStep(t, mask, mask_to_box(mask), score_value, score_value > self.config.score_threshold, raw)
