"""The camera stream: the latest image with the target box, its mask, the planned chunk (the TCP path the queued
actions lead to) and the candidate boxes of an ambiguous command, as JPEG frames of an MJPEG stream."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from pipeline.jobs.cell import OverlayFrame
from pipeline.overlay import draw_overlay

#: Multipart boundary of the MJPEG stream.
BOUNDARY = "frame"
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
