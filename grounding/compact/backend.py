"""The compact grounder as a `Grounder`: the detector finds every object, the phrase scores them.

A detection's score for a phrase is the detector's confidence times the probability of the phrase's colour and
of its shape (a phrase that leaves one out does not constrain it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from grounding.commands import parse_object_phrase
from grounding.compact.checkpoint import load_detector
from grounding.compact.model import CompactDetector, ObjectDetection
from grounding.compact.scenes import COLOURS, SHAPES
from grounding.detection import Detection

#: The shipped compact grounder (trained by the command in models/README.md).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "grounder_compact"


class CompactGrounder:
    """Grounds phrases over the catalogue's colours and shapes with the compact detector."""

    def __init__(self, detector: CompactDetector) -> None:
        self.detector = detector.eval()
        # One command asks about one image several times (target, reference, what is in view): the detector runs
        # once per image, keyed by the image's bytes.
        self._last: tuple[bytes, list[ObjectDetection]] | None = None

    @classmethod
    def load(cls, directory: Path | None = None, device: str = "cpu") -> CompactGrounder:
        """The grounder saved in `directory` (default: the shipped one)."""
        path = directory or DEFAULT_MODEL
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} is not a compact grounder directory; train one with `sam2grasp train-grounder` "
                f"or use the shipped {DEFAULT_MODEL}"
            )
        return cls(load_detector(path, device))

    def objects(self, image: npt.NDArray[np.uint8]) -> list[ObjectDetection]:
        """Every object the detector finds, most confident first."""
        key = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
        key += repr((image.shape, image.dtype.str)).encode()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        with torch.inference_mode():
            found = self.detector.detect(image)
        self._last = (key, found)
        return found

    def ground(self, image: npt.NDArray[np.uint8], text: str) -> list[Detection]:
        """Objects matching `text` ("red cup", "cup", "red object"), best first."""
        phrase = parse_object_phrase(text)
        out = []
        for o in self.objects(image):
            p = o.confidence
            if phrase.colour is not None:
                p *= float(o.colour_probs[COLOURS.index(phrase.colour)])
            if phrase.shape is not None:
                p *= float(o.shape_probs[SHAPES.index(phrase.shape)])
            out.append(Detection(o.box_xyxy_px, min(1.0, max(0.0, p)), phrase.text))
        return sorted(out, key=lambda d: -d.score)

    def describe(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Every object in view named by its most likely colour and shape."""
        out = []
        for o in self.objects(image):
            colour, shape = COLOURS[int(np.argmax(o.colour_probs))], SHAPES[int(np.argmax(o.shape_probs))]
            score = o.confidence * float(o.colour_probs.max()) * float(o.shape_probs.max())
            out.append(Detection(o.box_xyxy_px, min(1.0, score), f"{colour.value} {shape.value}"))
        return out
