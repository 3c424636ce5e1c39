"""Grounding DINO through transformers as a `Grounder` (a Hugging Face model id or a local model directory).

The model is loaded from a directory in the Hugging Face layout (`config.json` with model type "grounding-dino",
`model.safetensors`, the processor's and tokenizer's files) or by id from the Hub cache. Weights load from
safetensors only. Offline, a model that is not in the cache cannot be fetched: the error says how to fetch it on a
connected machine and where to put it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
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
    detections_from_token_logits,
    format_prompt,
    phrase_spans,
    suppress_duplicates,
)
from grounding.errors import UnsupportedCommand

#: The Hub id used when no model is named (Swin-T backbone, 172 M parameters).
DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
#: Default IoU above which a lower-scoring box is taken for a second hit on the same object and dropped.
DEFAULT_DUPLICATE_IOU = 0.8
_MODEL_TYPE = "grounding-dino"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def _env_offline() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no network."""
    flags = (os.environ.get(k, "").strip().lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in {"1", "true", "yes", "on"} for f in flags)


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return "~/.cache/huggingface/hub"


def _fetch_hint(model_id: str) -> str:
    name = model_id.rsplit("/", 1)[-1]
    return (
        f"On a connected machine run `hf download {model_id} --local-dir {name}` (huggingface_hub ≥ 0.34; older: "
        f"`huggingface-cli download ...`), copy the folder {name}/ to this machine and pass its path "
        f"(`--model /path/to/{name}`), or copy that machine's Hugging Face cache into {_hub_cache()} here"
    )


def _looks_like_path(model: str) -> bool:
    """A string that can only be a directory (absolute, ./ ~ prefixed, or more than one '/'), not a Hub id."""
    return model.startswith((os.sep, ".", "~")) or model.count("/") > 1 or "\\" in model


def check_model_dir(path: Path) -> None:
    """Raise FileNotFoundError / ValueError unless `path` holds a transformers Grounding DINO model."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass a Grounding DINO model directory or a Hub id")
    config = path / "config.json"
    present = sorted(p.name for p in path.iterdir())[:12]
    if not config.is_file():
        raise ValueError(f"{path} is not a Grounding DINO model: no config.json (found: {present})")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"{path} is not a Grounding DINO model: config.json is not a JSON object ({e})") from e
    if model_type != _MODEL_TYPE:
        raise ValueError(f"{path} is not a Grounding DINO model: config.json model_type is {model_type!r}, "
                         f"expected {_MODEL_TYPE!r}")  # fmt: skip
    for what, names in (("weights", _WEIGHTS), ("processor", _PROCESSOR_FILES), ("tokenizer", _TOKENIZER_FILES)):
        if not any((path / n).is_file() for n in names):
            raise ValueError(f"{path} lacks the model's {what}: expected one of {list(names)} (found: {present})")


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type not in {"cpu", "cuda"}:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA but torch sees no CUDA device here; use device='cpu'")
    return dev


def _from_pretrained(source: str, local_only: bool) -> tuple[Any, Any]:
    tf: Any = importlib.import_module("transformers")  # untyped at this boundary: its stubs vary by release
    config = tf.AutoConfig.from_pretrained(source, local_files_only=local_only)
    if getattr(config, "model_type", None) != _MODEL_TYPE:
        raise ValueError(f"{source} is not a Grounding DINO model: model_type {config.model_type!r}, "
                         f"expected {_MODEL_TYPE!r}")  # fmt: skip
    processor = tf.AutoProcessor.from_pretrained(source, local_files_only=local_only)
    model = tf.GroundingDinoForObjectDetection.from_pretrained(
        source, config=config, local_files_only=local_only, use_safetensors=True
    )
    return processor, model


class HFGroundingDino:
    """transformers' Grounding DINO behind the `Grounder` protocol.

    box_threshold: lowest score (0..1, exclusive) of a kept box; text_threshold: lowest probability (0..1) of a
    token reported in a detection's phrase; duplicate_iou: boxes overlapping a better one by more than this IoU
    are dropped (None keeps all); autocast_bf16: run the model under bfloat16 autocast (CUDA only).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: str = "cpu",
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        duplicate_iou: float | None = DEFAULT_DUPLICATE_IOU,
        autocast_bf16: bool = False,
    ) -> None:
        check_thresholds(box_threshold, text_threshold)
        if duplicate_iou is not None:
            check_probability("duplicate_iou", duplicate_iou)
        self.device = _check_device(device)
        if autocast_bf16 and self.device.type != "cuda":
            raise ValueError("autocast_bf16 is a CUDA option; on the CPU the model runs in float32")
        self.model = model.to(self.device, dtype=torch.float32).eval()
        self.processor = processor
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.duplicate_iou = duplicate_iou
        self.autocast_bf16 = autocast_bf16
        tokenizer = processor.tokenizer
        period = tokenizer.convert_tokens_to_ids(".")
        if period is None or period == tokenizer.unk_token_id:
            raise ValueError("the processor's tokenizer has no '.' token: it is not a Grounding DINO tokenizer")
        self._boundary_ids = frozenset(int(i) for i in tokenizer.all_special_ids) | {int(period)}
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str = "cpu",
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        local_files_only: bool | None = None,
        duplicate_iou: float | None = DEFAULT_DUPLICATE_IOU,
        autocast_bf16: bool = False,
    ) -> HFGroundingDino:
        """Load `model`: a Hub id (default `IDEA-Research/grounding-dino-tiny`) or a model directory.

        local_files_only: True reads the Hub cache only; False may download; None reads the cache first and
        downloads only when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are unset (without a network the Hub client
        retries for a minute or two before giving up: set HF_HUB_OFFLINE=1 on offline machines).
        """
        check_thresholds(box_threshold, text_threshold)
        _check_device(device)
        name = model or DEFAULT_MODEL
        path = Path(name).expanduser()
        if path.exists() or _looks_like_path(name):
            if not path.exists():
                raise FileNotFoundError(
                    f"Grounding DINO model directory {path} does not exist. {_fetch_hint(DEFAULT_MODEL)}"
                )
            check_model_dir(path)
            try:
                processor, net = _from_pretrained(str(path), True)
            except Exception as e:  # the loaders raise OSError, ValueError or safetensors' own error type
                raise ValueError(f"{path} holds an incomplete or unreadable Grounding DINO model: {e}") from e
        else:
            if local_files_only is None:
                tries = [True] if _env_offline() else [True, False]
            else:
                tries = [bool(local_files_only)]
            errors: list[str] = []
            loaded: tuple[Any, Any] | None = None
            for local_only in tries:
                try:
                    loaded = _from_pretrained(name, local_only)
                    break
                except OSError as e:
                    errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            if loaded is None:
                how = "downloading is off" if tries == [True] else "it could not be downloaded"
                raise FileNotFoundError(
                    f"Grounding DINO model {name!r} is not in the Hugging Face cache ({_hub_cache()}) and {how} "
                    f"({'; '.join(errors)}). {_fetch_hint(name)}"
                )
            processor, net = loaded
        return cls(
            net,
            processor,
            device,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            duplicate_iou=duplicate_iou,
            autocast_bf16=autocast_bf16,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def raw_outputs(self, image: npt.NDArray[np.uint8], text: str) -> tuple[Any, Any, tuple[str, ...]]:
        """(model outputs, processor inputs, phrases) for `image` and `text`, as the model saw them."""
        check_image(image)
        prompt, phrases = format_prompt(text)
        inputs = self.processor(images=Image.fromarray(image), text=prompt, return_tensors="pt")
        n_tokens = int(inputs["input_ids"].shape[1])
        if n_tokens > self.max_text_len:
            raise UnsupportedCommand(f"the phrase is {n_tokens} tokens; the model reads at most {self.max_text_len}")
        inputs = inputs.to(self.device)
        with torch.inference_mode(), self._autocast():
            outputs = self.model(**inputs)
        return outputs, inputs, phrases

    def ground(self, image: npt.NDArray[np.uint8], text: str) -> list[Detection]:
        """Objects in `image` ((H, W, 3) uint8 RGB) that `text` names ("red cup", or "red cup. blue box."), best
        first, boxes in `image` pixels, `phrase` the words of the prompt that matched."""
        h, w = check_image(image)
        outputs, inputs, phrases = self.raw_outputs(image, text)
        ids = [int(i) for i in inputs["input_ids"][0].tolist()]
        spans = phrase_spans(ids, phrases, self._boundary_ids)
        dets = detections_from_token_logits(
            outputs.logits[0].float().cpu().numpy(),
            outputs.pred_boxes[0].float().cpu().numpy(),
            ids,
            spans,
            (h, w),
            lambda tokens: str(self.processor.tokenizer.decode(tokens)),
            box_threshold=self.box_threshold,
            text_threshold=self.text_threshold,
        )
        return suppress_duplicates(dets, self.duplicate_iou) if self.duplicate_iou is not None else dets
