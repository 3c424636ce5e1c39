"""TEST STAND-IN for the project's language grounding (`grounding.commands` + `grounding.service`), used by the
job and API tests so that they do not depend on a trained grounder.

It is NOT a grounder: `FakeLocator` reads the simulated cell's privileged segmentation and scene to return the
box of the object a phrase names ("<colour> <shape>", optionally with left/right/middle/front/back), and raises
the real typed errors (`AmbiguousTarget` with candidates, `NoMatch`) the way the real service does.
`fake_parse_command` splits "pick the red cup, then the green cube" into one query per pick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection
from grounding.errors import AmbiguousTarget, NoMatch, UnsupportedCommand
from pipeline.jobs.grounding_port import Grounding
from pipeline.jobs.place import in_drop_zone
from pipeline.jobs.sim_cell import SimCell
from robot.sim.catalogue import Colour, Shape
from robot.sim.naming import spatial_word

_VERB = re.compile(r"^(?:please\s+)?(?:pick(?:\s+up)?|grab|take|get)\s+", re.IGNORECASE)
_SPLIT = re.compile(r"\s*(?:,\s*(?:and\s+)?then\s+|\s+and\s+then\s+|\s+then\s+|,\s*and\s+|;\s*)", re.IGNORECASE)
_SPATIAL = ("left", "right", "middle", "front", "back")


@dataclass(frozen=True)
class FakeQuery:
    """One pick as the stand-in parser reads it; `text` is the phrase as said."""

    text: str
    colour: str
    shape: str
    spatial: str | None = None


def fake_parse_command(text: str) -> tuple[FakeQuery, ...]:
    """One query per pick; UnsupportedCommand for empty text or another verb."""
    cleaned = text.strip().rstrip(".!").strip()
    if not cleaned:
        raise UnsupportedCommand("the command is empty: say what to pick, e.g. 'pick the red cup'")
    if not _VERB.match(cleaned):
        raise UnsupportedCommand(f"only picking is supported, e.g. 'pick the red cup'; got {text!r}")
    queries = []
    for part in _SPLIT.split(cleaned):
        phrase = _VERB.sub("", part.strip()).strip()
        words = [w for w in re.split(r"\s+", phrase.lower()) if w not in ("the", "a", "an", "one", "up")]
        colours = [w for w in words if w in {c.value for c in Colour}]
        shapes = [w for w in words if w in {s.value for s in Shape}]
        spatial = [w for w in words if w in _SPATIAL]
        if len(colours) != 1 or len(shapes) != 1:
            raise UnsupportedCommand(f"{phrase!r} names no object as '<colour> <shape>'")
        queries.append(FakeQuery(phrase, colours[0], shapes[0], spatial[0] if spatial else None))
    return tuple(queries)


class FakeLocator:
    """Finds a query's object with the simulator's segmentation (privileged; test stand-in only)."""

    def __init__(self, cell: SimCell) -> None:
        self.cell = cell

    def locate(self, image: npt.NDArray[np.uint8], query: Any) -> Detection:
        """The named object's box in `image`, or the real service's typed errors."""
        cell = self.cell
        with cell._lock:
            obs = cell.robot.last_observation
            inst = None if obs is None else obs.instance_map
            scene = cell.scene
            positions = {o.instance: cell.env.object_position(o.instance) for o in scene.objects}
        if inst is None:
            raise NoMatch("no segmentation available")
        found: list[tuple[str, Detection]] = []
        for i, obj in enumerate(scene.objects):
            if obj.kind.colour.value != query.colour or obj.kind.shape.value != query.shape:
                continue
            if in_drop_zone("bin", positions[obj.instance]):
                continue  # already put away
            ys, xs = np.nonzero(inst == i)
            if xs.size == 0:
                continue
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            found.append((obj.instance, Detection(box, 0.9, query.text)))
        if not found:
            raise NoMatch(f"no {query.colour} {query.shape} in view")
        if query.spatial is not None:
            for instance, det in found:
                if spatial_word(scene, instance) == query.spatial:
                    return det
            raise NoMatch(f"no {query.spatial} {query.colour} {query.shape} in view")
        if len(found) > 1:
            raise AmbiguousTarget(
                f"{len(found)} objects match {query.text!r}: choose one", tuple(det for _, det in found)
            )
        return found[0][1]


def fake_grounding(cell: SimCell) -> Grounding:
    """The stand-in grounding over `cell` (labelled as such in /health)."""
    return Grounding(fake_parse_command, FakeLocator(cell), "TEST STAND-IN (privileged simulator segmentation)")


#: Bearer token of the test apps.
TEST_TOKEN = "test-token-0123456789abcdef"


def stand_in_app(cell: SimCell, **config: Any) -> Any:
    """The real API app over `cell` with the stand-in grounding, token `TEST_TOKEN`, no token file; `config`
    overrides `ApiConfig` fields (controller defaults to the expert, so picks can succeed)."""
    from api.app import create_app
    from api.config import ApiConfig

    settings: dict[str, Any] = {"token": TEST_TOKEN, "token_file": None, "controller": "expert", **config}
    return create_app(ApiConfig(**settings), cell=cell, grounding=fake_grounding(cell))
