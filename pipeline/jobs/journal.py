"""The durable job journal: every job creation and state change appended to a JSON-lines file, so that a server
that is stopped, killed or crashes loses no job.

File: `<state_dir>/jobs.jsonl`, one JSON object a line, each written with one `write` and flushed and fsynced
before `record` returns (before the API answers). Lines: `{"v": 1, "kind": "job", "job": {...}}` (the job as it
is now; the last line of an id wins) and `{"v": 1, "kind": "server", "event": {...}}` (server start and stop, with
the time the stop took). A lock file next to it (`jobs.lock`, flock) keeps a second server off the directory.

On start (`JobJournal.open`) the file is replayed: jobs that had not ended (queued, grounding, needs_choice,
tracking, grasping, lifting, placing) become `failed` with reason `interrupted`, keeping their id, command and
timings; a torn last line (the process killed mid-write) is skipped with a warning; any other damage raises
`JournalError` naming the file, the line and what is wrong. The file is then rewritten atomically with the last
`keep` jobs, and compacted again while the server runs once it holds `COMPACT_FACTOR * keep` more lines.
Units: seconds (epoch seconds for `at` and `created_at`), milliseconds where a name ends in `_ms`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pipeline.atomic_file import write_atomic
from pipeline.jobs.cell import CellUnavailable
from pipeline.jobs.state import Job, JobSnapshot, JobState

log = logging.getLogger(__name__)

#: Journal file and lock file names inside the state directory.
JOURNAL_NAME, LOCK_NAME = "jobs.jsonl", "jobs.lock"
#: Format version written on every line; lines of another version are refused.
FORMAT_VERSION = 1
#: Jobs kept by default (on disk and for GET /jobs).
DEFAULT_KEEP = 1000
#: The file is compacted while running once this many lines per kept job were appended since the last compaction.
COMPACT_FACTOR = 16
#: The reason of a job that the server stopped before it ended.
INTERRUPTED = "interrupted"


class JournalError(ValueError):
    """The job journal cannot be used: unreadable, damaged beyond a torn last line, or held by another server."""


class ServerEventKind(StrEnum):
    """What a server line of the journal records."""

    START = "start"
    STOP = "stop"


@dataclass(frozen=True)
class ServerEvent:
    """A server start or stop. at: epoch seconds (of a stop: when the arm was halted); pid: the server's process
    id; cause: why it stopped ("SIGTERM", "shutdown"); halt_ms: milliseconds the arm's halt took;
    signal_to_halt_ms: milliseconds from the signal's arrival to the arm halted (None without a signal);
    interrupted: ids of the jobs the stop interrupted."""

    kind: ServerEventKind
    at: float
    pid: int
    cause: str = ""
    halt_ms: float | None = None
    signal_to_halt_ms: float | None = None
    interrupted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replay:
    """What a journal held: its jobs oldest first (the last snapshot of each), the ids of the jobs found unfinished
    (already turned into failed/interrupted by `JobJournal.open`, not by `read_journal`), the server events in
    order, and whether a torn last line was skipped."""

    path: Path
    jobs: tuple[JobSnapshot, ...]
    interrupted: tuple[str, ...]
    events: tuple[ServerEvent, ...]
    torn_last_line: bool

    @property
    def last_stop(self) -> ServerEvent | None:
        """The last server stop event, if any."""
        return next((e for e in reversed(self.events) if e.kind == ServerEventKind.STOP), None)


def interrupted_snapshot(snap: JobSnapshot, detail: str) -> JobSnapshot:
    """`snap` ended as failed with reason `interrupted` and `detail` (a snapshot that had ended is returned as is)."""
    if snap.done:
        return snap
    return replace(snap, state=JobState.FAILED, reason=INTERRUPTED, detail=detail)


def read_journal(path: Path) -> Replay:
    """Read the journal at `path` (an absent file is an empty journal); jobs are returned as last written, ended
    or not. JournalError for anything but a torn last line, which is skipped with a logged warning."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return Replay(path, (), (), (), False)
    except OSError as exc:
        raise JournalError(f"job journal {path}: cannot be read ({exc.strerror or exc})") from exc
    lines = blob.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    jobs: OrderedDict[str, JobSnapshot] = OrderedDict()
    events: list[ServerEvent] = []
    torn = False
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if last:
                log.warning("job journal %s: skipped a torn last line %d (%d bytes): %s", path, number, len(raw), exc)
                torn = True
                continue
            raise JournalError(
                f"job journal {path} line {number}: not a JSON line ({exc}); only a torn last line is skipped. "
                f"Move the file aside to start with an empty journal"
            ) from exc
        where = f"job journal {path} line {number}"
        entry = _parse_line(doc, where)
        if isinstance(entry, JobSnapshot):
            jobs[entry.id] = entry
        else:
            events.append(entry)
    return Replay(path, tuple(jobs.values()), (), tuple(events), torn)


class JobJournal:
    """The journal of one server in `state_dir`, keeping the last `keep` jobs (1..100000). Thread-safe.

    `open()` replays and compacts it and returns the replay; then `record` / `record_all` append job snapshots,
    `record_event` server events; `close()` releases the directory."""

    def __init__(self, state_dir: Path, keep: int = DEFAULT_KEEP) -> None:
        if not 1 <= keep <= 100_000:
            raise ValueError(f"keep must be within 1..100000 jobs, got {keep}")
        self.state_dir, self.keep = Path(state_dir), keep
        self.path = self.state_dir / JOURNAL_NAME
        self._lock = threading.Lock()
        self._fd: int | None = None  # the journal, opened O_APPEND: every line goes out in one os.write
        self._lock_fd: int | None = None
        self._latest: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._last_events: dict[ServerEventKind, ServerEvent] = {}
        self._appended = 0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Replay:
        """Take the state directory, replay the journal (unfinished jobs become failed/interrupted), rewrite it
        with the last `keep` jobs, append a start event and return the replay. JournalError when the directory
        cannot be used, another server holds it, or the file is damaged beyond a torn last line."""
        if self._fd is not None:
            raise JournalError(f"job journal {self.path} is already open")
        self._take_directory()
        try:
            replay = read_journal(self.path)
            stopped_at = _last_time(replay)
            jobs = [interrupted_snapshot(s, _interrupted_detail(s.state, stopped_at)) for s in replay.jobs]
            interrupted = tuple(s.id for s in replay.jobs if not s.done)
            if interrupted:
                log.warning(
                    "job journal %s: %d job(s) interrupted by the last stop: %s",
                    self.path,
                    len(interrupted),
                    ", ".join(interrupted),
                )
            kept = jobs[-self.keep :]
            self._latest = OrderedDict((s.id, s) for s in kept)
            self._last_events = {e.kind: e for e in replay.events}
            self._rewrite()
            self.record_event(ServerEvent(ServerEventKind.START, time.time(), os.getpid()))
        except OSError as exc:
            self.close()
            raise JournalError(f"job journal {self.path}: cannot be written ({exc.strerror or exc})") from exc
        except BaseException:
            self.close()
            raise
        return Replay(self.path, tuple(kept), interrupted, replay.events, replay.torn_last_line)

    def close(self) -> None:
        """Close the file and release the directory (idempotent)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # ------------------------------------------------------------------ writing
    def record(self, job: Job) -> None:
        """Append `job` as it is now, flushed and fsynced (OSError when the disk refuses)."""
        self.record_all((job,))

    def record_all(self, jobs: Sequence[Job]) -> None:
        """Append every job of `jobs` as it is now, in one write, flushed and fsynced. Snapshots are taken under the
        journal's lock, so the last line of a job is always its latest state whichever thread wrote first."""
        with self._lock:
            snaps = [job.snapshot() for job in jobs]
            self._append("".join(_job_line(s) for s in snaps), len(snaps))
            for snap in snaps:
                self._latest[snap.id] = snap
                self._latest.move_to_end(snap.id)
            self._forget_old()
            if self._appended > COMPACT_FACTOR * self.keep:
                try:
                    self._rewrite()
                except OSError as exc:  # the lines are written; a compaction can wait for the next try
                    log.error("job journal %s: compaction failed (the journal keeps growing): %s", self.path, exc)

    def record_new(self, jobs: Sequence[Job]) -> None:
        """`record_all` for jobs about to be queued: CellUnavailable (the API's 409) when the journal cannot be
        written, so that no job is accepted that a restart would lose."""
        try:
            self.record_all(jobs)
        except OSError as exc:
            log.error("job journal %s: cannot write: %s", self.path, exc)
            raise CellUnavailable(
                f"the job journal {self.path} cannot be written ({exc.strerror or exc}): the job was not queued; "
                "free disk space or serve with another --state-dir"
            ) from exc

    def try_record(self, job: Job) -> bool:
        """`record(job)` for a state change of a running job: a failure is logged, not raised (a job under way
        must go on: losing a line must not strand the arm). True when written."""
        try:
            self.record(job)
        except (OSError, JournalError) as exc:
            log.error("job journal %s: job %s not written: %s", self.path, job.id, exc)
            return False
        return True

    def record_stop(
        self, cause: str, halted_at: float, halt_s: float, signal_to_halt_s: float | None, interrupted: Sequence[str]
    ) -> None:
        """Append a stop event (`cause`; `halted_at`, epoch seconds when the arm was halted; seconds the halt took
        and from the signal to the arm halted; the ids of the jobs interrupted); a failure is logged, not raised
        (the server is going down anyway)."""
        since = None if signal_to_halt_s is None else round(signal_to_halt_s * 1000, 3)
        halt_ms = round(halt_s * 1000, 3)
        event = ServerEvent(ServerEventKind.STOP, halted_at, os.getpid(), cause, halt_ms, since, tuple(interrupted))
        try:
            self.record_event(event)
        except (OSError, JournalError) as exc:
            log.error("job journal %s: the stop event was not written: %s", self.path, exc)

    def record_event(self, event: ServerEvent) -> None:
        """Append a server event, flushed and fsynced."""
        with self._lock:
            self._append(_event_line(event), 1)
            self._last_events[event.kind] = event

    def snapshots(self) -> tuple[JobSnapshot, ...]:
        """The last recorded snapshot of each kept job, oldest first."""
        with self._lock:
            return tuple(self._latest.values())

    # ------------------------------------------------------------------ internals
    def _take_directory(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(
                f"state directory {self.state_dir}: cannot be used for the job journal ({exc.strerror or exc}); "
                "pass a writable directory with --state-dir"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise JournalError(
                f"state directory {self.state_dir} is in use by another sam2grasp server (pid {holder}); stop it "
                "or pass another --state-dir"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _append(self, text: str, lines: int) -> None:
        """Write `text` at the end and fsync; on a failed write the partial bytes are cut off again (best effort),
        so that a full disk cannot leave half a line in the middle of the file."""
        fd = self._fd
        if fd is None:
            raise JournalError(f"job journal {self.path} is not open (call open() first)")
        blob = text.encode("utf-8")
        size = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(blob):
                done += os.write(fd, blob[done:])
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                log.error("job journal %s: could not cut off a failed write: %s", self.path, exc)
            raise
        self._appended += lines

    def _forget_old(self) -> None:
        """Drop the oldest ended jobs beyond `keep` (a job that has not ended is never dropped)."""
        extra = len(self._latest) - self.keep
        for job_id in [i for i, s in self._latest.items() if s.done][: max(extra, 0)]:
            del self._latest[job_id]

    def _rewrite(self) -> None:
        """Replace the file atomically with the kept jobs and the last event of each kind."""
        events = sorted(self._last_events.values(), key=lambda e: e.at)
        text = "".join(_job_line(s) for s in self._latest.values())
        text += "".join(_event_line(e) for e in events)
        write_atomic(self.path, text.encode("utf-8"))  # the old file stays whole until this succeeds
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if self._fd is not None:
            os.close(self._fd)  # it pointed at the replaced file
        self._fd = fd
        self._appended = 0


# ---------------------------------------------------------------------- JSON form
_SNAPSHOT = TypeAdapter(JobSnapshot)
_EVENT = TypeAdapter(ServerEvent)


def snapshot_json(snap: JobSnapshot) -> dict[str, Any]:
    """The journal's JSON form of a snapshot (enums as their values, tuples as lists)."""
    out: dict[str, Any] = _SNAPSHOT.dump_python(snap, mode="json")
    return out


def _line(doc: dict[str, Any]) -> str:
    return json.dumps({"v": FORMAT_VERSION, **doc}, separators=(",", ":"), allow_nan=False) + "\n"


def _job_line(snap: JobSnapshot) -> str:
    return _line({"kind": "job", "job": snapshot_json(snap)})


def _event_line(event: ServerEvent) -> str:
    return _line({"kind": "server", "event": _EVENT.dump_python(event, mode="json")})


def _parse_line(doc: object, where: str) -> JobSnapshot | ServerEvent:
    """One decoded line as a snapshot or an event; JournalError naming the field and what is valid."""
    if not isinstance(doc, dict):
        raise JournalError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("v") != FORMAT_VERSION:
        raise JournalError(
            f"{where}: format version {doc.get('v')!r}; this sam2grasp reads version {FORMAT_VERSION} only"
        )
    kind = doc.get("kind")
    adapter: TypeAdapter[Any]
    if kind == "job":
        adapter, payload = _SNAPSHOT, doc.get("job")
    elif kind == "server":
        adapter, payload = _EVENT, doc.get("event")
    else:
        raise JournalError(f"{where}: field 'kind' is {kind!r}; valid: 'job' or 'server'")
    try:
        parsed: JobSnapshot | ServerEvent = adapter.validate_python(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{kind}.{'.'.join(str(p) for p in e['loc']) or '(whole)'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()[:3]
        )
        raise JournalError(f"{where}: {problems}") from exc
    return parsed


def _last_time(replay: Replay) -> float | None:
    """The latest epoch second the journal knows of (a job's creation plus its timings, or an event)."""
    times = [s.created_at + sum(v for _, v in s.timings) for s in replay.jobs] + [e.at for e in replay.events]
    return max(times) if times else None


def _interrupted_detail(state: JobState, stopped_at: float | None) -> str:
    when = ""
    if stopped_at is not None:
        when = f"; last journal entry at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stopped_at))}"
    return (
        f"the server stopped while this job was {state.value}, without a clean shutdown (killed, crashed or lost "
        f"power{when}); the job was recovered from the job journal at the next start"
    )
