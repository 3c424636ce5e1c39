"""Typed grounding errors. None of them moves the arm: a caller that gets one asks a person instead.

Each error has a stable `type` string (what the API and the web page switch on), a message that says what was
asked and what was seen or what is valid, and the candidate detections a person may choose from.
"""

from __future__ import annotations

from grounding.detection import Detection


class GroundingError(ValueError):
    """A command that cannot be turned into exactly one box prompt."""

    type = "grounding_error"

    def __init__(self, message: str, candidates: tuple[Detection, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.candidates = candidates

    def to_json(self) -> dict[str, object]:
        """JSON form: `type`, `message`, `candidates` (each `box`, `score`, `phrase`)."""
        return {"type": self.type, "message": self.message, "candidates": [c.to_json() for c in self.candidates]}


class UnsupportedCommand(GroundingError):  # noqa: N818 (named for what the user sent)
    """Empty text, an action other than picking, or words that name no object."""

    type = "unsupported_command"


class AmbiguousTarget(GroundingError):  # noqa: N818
    """Two or more objects match about equally; `candidates` holds them, best first."""

    type = "ambiguous"


class NoMatch(GroundingError):  # noqa: N818
    """Nothing in view matches; the message names what was asked and what was seen."""

    type = "no_match"
