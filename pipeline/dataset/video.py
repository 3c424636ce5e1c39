"""Video files of a dataset, through PyAV.

RGB: H.264 (libx264, yuv420p, constant-quality `crf`), one video frame per dataset frame, frame rate = fps.
Depth: lossless FFV1 with 16-bit grey pixels (`gray16le`, millimetres) in a Matroska container.
Writers fsync the file before returning, so a caller can `os.replace` it into place durably.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar

import av
import numpy as np
import numpy.typing as npt

#: Default constant-rate factor of the RGB videos (lower = better quality; 18 is visually lossless).
DEFAULT_CRF = 18

_Pixel = TypeVar("_Pixel", bound=np.generic)


@dataclass(frozen=True)
class VideoInfo:
    """Header facts of a video file: frame count (counted packets), size in pixels, codec name."""

    frames: int
    width: int
    height: int
    codec: str


def _rate(fps: float) -> Fraction:
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0 (frames per second), got {fps!r}")
    return Fraction(fps).limit_denominator(1_000_000)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk (os.fsync through a read-only descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_rgb(frame: npt.NDArray[np.uint8], index: int, size: tuple[int, int] | None) -> tuple[int, int]:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frame {index}: expected (H, W, 3) uint8, got shape {arr.shape} dtype {arr.dtype}")
    height, width = int(arr.shape[0]), int(arr.shape[1])
    if size is None:
        if height % 2 or width % 2 or height == 0 or width == 0:
            raise ValueError(f"H.264 (yuv420p) needs a positive even width and height, got {width}x{height} (W x H)")
    elif (height, width) != size:
        raise ValueError(f"frame {index}: size {height}x{width} differs from frame 0's {size[0]}x{size[1]}")
    return height, width


def _check_depth(frame: npt.NDArray[np.uint16], index: int, size: tuple[int, int] | None) -> tuple[int, int]:
    arr = np.asarray(frame)
    if arr.dtype != np.uint16 or arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"depth frame {index}: expected non-empty (H, W) uint16, got {arr.shape} {arr.dtype}")
    if size is not None and arr.shape != size:
        raise ValueError(f"depth frame {index}: shape {arr.shape} differs from frame 0's {size}")
    return int(arr.shape[0]), int(arr.shape[1])


def _write_video(
    path: Path,
    frames: Iterable[npt.NDArray[Any]],
    fps: float,
    *,
    check: Callable[[npt.NDArray[Any], int, tuple[int, int] | None], tuple[int, int]],
    codec: Literal["libx264", "ffv1"],
    pix_fmt: str,
    frame_format: str,
    options: dict[str, object] | None,
    container_format: str,
    what: str,
) -> int:
    """Encode `frames` (each checked by `check` against frame 0's size) as one `codec` stream of `pix_fmt` pixels,
    reading every array as `frame_format`; fsync the file and return the frame count."""
    rate = _rate(fps)
    count = 0
    size: tuple[int, int] | None = None
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = None
        for index, frame in enumerate(frames):
            size = check(frame, index, size)
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = size
                stream.pix_fmt = pix_fmt
                if options is not None:
                    stream.options = options
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=frame_format)
            video_frame.pts = index
            video_frame.time_base = 1 / rate
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is None:
            raise ValueError(f"cannot write a {what} with no frames")
        container.mux(stream.encode(None))
    fsync_file(path)
    return count


def _iter_video(path: Path, frame_format: str, dtype: type[_Pixel]) -> Iterator[npt.NDArray[_Pixel]]:
    """Yield the frames of a video's first stream one at a time, as `frame_format` arrays of `dtype`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield np.asarray(frame.to_ndarray(format=frame_format), dtype=dtype)


def _stack(path: Path, frames: Iterable[npt.NDArray[_Pixel]], what: str) -> npt.NDArray[_Pixel]:
    """All the frames stacked on a new first axis; a ValueError naming the `what` when there are none."""
    decoded = list(frames)
    if not decoded:
        raise ValueError(f"{path}: the {what} holds no frames")
    return np.stack(decoded)


def write_rgb_video(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint8]],
    fps: float,
    *,
    crf: int = DEFAULT_CRF,
    container_format: str = "mp4",
) -> int:
    """Encode (H, W, 3) uint8 RGB frames to an H.264 file at `fps` frames per second; return the frame count.

    Width and height must be even (yuv420p). The file is fsynced before returning.
    """
    return _write_video(
        path,
        frames,
        fps,
        check=_check_rgb,
        codec="libx264",
        pix_fmt="yuv420p",
        frame_format="rgb24",
        options={"crf": str(crf)},
        container_format=container_format,
        what="video",
    )


def iter_rgb_video(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    """Yield the (H, W, 3) uint8 RGB frames of a video one at a time, in display order."""
    return _iter_video(path, "rgb24", np.uint8)


def read_rgb_video(path: Path) -> npt.NDArray[np.uint8]:
    """Decode a whole RGB video into a (T, H, W, 3) uint8 array."""
    return _stack(path, iter_rgb_video(path), "video")


def write_depth_video(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint16]],
    fps: float,
    *,
    container_format: str = "matroska",
) -> int:
    """Encode (H, W) uint16 depth frames (millimetres) losslessly (FFV1, gray16le); return the frame count."""
    return _write_video(
        path,
        frames,
        fps,
        check=_check_depth,
        codec="ffv1",
        pix_fmt="gray16le",
        frame_format="gray16le",
        options=None,
        container_format=container_format,
        what="depth video",
    )


def iter_depth_video(path: Path) -> Iterator[npt.NDArray[np.uint16]]:
    """Yield the (H, W) uint16 depth frames (millimetres) of a depth video one at a time."""
    return _iter_video(path, "gray16le", np.uint16)


def read_depth_video(path: Path) -> npt.NDArray[np.uint16]:
    """Decode a whole depth video into a (T, H, W) uint16 array (millimetres), bit-exact."""
    return _stack(path, iter_depth_video(path), "depth video")


def probe_video(path: Path) -> VideoInfo:
    """Count the frames of a video by demuxing its packets (no decoding) and read its size and codec."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        return VideoInfo(
            frames=frames,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            codec=str(stream.codec_context.name),
        )
