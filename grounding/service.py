"""From a parsed pick to exactly one box: ask a backend for the phrase, apply spatial words, refuse ambiguity.

`GroundingService.locate` returns one `Detection` or raises `AmbiguousTarget` (with the candidates a person can
choose from) or `NoMatch` (saying what was asked and what was seen). Nothing here moves the arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from grounding.commands import TargetQuery, parse_command
from grounding.detection import Detection
from grounding.errors import AmbiguousTarget, NoMatch
from grounding.protocol import Grounder
from grounding.spatial import rank

#: Backends `load_grounding_service` knows.
BACKENDS = ("compact", "transformers", "groundingdino")


@runtime_checkable
class SceneDescriber(Protocol):
    """A backend that can also name everything it sees (used in no-match messages and `sam2grasp ground`)."""

    def describe(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Every object in view, phrase = its name ("red cup"), best first."""
        ...


@dataclass(frozen=True)
class ResolveConfig:
    """match_threshold: lowest score (0..1) that counts as a match; ambiguity_ratio: a second match scoring at least
    this share of the best makes the command ambiguous when no spatial word decides."""

    match_threshold: float = 0.35
    ambiguity_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.match_threshold < 1.0 or not 0.0 < self.ambiguity_ratio <= 1.0:
            raise ValueError(
                f"match_threshold must be within (0, 1) and ambiguity_ratio within (0, 1], got "
                f"{self.match_threshold}, {self.ambiguity_ratio}"
            )


class GroundingService:
    """Parses commands and locates their targets with one backend."""

    def __init__(self, grounder: Grounder, config: ResolveConfig | None = None) -> None:
        self.grounder = grounder
        self.config = config or ResolveConfig()

    def parse(self, command: str) -> tuple[TargetQuery, ...]:
        """The picks `command` asks for (UnsupportedCommand when it cannot be read safely)."""
        return parse_command(command)

    def _matches(self, image: npt.NDArray[np.uint8], phrase: str) -> list[Detection]:
        dets = self.grounder.ground(image, phrase)
        return [d for d in dets if d.score >= self.config.match_threshold]

    def seen(self, image: npt.NDArray[np.uint8]) -> str:
        """What the backend sees, for messages ("blue cube, green ball"), or a count-free note."""
        if isinstance(self.grounder, SceneDescriber):
            names = [d.phrase for d in self.grounder.describe(image)]
            return ", ".join(names) if names else "no objects"
        return "(this backend does not list objects)"

    def locate(self, image: npt.NDArray[np.uint8], query: TargetQuery) -> Detection:
        """The one object `query` names in `image` ((H, W, 3) uint8 RGB), box in `image` pixels."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
        said = query.text
        matches = self._matches(image, query.target.text)
        if not matches:
            raise NoMatch(f"asked for '{said}' ({query.target.text}); no such object in view; seen: {self.seen(image)}")
        if query.relation is None:
            best = matches[0]
            close = tuple(d for d in matches if d.score >= self.config.ambiguity_ratio * best.score)
            if len(close) > 1:
                raise AmbiguousTarget(
                    f"{len(close)} objects match '{said}' about equally; choose one, or say which "
                    f"(left, right, nearest, farthest, biggest, smallest, next to ...)",
                    close,
                )
            return best
        references: list[Detection] = []
        if query.reference is not None:
            references = self._matches(image, query.reference.text)
            if not references:
                raise NoMatch(
                    f"asked for '{said}'; no {query.reference.text} in view to refer to; seen: {self.seen(image)}"
                )
        ranked = rank(query.relation, matches, references, image.shape[1])
        if not ranked.order:
            raise NoMatch(f"asked for '{said}'; no {query.describe()} in view; seen: {self.seen(image)}")
        if not ranked.decided:
            raise AmbiguousTarget(
                f"'{said}' does not decide between {len(ranked.order)} objects; choose one", ranked.order[:2]
            )
        return ranked.order[0]


def load_grounding_service(
    backend: str = "compact",
    *,
    model: str | Path | None = None,
    device: str = "cpu",
    config: ResolveConfig | None = None,
) -> GroundingService:
    """A service over `backend` (one of BACKENDS). `model`: the compact grounder's directory (default: the
    shipped one in models/), a Hugging Face model id or directory for `transformers`, or a checkpoint for
    `groundingdino` (its config beside it)."""
    if backend == "compact":
        from grounding.compact.backend import CompactGrounder

        grounder: Grounder = CompactGrounder.load(Path(model) if model else None, device=device)
    elif backend == "transformers":
        from grounding.hf_dino import HFGroundingDino

        grounder = HFGroundingDino.load(str(model) if model else None, device=device)
    elif backend == "groundingdino":
        from grounding.gdino_py import GroundingDinoPy

        if model is None:
            raise ValueError("the groundingdino backend needs --model CHECKPOINT (its config file beside it)")
        grounder = GroundingDinoPy.load(Path(model), device=device)
    else:
        raise ValueError(f"unknown grounding backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return GroundingService(grounder, config)
