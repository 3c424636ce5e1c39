"""The job runner: one worker thread takes jobs from the bounded queue and runs them one after the other on the
cell (grounding, then the pick, then the place), so jobs never interleave. `stop()` halts motion at once and
cancels every waiting job; `shutdown()` (the server is stopping: a signal, or the app closing) halts motion and
ends every unfinished job as failed/interrupted. State changes are reported to an event sink (the API's WebSocket)
and, when a journal is given, written to it before the call that made them returns."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grounding.detection import Detection
from grounding.errors import AmbiguousTarget, GroundingError
from pipeline.jobs.cell import Cell, CellUnavailable, PickOutcome, TargetError
from pipeline.jobs.grounding_port import Grounding
from pipeline.jobs.journal import INTERRUPTED, JobJournal
from pipeline.jobs.queue import JobQueue
from pipeline.jobs.state import (
    Controller,
    Job,
    JobSnapshot,
    JobState,
    Placement,
    SequenceRef,
    continue_job_ids,
    new_job_id,
)

log = logging.getLogger(__name__)
#: Receives ("job", job JSON) and ("robot", facts) events; called from the runner's threads.
EventSink = Callable[[str, dict[str, Any]], None]


class RobotBlocked(RuntimeError):  # noqa: N818 (the API maps it to 409)
    """The robot cannot take a pick now (protective or emergency stop, disconnected)."""


class JobNotFound(KeyError):  # noqa: N818 (the API maps it to 404)
    """No job has this id."""


@dataclass(frozen=True)
class StepRequest:
    """One pick command to queue, with where its object goes, extra attempts, and whether a failure ends the
    sequence it belongs to."""

    command: str
    placement: Placement = field(default_factory=Placement)
    retries: int = 0
    stop_on_failure: bool = True


@dataclass(frozen=True)
class StopReport:
    """What `stop()` did: seconds the halt took, the job that was running (or None), jobs cancelled, and when the
    arm was halted on this machine's monotonic clock (`time.monotonic()`, seconds; a benchmark on the same machine
    subtracts the moment it sent the stop to get the whole request-to-halt latency)."""

    halt_s: float
    job: str | None
    cancelled: int
    halted_monotonic_s: float = 0.0


@dataclass(frozen=True)
class ShutdownReport:
    """What `shutdown()` did: its cause, when the arm was halted (epoch seconds), seconds the halt took, seconds
    from the signal's arrival to the arm halted (None without a signal), and the jobs it ended as failed/interrupted
    (the running one first)."""

    cause: str
    halted_at: float
    halt_s: float
    signal_to_halt_s: float | None
    interrupted: tuple[str, ...]


class JobRunner:
    """Runs pick jobs on `cell`, grounding commands with `grounding`.

    controller: default controller of new jobs; capacity: jobs that may wait; history: finished jobs kept for
    GET /jobs; choice_timeout_s: seconds a job waits in needs_choice before it fails; journal: an open job journal
    that every creation and state change is written to (None: jobs live in memory only)."""

    def __init__(
        self,
        cell: Cell,
        grounding: Grounding,
        *,
        controller: Controller = Controller.METHOD,
        capacity: int = 8,
        history: int = 200,
        choice_timeout_s: float = 300.0,
        on_event: EventSink | None = None,
        journal: JobJournal | None = None,
    ) -> None:
        if controller not in cell.controllers:
            raise CellUnavailable(f"this cell offers {sorted(c.value for c in cell.controllers)}, not {controller}")
        if not 0 < choice_timeout_s <= 3600:
            raise ValueError(f"choice_timeout_s must be within (0, 3600] s, got {choice_timeout_s}")
        self.cell, self.grounding, self.controller = cell, grounding, controller
        self.queue = JobQueue(capacity)
        self.history, self.choice_timeout_s = history, choice_timeout_s
        self.on_event, self.journal = on_event, journal
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()  # one submission at a time: room check, journal, queue
        self._shutdown_lock = threading.Lock()
        self._shutdown: ShutdownReport | None = None
        self._closing = ""  # the shutdown's cause once it began: no new jobs
        self._current: Job | None = None
        self._halt = threading.Event()
        self._stops = 0
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="job-runner", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0, cause: str = "shutdown") -> None:
        """Shut down (`shutdown(cause)`: motion halted, unfinished jobs failed/interrupted) and end the worker
        (waits up to `timeout_s` seconds)."""
        self.shutdown(cause)
        self._closed.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def restore(self, snapshots: Sequence[JobSnapshot]) -> None:
        """Show `snapshots` (ended jobs from the journal, oldest first) in GET /jobs, before any new job; new ids
        count on past theirs."""
        jobs = [Job.restore(s) for s in snapshots]
        continue_job_ids(j.id for j in jobs)
        with self._lock:
            for job in jobs[-(self.history + self.queue.capacity + 1) :]:
                self._jobs[job.id] = job

    def shutdown(self, cause: str, signal_at: float | None = None) -> ShutdownReport:
        """The server is stopping (`cause`, e.g. "SIGTERM"; `signal_at`: time.monotonic() of the signal's
        arrival): refuse new jobs, halt the arm at once, and end the running and waiting jobs as failed with
        reason `interrupted`; write a stop event to the journal. Idempotent: later calls return the first report."""
        with self._shutdown_lock:
            if self._shutdown is not None:
                return self._shutdown
            with self._lock:
                self._closing = cause or "shutdown"
                self._stops += 1
                job, halt = self._current, self._halt
            was = None if job is None else job.state
            # end the job in memory before the halt, so the worker cannot record the halted motion as "stopped"
            ended = job is not None and job.enter(JobState.FAILED, INTERRUPTED)
            waiting = self.queue.drain()  # before the halt: the worker must not take a waiting job once it ends
            halt.set()
            halt_s = self.cell.halt()
            since = None if signal_at is None else time.monotonic() - signal_at
            halted_at = time.time()
            interrupted: list[str] = []
            if job is not None and ended and was is not None:
                job.detail = (
                    f"the server stopped ({self._closing}) while this job was {was.value}; the arm was halted by "
                    f"the server's exit path in {halt_s * 1000:.1f} ms"
                )
                job.wake()
                self._emit(job)
                interrupted.append(job.id)
            for other in waiting:
                self._interrupt_waiting(other)
                interrupted.append(other.id)
            report = ShutdownReport(self._closing, halted_at, halt_s, since, tuple(interrupted))
            self._shutdown = report
        if self.journal is not None:
            self.journal.record_stop(report.cause, halted_at, halt_s, since, report.interrupted)
        if self.on_event is not None:
            self.on_event("robot", {"event": "shutdown", "cause": report.cause, "halt_s": round(halt_s, 4)})
        return report

    # ------------------------------------------------------------------ requests
    def submit(self, command: str, *, controller: Controller | None = None) -> list[Job]:
        """Queue the picks of `command` (one job per object it names). Raises UnsupportedCommand (not a pick),
        RobotBlocked, QueueFull, CellUnavailable."""
        return self.submit_steps([StepRequest(command)], controller=controller, sequence=False)

    def submit_steps(
        self, steps: Sequence[StepRequest], *, controller: Controller | None = None, sequence: bool = True
    ) -> list[Job]:
        """Queue every pick of `steps` in order, all or none (each command is parsed first). With `sequence`, the
        jobs form one sequence: a failure of a step with stop_on_failure skips the rest."""
        ctrl = controller or self.controller
        if ctrl not in self.cell.controllers:
            raise CellUnavailable(
                f"controller {ctrl.value!r} is not offered by this cell; valid: "
                f"{', '.join(sorted(c.value for c in self.cell.controllers))}"
            )
        planned = [(step, query) for step in steps for query in self.grounding.parse(step.command)]
        if not planned:
            raise ValueError("the commands name no object to pick")
        self._check_robot()  # after parsing: a malformed command is the sender's error whatever the robot does
        self._check_open()
        seq_id = new_job_id().replace("j", "s", 1) if sequence else None
        jobs = [
            Job(
                command=step.command,
                query=query,
                controller=ctrl,
                placement=step.placement,
                retries=step.retries,
                stop_on_failure=step.stop_on_failure,
                sequence=None if seq_id is None else SequenceRef(seq_id, i, len(planned)),
            )
            for i, (step, query) in enumerate(planned)
        ]
        with self._submit_lock:
            self.queue.check_room(len(jobs))  # before the journal: a refused job must not be journaled
            if self.journal is not None:
                self.journal.record_new(jobs)
            with self._lock:
                closing = self._closing
                if not closing:
                    self.queue.put_all(jobs)  # cannot be full: only this lock's holder adds to the queue
                for job in jobs:
                    self._jobs[job.id] = job
                self._trim()
        if closing:  # the shutdown began while the jobs were journaled: they never start
            for job in jobs:
                self._interrupt_waiting(job)
            self._check_open()
        for job in jobs:
            self._emit(job, persist=False)
        return jobs

    def get(self, job_id: str) -> Job:
        """The job with this id, or JobNotFound."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self) -> list[Job]:
        """Every known job, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    @property
    def current(self) -> Job | None:
        """The job holding the robot, if any."""
        return self._current

    def choose(self, job_id: str, index: int) -> Job:
        """Resolve a job's needs_choice with candidate `index` (JobNotWaiting / ValueError otherwise)."""
        job = self.get(job_id)
        job.choose(index)
        return job

    def stop(self) -> StopReport:
        """Halt motion now and cancel every waiting job; the running job ends as stopped."""
        with self._lock:
            self._stops += 1
            job, halt = self._current, self._halt
            # drain with the count raised, before the halt: once the running job returns, the worker must find
            # nothing left to take (a job it took before this point sees the changed count and is cancelled)
            cancelled = self.queue.drain()
        halt.set()
        halt_s = self.cell.halt()
        halted_at = time.monotonic()
        if job is not None:
            job.wake()
            self._end(job, JobState.STOPPED, "stop_requested", "stopped by the stop button or POST /stop")
        for other in cancelled:
            self._end(other, JobState.STOPPED, "stop_requested", "cancelled before it started")
        if self.on_event is not None:
            self.on_event("robot", {"event": "stopped", "halt_s": round(halt_s, 4), "cancelled": len(cancelled)})
        return StopReport(halt_s, None if job is None else job.id, len(cancelled), halted_at)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                stops = self._stops
            job = self.queue.take(0.2)
            if job is None:
                continue
            with self._lock:
                # a stop came while this job was being taken (it missed the drain), or the server is shutting down
                cancelled = self._stops != stops or bool(self._closing)
                if not cancelled:
                    self._halt = halt = threading.Event()
                    self._current = job
            if cancelled or job.done:
                if self._closing:
                    self._interrupt_waiting(job)
                else:
                    self._end(job, JobState.STOPPED, "stop_requested", "cancelled before it started")
                continue
            try:
                self._run(job, halt)
            except Exception as exc:  # a bug must fail the job, never the worker
                log.exception("job %s failed", job.id)
                self.cell.halt()
                self._end(job, JobState.FAILED, "internal_error", f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._current = None

    def _run(self, job: Job, halt: threading.Event) -> None:
        while not job.done:
            if not self.cell.robot_status().ok:
                status = self.cell.robot_status()
                self._end(job, JobState.FAILED, "robot_blocked", status.message or "the robot cannot move")
                return
            job.attempts += 1
            if not self._enter(job, JobState.GROUNDING):
                return
            outcome = self._attempt(job, halt)
            if outcome is None or job.done:
                return
            if outcome.success:
                self._finish_success(job, halt)
                return
            if halt.is_set() or outcome.reason == "stopped":
                self._end(job, JobState.STOPPED, "stop_requested", outcome.detail)
                return
            retry = job.attempts <= job.retries and outcome.reason != "collision"
            if not retry:
                self._end(job, JobState.FAILED, outcome.reason, outcome.detail)
                self._skip_rest(job)
                return
            job.detail = f"attempt {job.attempts} failed ({outcome.reason}); retrying"

    def _attempt(self, job: Job, halt: threading.Event) -> PickOutcome | None:
        try:
            detection = self.grounding.locator.locate(self.cell.camera_image(), job.query)
        except AmbiguousTarget as exc:
            chosen = self._ask(job, exc, halt)
            if chosen is None:
                return None
            detection = chosen
        except GroundingError as exc:
            job.candidates = tuple(exc.candidates)
            self._end(job, JobState.FAILED, exc.type, exc.message)
            self._skip_rest(job)
            return None
        try:
            job.target = self.cell.prepare(detection)
        except TargetError as exc:
            self._end(job, JobState.FAILED, "no_target", str(exc))
            self._skip_rest(job)
            return None
        self._emit(job)

        def on_state(state: JobState) -> None:
            self._enter(job, state)

        return self.cell.pick(job.target, job.controller, on_state, halt)

    def _ask(self, job: Job, exc: AmbiguousTarget, halt: threading.Event) -> Detection | None:
        candidates = tuple(exc.candidates)
        job.ask_choice(candidates, "ambiguous")
        job.detail = exc.message
        self.cell.show_candidates(tuple(c.box_xyxy_px for c in candidates))
        self._emit(job)
        index = job.wait_choice(self.choice_timeout_s, halt)
        self.cell.show_candidates(())
        if job.done or halt.is_set():
            return None
        if index is None:
            self._end(job, JobState.FAILED, "no_choice", f"nobody chose a candidate within {self.choice_timeout_s} s")
            self._skip_rest(job)
            return None
        job.detail = f"candidate {index} chosen"
        chosen: Detection = candidates[index]
        return chosen

    def _finish_success(self, job: Job, halt: threading.Event) -> None:
        if not self._enter(job, JobState.PLACING):
            return
        placed = self.cell.place(job.placement, halt)
        if placed.reason == "stopped" or halt.is_set():
            self._end(job, JobState.STOPPED, "stop_requested", "stopped while placing; the object is still held")
            return
        note = placed.detail if placed.success else f"lifted, but not placed ({placed.reason}): {placed.detail}"
        self._end(job, JobState.SUCCEEDED, "", note)

    def _skip_rest(self, job: Job) -> None:
        seq = job.sequence
        if seq is None or not job.stop_on_failure:
            return
        for other in self.queue.remove_sequence(seq.id):
            self._end(other, JobState.FAILED, "skipped", f"step {seq.step + 1} failed and stop_on_failure is set")

    # ------------------------------------------------------------------ helpers
    def _check_robot(self) -> None:
        status = self.cell.robot_status()
        if not status.ok:
            what = "protective stop" if status.protective_stop else "emergency stop" if status.emergency_stop else ""
            raise RobotBlocked(f"the robot cannot take a pick: {what or 'not connected'}. {status.message}".strip())

    def _check_open(self) -> None:
        if self._closing:
            raise CellUnavailable(f"the server is shutting down ({self._closing}): no new jobs are taken")

    def _interrupt_waiting(self, job: Job) -> None:
        self._end(
            job,
            JobState.FAILED,
            INTERRUPTED,
            f"the server stopped ({self._closing}) while this job was {job.state.value}; it never started",
        )

    def _enter(self, job: Job, state: JobState, reason: str = "") -> bool:
        changed = job.enter(state, reason)
        if changed:
            self._emit(job)
        return changed

    def _end(self, job: Job, state: JobState, reason: str, detail: str) -> None:
        if job.enter(state, reason):
            if detail:
                job.detail = detail
            self._emit(job)

    def _emit(self, job: Job, persist: bool = True) -> None:
        if persist and self.journal is not None:
            self.journal.try_record(job)
        if self.on_event is not None:
            try:
                self.on_event("job", job.to_json())
            except Exception:
                log.exception("event sink failed")

    def _trim(self) -> None:
        while len(self._jobs) > self.history + self.queue.capacity + 1:
            oldest = next(iter(self._jobs.values()))
            if not oldest.done:
                break
            self._jobs.popitem(last=False)
