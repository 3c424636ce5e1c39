"""The camera-to-base calibration file: a versioned JSON document, validated on load.

```json
{"format_version": 1, "camera_serial": "123456789012", "T_base_camera": [[...4 rows of 4...]],
 "reprojection_rms_px": 0.41, "date": "2026-11-28T09:00:00+00:00", "n_views": 12}
```
T_base_camera maps points from the camera frame (OpenCV axes: x right, y down, z forward) to the robot base frame;
its translation is in metres. Every way a file can be wrong raises a `CalibrationFileError` subclass saying what
was wrong and what is valid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: Version of the file format this build writes and reads.
FORMAT_VERSION = 1
#: Largest plausible camera distance from the robot base, metres (a larger one is most likely millimetres).
MAX_TRANSLATION_M = 5.0
#: Tolerance on orthonormality and on det(R) = 1.
ROTATION_TOL = 1e-4


class CalibrationFileError(ValueError):
    """A calibration file that cannot be used."""


class CalibrationFormatError(CalibrationFileError):
    """Not JSON, or a field missing or of the wrong type."""


class CalibrationVersionError(CalibrationFileError):
    """A format version this build does not read."""


class CalibrationCameraMismatchError(CalibrationFileError):
    """The file belongs to another camera (serial number differs)."""


class NotARotationError(CalibrationFileError):
    """The rotation part of T_base_camera is not orthonormal with determinant +1."""


class CalibrationUnitsError(CalibrationFileError):
    """The translation is implausibly large: most likely millimetres written where metres belong."""


@dataclass(frozen=True)
class CameraCalibration:
    """A validated calibration: camera_serial; T_base_camera (4x4, metres); reprojection_rms_px (pixels);
    date (ISO 8601 with time zone); n_views: board views used."""

    camera_serial: str
    T_base_camera: F64
    reprojection_rms_px: float
    date: str
    n_views: int = 0

    def __post_init__(self) -> None:
        validate_transform(self.T_base_camera)
        if not self.camera_serial.strip():
            raise CalibrationFormatError("camera_serial must be a non-empty string")
        if not (math.isfinite(self.reprojection_rms_px) and self.reprojection_rms_px >= 0):
            raise CalibrationFormatError(
                f"reprojection_rms_px must be a finite number of pixels >= 0, got {self.reprojection_rms_px}"
            )
        try:
            parsed = datetime.fromisoformat(self.date)
        except ValueError:
            raise CalibrationFormatError(
                f"date must be ISO 8601 (e.g. 2026-11-28T09:00:00+00:00), got {self.date!r}"
            ) from None
        if parsed.tzinfo is None:
            raise CalibrationFormatError(f"date must carry a time zone (e.g. +00:00), got {self.date!r}")
        if self.n_views < 0:
            raise CalibrationFormatError(f"n_views must be >= 0, got {self.n_views}")

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {
            "format_version": FORMAT_VERSION,
            "camera_serial": self.camera_serial,
            "T_base_camera": [[float(v) for v in row] for row in self.T_base_camera],
            "reprojection_rms_px": float(self.reprojection_rms_px),
            "date": self.date,
            "n_views": int(self.n_views),
        }


def validate_transform(t: F64) -> None:
    """Raise unless `t` is a 4x4 rigid transform with a proper rotation and a translation in metres."""
    m = np.asarray(t, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise CalibrationFormatError(f"T_base_camera must be a 4x4 matrix of finite numbers, got shape {m.shape}")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise CalibrationFormatError(f"T_base_camera's last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    rot = m[:3, :3]
    off = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if off > ROTATION_TOL:
        raise NotARotationError(
            f"T_base_camera's 3x3 block is not orthonormal (R^T R deviates from I by {off:.3g}, tolerance "
            f"{ROTATION_TOL}): it must be a rotation matrix"
        )
    det = float(np.linalg.det(rot))
    if abs(det - 1.0) > ROTATION_TOL:
        raise NotARotationError(
            f"T_base_camera's rotation has determinant {det:.6f}; a rotation has +1 (-1 is a mirror: check the "
            "handedness of the axes)"
        )
    dist = float(np.linalg.norm(m[:3, 3]))
    if dist > MAX_TRANSLATION_M:
        raise CalibrationUnitsError(
            f"the camera is {dist:.4g} m from the robot base; translations are metres and a cell camera is within "
            f"{MAX_TRANSLATION_M} m (was it written in millimetres? then it is {dist / 1000:.4g} m)"
        )


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in obj:
        raise CalibrationFormatError(f"calibration file lacks the field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CalibrationFormatError(f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def parse_calibration(text: str, expected_serial: str | None = None) -> CameraCalibration:
    """A validated calibration from the file's text; `expected_serial`: refuse a file made for another camera."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationFormatError(f"calibration file is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CalibrationFormatError("calibration file must hold one JSON object")
    version = _field(obj, "format_version", int)
    if version != FORMAT_VERSION:
        raise CalibrationVersionError(
            f"calibration format version {version} is not supported; this build reads version {FORMAT_VERSION} "
            "(recalibrate with `sam2grasp calibrate`)"
        )
    serial = _field(obj, "camera_serial", str)
    if expected_serial is not None and serial != expected_serial:
        raise CalibrationCameraMismatchError(
            f"calibration file is for camera {serial!r}, but the connected camera is {expected_serial!r}: "
            "calibrate this camera or pass the file made for it"
        )
    rows = _field(obj, "T_base_camera", list)
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationFormatError(f"T_base_camera must be 4 rows of 4 numbers: {exc}") from exc
    views = obj.get("n_views", 0)
    if isinstance(views, bool) or not isinstance(views, int | float) or not float(views).is_integer():
        raise CalibrationFormatError(f"field 'n_views' must be a whole number of board views, got {views!r}")
    return CameraCalibration(
        camera_serial=serial,
        T_base_camera=matrix,
        reprojection_rms_px=float(_field(obj, "reprojection_rms_px", (int, float))),
        date=_field(obj, "date", str),
        n_views=int(views),
    )


def load_calibration(path: str | Path, expected_serial: str | None = None) -> CameraCalibration:
    """Read and validate a calibration file (see `parse_calibration`); every error names the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"calibration file {p} does not exist; create it with `sam2grasp calibrate`")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationFormatError(f"{p}: not a calibration file (not UTF-8 JSON text: {exc})") from None
    try:
        return parse_calibration(text, expected_serial)
    except CalibrationFileError as exc:
        raise type(exc)(f"{p}: {exc}") from exc


def save_calibration(path: str | Path, calibration: CameraCalibration) -> Path:
    """Write the file atomically (a crash never leaves a half-written file); returns its path."""
    from pipeline.atomic_file import write_json  # the project's one atomic writer (temp file, fsync, replace)

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, calibration.to_json())
    return p
