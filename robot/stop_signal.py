"""A stop raised by another process and seen here without that process waiting for this one.

The server's threads share one interpreter lock; under a flood of reads a thread that has to act on a stop can
wait a hundred milliseconds and more for its turn. The stop guard (`api.stop_guard`), a small process of its own,
raises the stop in a few bytes of shared memory (a count of stops raised and the moment of the last), which the
simulation reads before every control step it takes: the arm holds from the next step whatever the server's
threads are doing. The server acknowledges each stop once it has carried it out (control loop ended, queue
cancelled); until then every control step holds the pose latched when the stop was first seen.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

#: Layout of the shared bytes: stops raised (unsigned 64-bit), monotonic seconds of the last (float 64).
_LAYOUT = struct.Struct("<Qd")


def _shared_dir() -> Path:
    """Where the shared file lives: memory-backed /dev/shm when there is one, else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class StopSignal:
    """The shared stop count, by `path` (a file of `_LAYOUT.size` bytes, mapped in every process that opens it).

    Use `create()` in the server (which owns and removes the file) and `attach(path)` in the stop guard."""

    def __init__(self, path: Path, owner: bool) -> None:
        self.path, self._owner = path, owner
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), _LAYOUT.size)
        self._acknowledged = self.raised()[0]  # stops raised before this process looked are not its business
        self._lock = threading.Lock()

    @classmethod
    def create(cls) -> StopSignal:
        """A fresh signal file (no stop raised), removed by `close`."""
        fd, name = tempfile.mkstemp(prefix="sam2grasp-stop-", dir=_shared_dir())
        try:
            os.write(fd, _LAYOUT.pack(0, 0.0))
        finally:
            os.close(fd)
        return cls(Path(name), owner=True)

    @classmethod
    def attach(cls, path: str | Path) -> StopSignal:
        """The signal the server created at `path` (FileNotFoundError or ValueError naming what is wrong)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"stop signal file {p} does not exist (the server creates it)")
        if p.stat().st_size != _LAYOUT.size:
            raise ValueError(f"stop signal file {p} holds {p.stat().st_size} bytes, expected {_LAYOUT.size}")
        return cls(p, owner=False)

    def raise_stop(self) -> tuple[int, float]:
        """Raise a stop now: (its number, `time.monotonic()` seconds when raised). The stop guard's half."""
        with self._lock:
            count = self.raised()[0] + 1
            at = time.monotonic()
            _LAYOUT.pack_into(self._map, 0, count, at)
        return count, at

    def raised(self) -> tuple[int, float]:
        """(stops raised so far, monotonic seconds of the last; 0.0 if none). ValueError once closed."""
        count, at = _LAYOUT.unpack_from(self._map, 0)
        return int(count), float(at)

    @property
    def pending(self) -> bool:
        """True while a raised stop has not been acknowledged: motion must hold (also once closed, for a step
        that still held this signal as it was let go)."""
        if self._map.closed:
            return True
        return self.raised()[0] > self._acknowledged

    def acknowledge(self, count: int) -> None:
        """Stops up to number `count` are carried out (the server's half); later ones stay pending."""
        if count > self._acknowledged:
            self._acknowledged = count

    def close(self) -> None:
        """Unmap; the owner also removes the file. Idempotent."""
        if not self._map.closed:
            self._map.close()
        if self._owner:
            self.path.unlink(missing_ok=True)
