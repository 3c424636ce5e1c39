"""A thread-safe queue of action chunks indexed by control tick.

The policy thread puts a chunk of K actions predicted from the observation taken at control tick `start_tick`:
action i of the chunk is meant for tick `start_tick + i`. The control thread asks for every prediction that
covers the current tick and ensembles them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: One prediction for a tick: the action (7,) and its age in ticks (tick - the chunk's start tick).
Prediction = tuple[F64, int]


@dataclass(frozen=True)
class _Chunk:
    start: int
    actions: F64

    @property
    def end(self) -> int:
        """Last tick this chunk covers."""
        return self.start + len(self.actions) - 1


class ChunkQueue:
    """Chunks indexed by control tick, shared by one producer and one consumer thread.

    action_dim: numbers per action (6 joint targets in radians + gripper opening in metres = 7);
    max_chunks: chunks kept at most (the oldest go first);
    staleness_ticks: a chunk put whose start tick is more than this many ticks before the current tick (the
    latest tick passed to `drop_before` / `predictions_for`) is dropped; None keeps every chunk that still
    covers the current tick.
    """

    def __init__(self, action_dim: int = 7, max_chunks: int = 64, staleness_ticks: int | None = None) -> None:
        if action_dim < 1:
            raise ValueError(f"action_dim must be at least 1, got {action_dim}")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
        if staleness_ticks is not None and staleness_ticks < 0:
            raise ValueError(f"staleness_ticks must be >= 0 ticks or None, got {staleness_ticks}")
        self.action_dim = action_dim
        self.max_chunks = max_chunks
        self.staleness_ticks = staleness_ticks
        self._chunks: deque[_Chunk] = deque()
        self._lock = threading.Lock()
        self._tick = 0
        self.put_count = 0
        self.stale_dropped = 0
        self.overflow_dropped = 0

    @property
    def current_tick(self) -> int:
        """The latest tick the consumer asked about."""
        with self._lock:
            return self._tick

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)

    def put(self, chunk: npt.ArrayLike, start_tick: int) -> bool:
        """Store `chunk` (K, action_dim) whose action i is for tick `start_tick + i`. Returns False (and keeps
        nothing) when the chunk is stale or ends before the current tick. Raises ValueError for a wrong shape or
        non-finite values."""
        arr = np.array(chunk, dtype=np.float64, copy=True)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != self.action_dim:
            raise ValueError(f"chunk must have shape (K >= 1, {self.action_dim}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("chunk holds NaN or inf; a policy output like this must never reach the arm")
        item = _Chunk(int(start_tick), arr)
        with self._lock:
            too_old = self.staleness_ticks is not None and self._tick - item.start > self.staleness_ticks
            if too_old or item.end < self._tick:
                self.stale_dropped += 1
                return False
            self._chunks.append(item)
            self.put_count += 1
            while len(self._chunks) > self.max_chunks:
                self._drop_oldest()
        return True

    def _drop_oldest(self) -> None:
        oldest = min(range(len(self._chunks)), key=lambda j: self._chunks[j].start)
        del self._chunks[oldest]
        self.overflow_dropped += 1

    def predictions_for(self, tick: int, max_age: int | None = None) -> list[Prediction]:
        """Every stored action for `tick` with its age (ticks since its chunk's start), oldest first. `max_age`
        (ticks) leaves out older predictions. Also advances the current tick to `tick`."""
        with self._lock:
            self._tick = max(self._tick, tick)
            found = [
                (c.actions[tick - c.start].copy(), tick - c.start)
                for c in sorted(self._chunks, key=lambda c: c.start)
                if c.start <= tick <= c.end and (max_age is None or tick - c.start <= max_age)
            ]
        return found

    def covers(self, tick: int) -> bool:
        """True when a stored chunk holds an action for `tick`."""
        with self._lock:
            return any(c.start <= tick <= c.end for c in self._chunks)

    def drop_before(self, tick: int) -> int:
        """Drop chunks that cover no tick at or after `tick`; advances the current tick. Returns how many went."""
        with self._lock:
            self._tick = max(self._tick, tick)
            before = len(self._chunks)
            self._chunks = deque(c for c in self._chunks if c.end >= tick)
            return before - len(self._chunks)

    def clear(self) -> None:
        """Drop every chunk (the current tick is kept)."""
        with self._lock:
            self._chunks.clear()
