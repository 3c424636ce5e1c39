"""The two grounding calls the jobs make, behind one small object so that the runner does not import a model.

`parse(text)` splits a command into one query per pick (each with `.text`, the phrase as said) and raises
`grounding.errors.UnsupportedCommand` for anything but picking; `locator.locate(image, query)` returns one
`Detection` or raises `AmbiguousTarget` (with candidates) / `NoMatch`. `load_grounding` wires the project's
`grounding.commands` and `grounding.service`, imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection


class Locator(Protocol):
    """Finds the one object a query names in an image."""

    def locate(self, image: npt.NDArray[np.uint8], query: Any) -> Detection:
        """The detection of `query` in `image` ((H, W, 3) uint8 RGB); raises a `GroundingError` otherwise."""
        ...


class GroundingUnavailable(RuntimeError):  # noqa: N818
    """The grounding modules or their model could not be loaded."""


@dataclass(frozen=True)
class Grounding:
    """A command parser and a locator, and the name shown in /health."""

    parse: Callable[[str], Sequence[Any]]
    locator: Locator
    name: str


def query_text(query: Any) -> str:
    """The phrase of a query as said (its `.text`, else its string form)."""
    text = getattr(query, "text", None)
    return text if isinstance(text, str) else str(query)


def load_grounding(backend: str = "compact") -> Grounding:
    """The project's grounding: `grounding.commands.parse_command` and `grounding.service.load_grounding_service`
    for `backend`. Raises GroundingUnavailable with the cause when either cannot be imported or loaded."""
    try:
        from grounding.commands import parse_command
        from grounding.service import load_grounding_service
    except ImportError as exc:
        raise GroundingUnavailable(
            f"language grounding is not available ({exc}); it needs grounding/commands.py and grounding/service.py"
        ) from exc
    try:
        service = load_grounding_service(backend)
    except (OSError, ValueError, RuntimeError) as exc:
        raise GroundingUnavailable(f"could not load the {backend!r} grounding backend: {exc}") from exc
    return Grounding(parse_command, service, f"grounding.service ({backend})")
