"""A pick job: its state machine, the seconds it spent in each state, and its JSON form.

States, in the order a pick passes them: queued → grounding → tracking → grasping → lifting → placing →
succeeded; or it ends early as failed (with a reason), stopped (the stop button), or pauses in needs_choice
(with candidates) until a person picks one. Times are wall-clock seconds.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterable
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
_counter_lock = threading.Lock()
_ID_NUMBER = re.compile(r"^[a-z](\d+)-")


def new_job_id() -> str:
    """A short unique job id: a counter and random hex ("j7-3fa2c1")."""
    with _counter_lock:
        n = next(_counter)
    return f"j{n}-{uuid.uuid4().hex[:6]}"


def continue_job_ids(known: Iterable[str]) -> None:
    """Make the next ids count on past the largest counter among `known` ids (jobs restored from a journal), so
    that ids stay unique across server restarts."""
    global _counter
    numbers = [int(m.group(1)) for m in (_ID_NUMBER.match(i) for i in known) if m is not None]
    if not numbers:
        return
    with _counter_lock:
        current = next(_counter)
        _counter = itertools.count(max(current, max(numbers) + 1))


@dataclass(frozen=True)
class StoredCandidate:
    """A candidate detection as the journal keeps it: box (x0, y0, x1, y1 pixels, or None), score 0..1 (or None)
    and the phrase."""

    box: tuple[float, float, float, float] | None
    score: float | None
    phrase: str

    def to_json(self) -> dict[str, Any]:
        """JSON form, as the API shows candidates: box, score, phrase."""
        return {"box": None if self.box is None else list(self.box), "score": self.score, "phrase": self.phrase}


@dataclass(frozen=True)
class JobSnapshot:
    """Everything the API shows of a job at one moment, in plain typed values (what the job journal stores).

    created_at: epoch seconds; timings: (state, seconds spent in it) pairs, the current state's time counted up to
    the snapshot; target: what grounding found, or None; candidates: detections offered to a person."""

    id: str
    command: str
    controller: Controller
    state: JobState
    reason: str
    detail: str
    created_at: float
    timings: tuple[tuple[str, float], ...]
    attempts: int
    target: Target | None
    candidates: tuple[StoredCandidate, ...]
    sequence: SequenceRef | None
    placement: Placement
    retries: int
    stop_on_failure: bool

    @property
    def done(self) -> bool:
        """True when the job had ended (succeeded, failed or stopped) at the snapshot."""
        return self.state in FINAL_STATES


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

    @classmethod
    def restore(cls, snap: JobSnapshot) -> Job:
        """A finished job rebuilt from a snapshot (a job restored from the journal; it never runs again).
        ValueError for a snapshot of a job that had not ended."""
        if not snap.done:
            raise ValueError(
                f"job {snap.id} is {snap.state.value}: only succeeded, failed or stopped jobs can be restored"
            )
        return cls(
            command=snap.command,
            query=snap.command,
            controller=snap.controller,
            placement=snap.placement,
            retries=snap.retries,
            stop_on_failure=snap.stop_on_failure,
            sequence=snap.sequence,
            id=snap.id,
            state=snap.state,
            reason=snap.reason,
            target=snap.target,
            candidates=snap.candidates,
            attempts=snap.attempts,
            detail=snap.detail,
            created_at=snap.created_at,
            timings=dict(snap.timings),
        )

    def snapshot(self) -> JobSnapshot:
        """The job now, as plain typed values (taken under the job's lock: one consistent moment)."""
        with self._lock:
            return JobSnapshot(
                id=self.id,
                command=self.command,
                controller=self.controller,
                state=self.state,
                reason=self.reason,
                detail=self.detail,
                created_at=self.created_at,
                timings=tuple(self._timings_now().items()),
                attempts=self.attempts,
                target=self.target,
                candidates=tuple(_stored_candidate(c) for c in self.candidates),
                sequence=self.sequence,
                placement=Placement(self.placement.zone, self.placement.position),
                retries=self.retries,
                stop_on_failure=self.stop_on_failure,
            )

    def _timings_now(self) -> dict[str, float]:
        """Seconds per state, the current state's counted up to now (call with the lock held)."""
        timings = dict(self.timings)
        if self.state not in FINAL_STATES:
            key = self.state.value
            timings[key] = round(timings.get(key, 0.0) + time.monotonic() - self._entered, 4)
        return timings

    def to_json(self) -> dict[str, Any]:
        """The job as the API returns it."""
        with self._lock:
            timings = self._timings_now()
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


def _stored_candidate(candidate: Any) -> StoredCandidate:
    if isinstance(candidate, StoredCandidate):
        return candidate
    out = _candidate_json(candidate)
    box, score = out.get("box"), out.get("score")
    stored_box = None
    if isinstance(box, list | tuple) and len(box) == 4:
        stored_box = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return StoredCandidate(stored_box, None if score is None else float(score), str(out.get("phrase", "")))


def _candidate_json(candidate: Any) -> dict[str, Any]:
    to_json = getattr(candidate, "to_json", None)
    if callable(to_json):
        out = to_json()
        if isinstance(out, dict):
            return out
    return {"box": None, "score": None, "phrase": str(candidate)}
