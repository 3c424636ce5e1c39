"""The camera stream: the latest image with the target box, its mask, the planned chunk (the TCP path the queued
actions lead to) and the candidate boxes of an ambiguous command, as JPEG frames of an MJPEG stream.

Each stream encodes its own JPEGs, so the number of viewers served at once is capped (`ViewerGate`, default 4):
one more is answered 503 with a Retry-After header. A viewer's slot is given back when its stream ends, its
client goes away, or the server shuts down.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import anyio.to_thread
import numpy as np
import numpy.typing as npt
from fastapi import HTTPException
from PIL import Image, ImageDraw

from pipeline.jobs.cell import OverlayFrame
from pipeline.overlay import draw_overlay

#: Multipart boundary of the MJPEG stream.
BOUNDARY = "frame"
#: Viewers one server streams to at once unless configured otherwise.
DEFAULT_MAX_VIEWERS = 4
#: Largest viewer cap accepted (each viewer costs a JPEG encode per frame).
MAX_VIEWERS_LIMIT = 64
#: Environment variable that sets the viewer cap of the servers of this process (1..64).
MAX_VIEWERS_ENV = "SAM2GRASP_STREAM_MAX_VIEWERS"
#: Seconds a refused viewer is told to wait before it tries again (the Retry-After header).
RETRY_AFTER_S = 5
_CHUNK_COLOUR = (255, 200, 0)
_CANDIDATE_COLOUR = (255, 64, 255)


def render_frame(frame: OverlayFrame) -> npt.NDArray[np.uint8]:
    """The frame's image with every overlay drawn, (H, W, 3) uint8."""
    out = draw_overlay(frame.rgb, box=frame.box, mask=frame.mask, caption=frame.caption)
    if frame.chunk_px is None and not frame.candidates:
        return out
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    if frame.chunk_px is not None and len(frame.chunk_px) > 0:
        points = [(float(u), float(v)) for u, v in frame.chunk_px]
        if len(points) > 1:
            draw.line(points, fill=_CHUNK_COLOUR, width=2)
        u, v = points[-1]
        draw.ellipse([u - 3, v - 3, u + 3, v + 3], outline=_CHUNK_COLOUR, width=2)
    for i, (x0, y0, x1, y1) in enumerate(frame.candidates):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=_CANDIDATE_COLOUR, width=2)
        draw.rectangle([x0, max(0.0, y0 - 12), x0 + 10, y0], fill=_CANDIDATE_COLOUR)
        draw.text((x0 + 2, max(0.0, y0 - 12)), str(i), fill=(0, 0, 0))
    return np.asarray(image, dtype=np.uint8)


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 80) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def mjpeg_frames(
    latest: Callable[[], OverlayFrame | None],
    fps: float,
    frames: int | None,
    closing: threading.Event,
    idle_resend_s: float = 1.0,
    gate: ViewerGate | None = None,
) -> Iterator[bytes]:
    """The MJPEG stream (`mjpeg_parts`) of one more viewer of `gate` (default: `gate_for(closing)`, the app's):
    raises StreamFull (503, Retry-After) at once when every slot is taken; the slot is given back when the stream
    ends, its client goes away, or the server shuts down (`closing`)."""
    the_gate = gate if gate is not None else gate_for(closing)
    the_gate.enter()
    return _Viewer(mjpeg_parts(latest, fps, frames, closing, idle_resend_s), the_gate)


def mjpeg_parts(
    latest: Callable[[], OverlayFrame | None],
    fps: float,
    frames: int | None,
    closing: threading.Event,
    idle_resend_s: float = 1.0,
) -> Iterator[bytes]:
    """Multipart parts of the MJPEG stream: a new part when the image changes (at most `fps` per second) or
    every `idle_resend_s` seconds while it does not; ends after `frames` parts (None: until `closing`)."""
    sent, last_seq, last_time = 0, -1, 0.0
    period = 1.0 / fps
    while not closing.is_set() and (frames is None or sent < frames):
        frame = latest()
        now = time.monotonic()
        if frame is not None and (frame.seq != last_seq or now - last_time >= idle_resend_s):
            jpeg = encode_jpeg(render_frame(frame))
            head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            # each part ends with the next boundary, so a browser shows it at once instead of one part late
            opening = f"--{BOUNDARY}\r\n".encode() if sent == 0 else b""
            yield opening + head.encode() + jpeg + f"\r\n--{BOUNDARY}\r\n".encode()
            sent, last_seq, last_time = sent + 1, frame.seq, now
        closing.wait(period)


class StreamFull(HTTPException):
    """Every viewer slot of the stream is taken: 503 with Retry-After (seconds) and a message saying what to do."""

    def __init__(self, capacity: int) -> None:
        super().__init__(
            503,
            detail=(
                f"the camera stream already has {capacity} viewer(s), the most it serves at once: close another "
                f"viewer, or retry in {RETRY_AFTER_S} s (the cap is set by {MAX_VIEWERS_ENV}, 1..{MAX_VIEWERS_LIMIT})"
            ),
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def validate_max_viewers(value: int) -> int:
    """`value` if it is a viewer cap within 1..64; ValueError naming the valid range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VIEWERS_LIMIT:
        raise ValueError(f"the stream's viewer cap must be a whole number within 1..{MAX_VIEWERS_LIMIT}, got {value!r}")
    return value


def max_viewers_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The viewer cap set by SAM2GRASP_STREAM_MAX_VIEWERS, else DEFAULT_MAX_VIEWERS; ValueError when it is set to
    anything but a whole number within 1..64."""
    raw = (os.environ if environ is None else environ).get(MAX_VIEWERS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VIEWERS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{MAX_VIEWERS_ENV}={raw!r} is not a whole number; valid: 1..{MAX_VIEWERS_LIMIT} viewers"
        ) from None
    try:
        return validate_max_viewers(value)
    except ValueError as exc:
        raise ValueError(f"{MAX_VIEWERS_ENV}: {exc}") from None


class ViewerGate:
    """Counts the viewers of one server's stream (thread-safe): `enter()` takes a slot or raises StreamFull."""

    def __init__(self, capacity: int = DEFAULT_MAX_VIEWERS) -> None:
        self.capacity = validate_max_viewers(capacity)
        self._lock = threading.Lock()
        self._viewers = 0

    @property
    def viewers(self) -> int:
        """Viewers being served now."""
        with self._lock:
            return self._viewers

    def enter(self) -> None:
        """Take a slot; StreamFull (503) when all `capacity` are taken."""
        with self._lock:
            if self._viewers >= self.capacity:
                raise StreamFull(self.capacity)
            self._viewers += 1

    def leave(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._viewers = max(0, self._viewers - 1)


_gates: weakref.WeakKeyDictionary[threading.Event, ViewerGate] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def gate_for(closing: threading.Event) -> ViewerGate:
    """The viewer gate of the server whose shutdown event is `closing` (one per app), made on first use with the
    cap of `max_viewers_from_env()`."""
    with _gates_lock:
        gate = _gates.get(closing)
        if gate is None:
            gate = _gates[closing] = ViewerGate(max_viewers_from_env())
        return gate


class _Viewer(Iterator[bytes], AsyncIterator[bytes]):
    """One viewer's parts, iterated by the server asynchronously (each part made on a worker thread) or plainly;
    holds its gate slot until the parts end, the server's iteration is cancelled (the client went away), `close()`,
    or the object is dropped unstarted (the client went away before the body began)."""

    def __init__(self, parts: Iterator[bytes], gate: ViewerGate) -> None:
        self._parts, self._gate = parts, gate
        self._lock = threading.Lock()
        self._held = True

    def __next__(self) -> bytes:
        try:
            return next(self._parts)
        except BaseException:
            self.close()
            raise

    def __aiter__(self) -> _Viewer:
        return self

    async def __anext__(self) -> bytes:
        try:
            part = await anyio.to_thread.run_sync(self._next_or_none)
        except BaseException:  # an error, or a cancellation (the client disconnected)
            self.close()
            raise
        if part is None:
            self.close()
            raise StopAsyncIteration
        return part

    def _next_or_none(self) -> bytes | None:
        return next(self._parts, None)

    def close(self) -> None:
        """End the stream and give the slot back (idempotent)."""
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._gate.leave()
            close = getattr(self._parts, "close", None)
            # ValueError: the parts are being produced on another thread right now; they end when dropped
            if callable(close):
                with contextlib.suppress(ValueError):
                    close()

    def __del__(self) -> None:
        self.close()
