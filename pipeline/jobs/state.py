"""A pick job: its state machine, the seconds it spent in each state, and its JSON form.

States, in the order a pick passes them: queued → grounding → tracking → grasping → lifting → placing →
succeeded; or it ends early as failed (with a reason), stopped (the stop button), or pauses in needs_choice
(with candidates) until a person picks one. Times are wall-clock seconds.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a pick job is."""

    QUEUED = "queued"
    GROUNDING = "grounding"  # turning the command into a box in the camera image
    NEEDS_CHOICE = "needs_choice"  # several objects match: waiting for a person to choose one
    TRACKING = "tracking"  # tracker prompted; the arm approaches the tracked object
    GRASPING = "grasping"  # the gripper closes on the object
    LIFTING = "lifting"  # the object rises until it is held lifted
    PLACING = "placing"  # the picked object is carried to its place and released
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


#: States a job never leaves.
FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})
#: States in which the arm may be moving for this job.
MOTION_STATES = frozenset({JobState.TRACKING, JobState.GRASPING, JobState.LIFTING, JobState.PLACING})


class Controller(StrEnum):
    """What drives the arm during a pick."""

    METHOD = "method"  # SAM2Grasp: tracker prompted with the grounded box, ACT head, asynchronous runtime
    EXPERT = "expert"  # the scripted expert, reading privileged simulator state (no perception)


#: How each controller is described in job JSON, so no result of the expert passes for the method's.
CONTROLLER_LABELS: dict[Controller, str] = {
    Controller.METHOD: "method: SAM2Grasp (compact SAM2 tracker prompted with the grounded box + ACT head)",
    Controller.EXPERT: "expert: scripted expert with privileged simulator state (not the learned method)",
}


@dataclass(frozen=True)
class Target:
    """What grounding found for a job: the phrase asked for, the box (x0, y0, x1, y1 pixels of the camera
    image), the grounding score 0..1, and the simulator's object id when the cell is simulated ("" otherwise)."""

    phrase: str
    box: tuple[float, float, float, float]
    score: float
    instance: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form: phrase, box, score, instance (null outside simulation)."""
        return {
            "phrase": self.phrase,
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "instance": self.instance or None,
        }


@dataclass(frozen=True)
class SequenceRef:
    """A job's place in a sequence: its id, the step (0-based) and the number of steps."""

    id: str
    step: int
    steps: int


@dataclass
class Placement:
    """Where a picked object goes: a named drop zone ("bin") or a release position (x, y, z metres, base frame)."""

    zone: str | None = "bin"
    position: tuple[float, float, float] | None = None


_counter = itertools.count(1)


def new_job_id() -> str:
    """A short unique job id: a counter and random hex ("j7-3fa2c1")."""
    return f"j{next(_counter)}-{uuid.uuid4().hex[:6]}"


@dataclass
class Job:
    """One pick of one target. Mutated only through its methods, which hold the job's lock; read with `to_json`.

    command: the text as the user gave it; query: the pick phrase grounding is asked about; controller: what
    drives the arm; retries: extra attempts after a failed one; stop_on_failure: a failure ends its sequence.
    """

    command: str
    query: Any
    controller: Controller
    placement: Placement = field(default_factory=Placement)
    retries: int = 0
    stop_on_failure: bool = True
    sequence: SequenceRef | None = None
    id: str = field(default_factory=new_job_id)
    state: JobState = JobState.QUEUED
    reason: str = ""
    target: Target | None = None
    candidates: tuple[Any, ...] = ()
    attempts: int = 0
    detail: str = ""
    created_at: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    _entered: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _choice: threading.Event = field(default_factory=threading.Event, repr=False)
    _chosen: int | None = None

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or stopped."""
        return self.state in FINAL_STATES

    def enter(self, state: JobState, reason: str = "") -> bool:
        """Move to `state` (recording the seconds spent in the state left); False, and no change, once final."""
        with self._lock:
            if self.state in FINAL_STATES:
                return False
            now = time.monotonic()
            key = self.state.value
            self.timings[key] = round(self.timings.get(key, 0.0) + now - self._entered, 4)
            self.state, self._entered = state, now
            if reason or state not in (FINAL_STATES | {JobState.NEEDS_CHOICE}):
                self.reason = reason  # the reason explains the current state; a running job has none
            if state in MOTION_STATES:
                self.candidates = ()
            return True

    def ask_choice(self, candidates: tuple[Any, ...], reason: str) -> None:
        """Pause in needs_choice with `candidates` (detections) for a person to choose from."""
        with self._lock:
            self._choice.clear()
            self._chosen = None
            self.candidates = candidates
        self.enter(JobState.NEEDS_CHOICE, reason)

    def choose(self, index: int) -> Any:
        """Resolve needs_choice with candidate `index`; returns the candidate. ValueError when the job awaits no
        choice (`JobNotWaiting`) or the index is out of range."""
        with self._lock:
            if self.state != JobState.NEEDS_CHOICE:
                raise JobNotWaiting(
                    f"job {self.id} is {self.state.value}, not needs_choice: there is nothing to choose"
                )
            if not 0 <= index < len(self.candidates):
                raise ValueError(
                    f"candidate {index} does not exist: job {self.id} has candidates 0..{len(self.candidates) - 1}"
                )
            self._chosen = index
            chosen = self.candidates[index]
            self._choice.set()
            return chosen

    def wait_choice(self, timeout_s: float, cancelled: threading.Event) -> int | None:
        """Block until `choose` (the index), `cancelled` is set or `timeout_s` seconds pass (None for both)."""
        deadline = time.monotonic() + timeout_s
        while not cancelled.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self._choice.wait(min(left, 0.05)):
                with self._lock:
                    return self._chosen
        return None

    def wake(self) -> None:
        """Release a `wait_choice` in progress (used by stop)."""
        self._choice.set()

    def to_json(self) -> dict[str, Any]:
        """The job as the API returns it."""
        with self._lock:
            timings = dict(self.timings)
            if self.state not in FINAL_STATES:
                key = self.state.value
                timings[key] = round(timings.get(key, 0.0) + time.monotonic() - self._entered, 4)
            seq = self.sequence
            return {
                "id": self.id,
                "state": self.state.value,
                "reason": self.reason or None,
                "command": self.command,
                "target": None if self.target is None else self.target.to_json(),
                "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
                "timings": timings,
                "controller": CONTROLLER_LABELS[self.controller],
                "candidates": [_candidate_json(c) for c in self.candidates],
                "attempts": self.attempts,
                "detail": self.detail or None,
                "sequence": None if seq is None else {"id": seq.id, "step": seq.step, "steps": seq.steps},
            }


class JobNotWaiting(ValueError):  # noqa: N818 (the API maps it to 409)
    """A choice was sent to a job that is not waiting for one."""


def _candidate_json(candidate: Any) -> dict[str, Any]:
    to_json = getattr(candidate, "to_json", None)
    if callable(to_json):
        out = to_json()
        if isinstance(out, dict):
            return out
    return {"box": None, "score": None, "phrase": str(candidate)}
