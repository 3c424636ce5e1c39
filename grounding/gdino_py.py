"""IDEA-Research's own Grounding DINO package (`groundingdino`, the optional extra `groundingdino-py`) as a
`Grounder`.

The package needs torchvision, so it is installed only beside a matching CUDA build of torch:
`pip install 'sam2grasp[groundingdino]'`. It is imported when a model is loaded, never at import time. A model is
its Python config file (e.g. `GroundingDINO_SwinT_OGC.py`) and its checkpoint (`groundingdino_swint_ogc.pth`),
read with `torch.load(weights_only=True)`. The package builds its BERT text encoder from the config's
`text_encoder_type` ("bert-base-uncased"), which it fetches from the Hub: offline, point that key at a local copy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from grounding.detection import Detection
from grounding.dino_outputs import (
    check_image,
    check_probability,
    check_thresholds,
    detections_from_gdino_predict,
    format_prompt,
    suppress_duplicates,
)

#: The package's input scaling: shorter side to this many pixels, longer side at most MAX_SIDE_PX.
SHORT_SIDE_PX = 800
MAX_SIDE_PX = 1333
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
INSTALL_HINT = (
    "the groundingdino backend needs IDEA-Research's package, which is not installed: run "
    "`pip install 'sam2grasp[groundingdino]'` beside a CUDA build of torch and its matching torchvision "
    "(the CPU torch here cannot hold torchvision); or use the transformers backend (`--backend transformers`)"
)


def input_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) pixels the model reads an image of `height` x `width` at (aspect ratio kept)."""
    short, long = min(height, width), max(height, width)
    size = SHORT_SIDE_PX
    if long * size > MAX_SIDE_PX * short:
        size = round(MAX_SIDE_PX * short / long)
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess(image: npt.NDArray[np.uint8]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (3, h, w) float32, resized (`input_size`, bilinear) and ImageNet-normalised."""
    h, w = check_image(image)
    oh, ow = input_size(h, w)
    resized = np.asarray(Image.fromarray(image).resize((ow, oh), Image.Resampling.BILINEAR), np.float32) / 255.0
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    return (x - torch.tensor(_MEAN).view(3, 1, 1)) / torch.tensor(_STD).view(3, 1, 1)


def find_config(checkpoint: Path) -> Path:
    """The config file beside `checkpoint`: its stem with `.py`, else the only `.py` file in its directory."""
    same_stem = checkpoint.with_suffix(".py")
    if same_stem.is_file():
        return same_stem
    candidates = sorted(checkpoint.parent.glob("*.py"))
    if len(candidates) == 1:
        return candidates[0]
    found = [c.name for c in candidates] or "none"
    raise FileNotFoundError(
        f"no single Grounding DINO config beside {checkpoint} (Python files there: {found}); pass config= the "
        "package's config file, e.g. groundingdino/config/GroundingDINO_SwinT_OGC.py"
    )


def _import_package() -> tuple[Any, Any, Callable[..., Any]]:
    """(build_model, SLConfig, predict) from the package, or ImportError with the install command."""
    try:
        from groundingdino.models import build_model
        from groundingdino.util.inference import predict
        from groundingdino.util.slconfig import SLConfig
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return build_model, SLConfig, predict


def load_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights in `checkpoint` (tensors only; a "model" entry is unwrapped, "module." prefixes dropped)."""
    try:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for non-tensor pickles and broken files
        raise ValueError(f"{checkpoint} is not a readable weights-only Grounding DINO checkpoint: {e}") from e
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{checkpoint} holds no state dict of tensors (top-level keys: {list(raw)[:8]})")
    return {k.removeprefix("module."): v for k, v in state.items()}


class GroundingDinoPy:
    """IDEA-Research's Grounding DINO behind the `Grounder` protocol.

    model: a built and loaded `groundingdino` model; predict: the package's `predict` function (boxes, scores and
    phrases for one image). Thresholds are probabilities in (0, 1); duplicate_iou as in `HFGroundingDino`.
    """

    def __init__(
        self,
        model: Any,
        predict: Callable[..., Any],
        device: str = "cpu",
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        duplicate_iou: float | None = 0.8,
    ) -> None:
        check_thresholds(box_threshold, text_threshold)
        if duplicate_iou is not None:
            check_probability("duplicate_iou", duplicate_iou)
        self.model = model
        self.predict = predict
        self.device = device
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.duplicate_iou = duplicate_iou
        # older releases of the package move everything to CUDA and take no device argument
        self._device_kw = {"device": device} if "device" in inspect.signature(predict).parameters else {}

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        device: str = "cpu",
        *,
        config: Path | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        duplicate_iou: float | None = 0.8,
    ) -> GroundingDinoPy:
        """Build the model from `config` (default: `find_config(checkpoint)`) and load `checkpoint` strictly for
        every parameter the model has (extra entries in the checkpoint are ignored)."""
        check_thresholds(box_threshold, text_threshold)
        build_model, sl_config, predict = _import_package()
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"Grounding DINO checkpoint {checkpoint} does not exist; download groundingdino_swint_ogc.pth from "
                "IDEA-Research's GroundingDINO releases on a connected machine and pass its path"
            )
        config = Path(config) if config is not None else find_config(checkpoint)
        if not config.is_file():
            raise FileNotFoundError(f"Grounding DINO config {config} does not exist; pass the package's config .py")
        args = sl_config.fromfile(str(config))
        args.device = device
        model = build_model(args)
        missing, _unexpected = model.load_state_dict(load_state_dict(checkpoint), strict=False)
        if missing:
            raise ValueError(
                f"{checkpoint} does not fit {config.name}: {len(missing)} parameters missing (e.g. {missing[:3]}); "
                "pass the config the checkpoint was trained with"
            )
        model = model.to(device).eval()
        return cls(
            model,
            predict,
            device,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            duplicate_iou=duplicate_iou,
        )

    def ground(self, image: npt.NDArray[np.uint8], text: str) -> list[Detection]:
        """Objects in `image` ((H, W, 3) uint8 RGB) that `text` names, best first, boxes in `image` pixels."""
        h, w = check_image(image)
        prompt, phrases = format_prompt(text)
        with torch.inference_mode():
            boxes, scores, found = self.predict(
                self.model,
                preprocess(image),
                prompt,
                box_threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                **self._device_kw,
            )
        dets = detections_from_gdino_predict(
            torch.as_tensor(boxes).float().cpu().numpy(),
            torch.as_tensor(scores).float().cpu().numpy(),
            [str(p) for p in found],
            (h, w),
            box_threshold=self.box_threshold,
            fallback_phrase=phrases[0] if len(phrases) == 1 else prompt,
        )
        return suppress_duplicates(dets, self.duplicate_iou) if self.duplicate_iou is not None else dets
