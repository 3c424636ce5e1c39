"""Sequence documents: several picks in order, each with where its object goes, how often to retry, and whether a
failure ends the sequence. Written in YAML (`sam2grasp sequence FILE`) or sent as JSON (POST /sequence); both
are validated here, strictly, with errors that name the field, what was given and what is valid.

    name: clear the table            # optional
    controller: expert               # optional: method (default) or expert
    steps:
      - command: pick the red cup
        place: bin                   # a drop zone (default bin), or
      - command: pick the left green cube
        place: {position: [0.30, 0.40, 0.15]}   # release the object here: x, y, z metres, robot base frame
        retries: 1                   # extra attempts after a failed one, 0..5 (default 0)
        stop_on_failure: false       # default true: a failed step skips the steps after it
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.jobs.place import drop_zones, release_height_ok
from pipeline.jobs.runner import StepRequest
from pipeline.jobs.state import Controller, Placement
from robot.safety import SafetyLimits

#: Largest sequence document accepted, bytes.
MAX_DOCUMENT_BYTES = 65_536
#: Most steps in one sequence.
MAX_STEPS = 50
#: Most extra attempts of one step.
MAX_RETRIES = 5
#: Longest command, characters.
MAX_COMMAND_CHARS = 500
_TOP_KEYS = ("name", "controller", "steps")
_STEP_KEYS = ("command", "place", "retries", "stop_on_failure")


class SequenceError(ValueError):
    """A sequence document that cannot be run; the message names the field and what is valid."""


@dataclass(frozen=True)
class SequenceDoc:
    """A validated sequence: its name, its controller (None: the server's default) and its steps."""

    name: str
    controller: Controller | None
    steps: tuple[StepRequest, ...]


def load_sequence(path: Path) -> SequenceDoc:
    """Read and validate the YAML sequence document at `path`."""
    if not path.is_file():
        raise FileNotFoundError(f"sequence file {path} does not exist")
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise SequenceError(f"{path} is larger than {MAX_DOCUMENT_BYTES} bytes; a sequence is a short list of picks")
    return parse_sequence_text(path.read_text(encoding="utf-8"), source=str(path))


def parse_sequence_text(text: str, source: str = "sequence") -> SequenceDoc:
    """Parse YAML (or JSON, a subset) text as a sequence document."""
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise SequenceError(f"{source} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SequenceError(f"{source} is not valid YAML{where}: {problem}") from None
    return validate_sequence(doc, source)


def from_commands(commands: list[str], controller: Controller | None = None) -> SequenceDoc:
    """A sequence of plain commands (default place, no retries, stop on failure)."""
    return validate_sequence({"steps": [{"command": c} for c in commands]}, "commands", controller)


def validate_sequence(doc: Any, source: str = "sequence", controller: Controller | None = None) -> SequenceDoc:
    """Check a parsed document (mappings, lists, scalars) and build the sequence."""
    if not isinstance(doc, dict):
        raise SequenceError(
            f"{source} must be a mapping with a 'steps' list (see `sam2grasp sequence --help`), got {_kind(doc)}"
        )
    _no_extra(doc, _TOP_KEYS, source)
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise SequenceError(f"{source}.name must be text of at most 200 characters, got {_kind(name)}")
    ctrl = controller
    if "controller" in doc:
        value = doc["controller"]
        valid = [c.value for c in Controller]
        if value not in valid:
            raise SequenceError(f"{source}.controller must be one of {', '.join(valid)}, got {value!r}")
        ctrl = Controller(value)
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise SequenceError(f"{source}.steps must be a non-empty list of steps, got {_kind(steps)}")
    if len(steps) > MAX_STEPS:
        raise SequenceError(f"{source}.steps holds {len(steps)} steps; at most {MAX_STEPS} are allowed")
    return SequenceDoc(name, ctrl, tuple(_step(s, f"{source}.steps[{i}]") for i, s in enumerate(steps)))


def _step(step: Any, where: str) -> StepRequest:
    if isinstance(step, str):
        step = {"command": step}
    if not isinstance(step, dict):
        raise SequenceError(f"{where} must be a mapping with a 'command' (or the command text), got {_kind(step)}")
    _no_extra(step, _STEP_KEYS, where)
    command = step.get("command")
    if not isinstance(command, str) or not command.strip():
        raise SequenceError(f"{where}.command must be non-empty text such as 'pick the red cup', got {_kind(command)}")
    if len(command) > MAX_COMMAND_CHARS:
        raise SequenceError(f"{where}.command is {len(command)} characters; at most {MAX_COMMAND_CHARS}")
    retries = step.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise SequenceError(f"{where}.retries must be a whole number 0..{MAX_RETRIES}, got {retries!r}")
    stop = step.get("stop_on_failure", True)
    if not isinstance(stop, bool):
        raise SequenceError(f"{where}.stop_on_failure must be true or false, got {stop!r}")
    placement = _placement(step.get("place", "bin"), f"{where}.place")
    return StepRequest(command.strip(), placement, retries, stop)


def _placement(value: Any, where: str) -> Placement:
    zones = drop_zones()
    if isinstance(value, str):
        value = {"zone": value}
    if not isinstance(value, dict):
        raise SequenceError(
            f"{where} must be a drop zone name ({', '.join(zones)}) or {{position: [x, y, z]}}, got {_kind(value)}"
        )
    _no_extra(value, ("zone", "position"), where)
    if ("zone" in value) == ("position" in value):
        raise SequenceError(f"{where} must give exactly one of 'zone' ({', '.join(zones)}) or 'position' [x, y, z]")
    if "zone" in value:
        if value["zone"] not in zones:
            raise SequenceError(f"{where}.zone must be one of {', '.join(zones)}, got {value['zone']!r}")
        return Placement(zone=str(value["zone"]))
    pos = value["position"]
    ok = isinstance(pos, list) and len(pos) == 3
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pos)
    if not ok:
        raise SequenceError(f"{where}.position must be 3 numbers [x, y, z] in metres (robot base frame), got {pos!r}")
    x, y, z = (float(v) for v in pos)
    limits = SafetyLimits()
    lo, hi = limits.workspace_min, limits.workspace_max
    if not (lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]):
        raise SequenceError(
            f"{where}.position ({x}, {y}) m lies outside the safety workspace x {lo[0]}..{hi[0]}, y {lo[1]}..{hi[1]} m"
        )
    if not release_height_ok(z):
        raise SequenceError(f"{where}.position z = {z} m must be within 0.05..0.30 m (the release height)")
    return Placement(zone=None, position=(x, y, z))


def _no_extra(mapping: dict[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = [k for k in mapping if k not in allowed]
    if extra:
        raise SequenceError(f"{where} has unknown field(s) {', '.join(map(repr, extra))}; valid: {', '.join(allowed)}")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
