"""What every grounding backend provides: detections of the objects a phrase names."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection


@runtime_checkable
class Grounder(Protocol):
    """A text-conditioned detector (Grounding DINO, or the project's compact grounder)."""

    def ground(self, image: npt.NDArray[np.uint8], text: str) -> list[Detection]:
        """Objects in `image` ((H, W, 3) uint8 RGB) that `text` names, best first, boxes in `image` pixels.

        An empty list means nothing matched; ranking and refusing ambiguous results is `grounding.resolve`'s job.
        """
        ...
