"""The bounded job queue of the one robot: jobs wait here in order; a full queue refuses new ones."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from pipeline.jobs.state import Job


class QueueFull(RuntimeError):  # noqa: N818 (the API maps it to 429)
    """The queue has no room for the jobs submitted; none of them was queued."""


class JobQueue:
    """Jobs waiting for the robot, first in first out, at most `capacity` waiting (the running job not counted).

    Thread-safe: the API threads put, the runner's worker thread takes."""

    def __init__(self, capacity: int = 8) -> None:
        if not 1 <= capacity <= 1000:
            raise ValueError(f"capacity must be within 1..1000 jobs, got {capacity}")
        self.capacity = capacity
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def check_room(self, count: int) -> None:
        """QueueFull when fewer than `count` places are free now (the room only grows until the next put)."""
        with self._cond:
            self._check_room(count)

    def put_all(self, jobs: Sequence[Job]) -> None:
        """Queue `jobs` in order, all or none: QueueFull when fewer than len(jobs) places are free."""
        if not jobs:
            raise ValueError("nothing to queue: at least one job is needed")
        with self._cond:
            self._check_room(len(jobs))
            self._jobs.extend(jobs)
            self._cond.notify_all()

    def _check_room(self, count: int) -> None:
        if count > self.capacity - len(self._jobs):
            raise QueueFull(
                f"the job queue is full ({len(self._jobs)} of {self.capacity} waiting, {count} submitted): "
                "wait for jobs to finish or stop them"
            )

    def take(self, timeout_s: float) -> Job | None:
        """The oldest waiting job, waiting up to `timeout_s` seconds for one; None when none came."""
        with self._cond:
            if not self._jobs:
                self._cond.wait(timeout_s)
            return self._jobs.popleft() if self._jobs else None

    def drain(self) -> list[Job]:
        """Remove and return every waiting job (stop cancels them)."""
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def remove_sequence(self, sequence_id: str) -> list[Job]:
        """Remove and return the waiting jobs of sequence `sequence_id` (a failed step ends its sequence)."""
        with self._cond:
            gone = [j for j in self._jobs if j.sequence is not None and j.sequence.id == sequence_id]
            self._jobs = deque(j for j in self._jobs if j not in gone)
            return gone

    def wake(self) -> None:
        """Wake a worker waiting in `take` (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()
