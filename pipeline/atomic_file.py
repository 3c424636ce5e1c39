"""Atomic file writes: a reader sees the old file or the whole new one, never a part (temp file + os.replace)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.dataset.video import fsync_file


def write_atomic(path: Path, blob: bytes, *, durable: bool = True) -> int:
    """Write `blob` to `path` through a unique temp file and os.replace (fsynced when `durable`); return its bytes.

    A failed write (a full disk: ENOSPC, a file-size limit: EFBIG) leaves `path` as it was, removes the temp file
    and raises OSError naming `path` (the bare error of a write names no file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        what = exc.strerror or type(exc).__name__
        raise OSError(exc.errno, f"{what}: cannot write {len(blob)} bytes to {path} (left as it was)") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_file(path.parent)
    return len(blob)


def write_json(
    path: Path, doc: Any, *, durable: bool = True, default: Callable[[Any], Any] | None = None, sort_keys: bool = False
) -> None:
    """Write `doc` as indented JSON text, atomically (`default` converts values JSON cannot hold)."""
    text = json.dumps(doc, indent=2, default=default, sort_keys=sort_keys) + "\n"
    write_atomic(path, text.encode(), durable=durable)
