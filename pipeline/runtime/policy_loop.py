"""The policy loop: observe, predict a chunk of actions, queue it at the observation's control tick; repeat.

Runs on its own thread beside the control loop. A predictor that raises, or a chunk of the wrong shape or with
NaN/inf, ends the policy loop and halts the control loop at once (the bad chunk never reaches the queue).
Units: seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlLoop, EndReason
from pipeline.runtime.perception_watch import PerceptionWatch, Verdict, tracked_score

F64 = npt.NDArray[np.float64]
#: Returns (frame, proprioceptive state, control tick at which the frame was observed).
Observe = Callable[[], tuple[Any, npt.NDArray[Any], int]]
log = logging.getLogger(__name__)


@runtime_checkable
class ChunkPredictor(Protocol):
    """A policy that maps one observation to a chunk of K future actions."""

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(K, 7) actions: 6 joint targets (radians) + gripper opening (metres), action i for K ticks ahead."""
        ...


class PolicyEnd(StrEnum):
    """Why a policy loop ended."""

    STOPPED = "stopped"
    CONTROL_ENDED = "control_ended"
    OBSERVE_ERROR = "observe_error"
    PREDICTOR_ERROR = "predictor_error"
    BAD_SHAPE = "bad_chunk_shape"
    NON_FINITE = "non_finite_chunk"
    TRACKER_LOST = "tracker_lost"  # the perception watch lost the target and could not get it back
    CAMERA_LOST = "camera_lost"  # the perception watch saw no fresh frame for too long


class ChunkError(ValueError):
    """A predicted chunk cannot be executed; `reason` says which check failed."""

    def __init__(self, reason: PolicyEnd, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate_chunk(chunk: object, action_dim: int = 7) -> F64:
    """The chunk as a (K, action_dim) float64 array, or ChunkError for a wrong shape or NaN/inf values."""
    try:
        arr = np.asarray(chunk, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ChunkError(PolicyEnd.BAD_SHAPE, f"chunk is not a numeric array: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != action_dim:
        raise ChunkError(PolicyEnd.BAD_SHAPE, f"chunk must have shape (K >= 1, {action_dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ChunkError(PolicyEnd.NON_FINITE, f"chunk holds {bad} NaN/inf values of {arr.size}")
    return arr


@dataclass(frozen=True)
class PolicyResult:
    """How a policy loop ended: reason, detail, chunks queued, and inference time percentiles (seconds)."""

    reason: PolicyEnd
    chunks: int
    detail: str = ""
    inference_p50_s: float = float("nan")
    inference_p99_s: float = float("nan")


class PolicyLoop:
    """Repeatedly `observe()`, `predictor.predict(frame, state)`, `queue.put(chunk, tick)`.

    control: the control loop to halt on a bad prediction (and whose end ends this loop);
    min_interval_s: seconds at least between the starts of two predictions (0 = as fast as the model runs);
    history: inference times kept; watch: the perception watch (None: frames and tracking are not watched);
    a predictor whose `coast_unseen` is true has its chunks from frames where the target was not seen left out
    while earlier chunks still cover the tick (counted in `coasted`);
    clock: seconds, the watch's time base (the camera's timestamps must be on it); retry_s: seconds to wait after
    a skipped frame.
    """

    def __init__(
        self,
        predictor: ChunkPredictor,
        observe: Observe,
        queue: ChunkQueue,
        control: ControlLoop | None = None,
        min_interval_s: float = 0.0,
        history: int = 10_000,
        watch: PerceptionWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 0.005,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0 s, got {min_interval_s}")
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.predictor, self.observe, self.queue, self.control = predictor, observe, queue, control
        self.min_interval_s = min_interval_s
        self.watch, self.clock, self.retry_s = watch, clock, retry_s
        self._times: deque[float] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: PolicyResult | None = None
        self._skipped = False
        self.chunks = 0
        #: predictions left out of the queue because the target was not seen in their frame (see `_coasts`)
        self.coasted = 0

    @property
    def result(self) -> PolicyResult | None:
        """The end state, once ended."""
        return self._result

    def inference_times(self) -> F64:
        """Seconds per `predict` call, oldest first (at most `history`)."""
        with self._lock:
            return np.array(self._times, dtype=np.float64)

    def start(self) -> None:
        """Run on its own (daemon) thread."""
        if self._thread is not None:
            raise RuntimeError("this PolicyLoop was already started; build a new one per run")
        self._thread = threading.Thread(target=self.run, name="policy-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end after the prediction in progress (it is then not queued)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> PolicyResult | None:
        """Wait up to `timeout_s` seconds for the end; the result, or None if still running."""
        self._done.wait(timeout_s)
        return self._result

    def _running(self) -> bool:
        return not self._stop.is_set() and not (self.control is not None and self.control.done)

    def run(self) -> PolicyResult:
        """The loop itself (blocking)."""
        reason, detail = PolicyEnd.STOPPED, ""
        try:
            while self._running():
                started = time.perf_counter()
                end = self.step()
                if end is not None:
                    reason, detail = end
                    break
                wait = max(self.min_interval_s - (time.perf_counter() - started), 0.0)
                if self._skipped:
                    wait = max(wait, self.retry_s)
                if wait > 0 and self._stop.wait(wait):
                    break
            stopped_by_control = self.control is not None and self.control.done and not self._stop.is_set()
            if reason == PolicyEnd.STOPPED and stopped_by_control:
                reason = PolicyEnd.CONTROL_ENDED
        except Exception as exc:
            reason, detail = PolicyEnd.PREDICTOR_ERROR, f"policy loop raised {type(exc).__name__}: {exc}"
        finally:
            self._result = self.finish(reason, detail)
        return self._result

    def step(self) -> tuple[PolicyEnd, str] | None:
        """One iteration: observe, (watch the frame,) predict, validate, (watch the track,) queue. Returns None to go
        on, or why the loop must end (then call `finish`)."""
        watch, control = self.watch, self.control
        self._skipped = False
        started = time.perf_counter()
        problem = ""
        try:
            frame, state, tick = self.observe()
        except TimeoutError as exc:
            if watch is None:
                return PolicyEnd.OBSERVE_ERROR, f"observe() raised {type(exc).__name__}: {exc}"
            frame, state, tick, problem = None, None, 0, f"camera timed out: {exc}"
        except Exception as exc:
            return PolicyEnd.OBSERVE_ERROR, f"observe() raised {type(exc).__name__}: {exc}"
        if watch is not None:
            seen = watch.check_frame(frame, self.clock(), problem)
            if seen.verdict == Verdict.END:
                return PolicyEnd.CAMERA_LOST, seen.detail
            if seen.verdict == Verdict.SKIP:
                self._skipped = True
                if control is not None:
                    control.heartbeat()
                return None
        if state is None:  # only a skipped observation has no state, and it returned above
            return PolicyEnd.OBSERVE_ERROR, "observe() gave no state"
        try:
            raw = self.predictor.predict(frame, state)
        except Exception as exc:
            return PolicyEnd.PREDICTOR_ERROR, f"predict() raised {type(exc).__name__}: {exc}"
        finally:
            self._record(time.perf_counter() - started)
        try:
            chunk = validate_chunk(raw, self.queue.action_dim)
        except ChunkError as exc:
            return exc.reason, str(exc)
        if watch is not None:
            score, box = tracked_score(self.predictor)
            verdict = watch.check_track(score, box, self.clock(), frame)
            if verdict.verdict == Verdict.END:
                return PolicyEnd.TRACKER_LOST, verdict.detail
            if verdict.verdict in (Verdict.HOLD, Verdict.REGROUND):
                if control is not None:
                    control.hold()
                self.queue.clear()
                if verdict.verdict == Verdict.REGROUND and verdict.box is not None:
                    reprompt = getattr(self.predictor, "reprompt", None)
                    if reprompt is None:
                        return PolicyEnd.TRACKER_LOST, f"{verdict.detail}; the predictor cannot be prompted again"
                    reprompt(verdict.box)
                log.warning("perception watch: %s (%s)", verdict.verdict.value, verdict.detail)
                return None
            if control is not None and control.holding:
                control.resume()
                log.info("perception watch: target seen again, resuming")
        if not self._running():
            return None
        if self._coasts(tick):
            self.coasted += 1
            return None
        if self.queue.put(chunk, tick):
            self.chunks += 1
        return None

    def _coasts(self, tick: int) -> bool:
        """True when this chunk is left out because the tracker did not see the target in its frame, the predictor
        asks for that (`coast_unseen`, as `SAM2GraspAgent` does) and earlier chunks still cover `tick`: the control
        loop goes on ensembling those instead of a chunk predicted from features the head never trained on."""
        if not getattr(self.predictor, "coast_unseen", False):
            return False
        step = getattr(self.predictor, "last_step", None)
        if step is None or getattr(step, "visible", True):
            return False
        return self.queue.covers(tick)

    def finish(self, reason: PolicyEnd, detail: str) -> PolicyResult:
        """Record the end; halt the control loop with the matching reason when this loop failed."""
        if reason not in (PolicyEnd.STOPPED, PolicyEnd.CONTROL_ENDED):
            log.error("policy loop failed (%s): %s", reason.value, detail)
            if self.control is not None:
                end = _CONTROL_REASON.get(reason, EndReason.POLICY_FAILED)
                self.control.stop(end, f"{reason.value}: {detail}")
        times = self.inference_times()
        p50, p99 = np.percentile(times, [50, 99]) if times.size else (float("nan"), float("nan"))
        self._result = PolicyResult(reason, self.chunks, detail, float(p50), float(p99))
        self._done.set()
        return self._result

    def _record(self, seconds: float) -> None:
        with self._lock:
            self._times.append(seconds)


#: How a policy-loop end halts the control loop (the rest end it with "policy_failed").
_CONTROL_REASON = {PolicyEnd.TRACKER_LOST: EndReason.TRACKER_LOST, PolicyEnd.CAMERA_LOST: EndReason.CAMERA_LOST}
