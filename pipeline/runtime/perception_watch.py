"""Perception watch: decides, frame by frame, whether the camera and the tracker still see the target.

The policy loop asks it twice per observation. `check_frame` looks at the camera: a frame that is missing (None,
or the camera raised TimeoutError), frozen (the same timestamp again) or late (older than `max_frame_age_s`) is
skipped; when no fresh frame came for longer than `camera_timeout_s` the run ends with "camera_lost".
`check_track` looks at the tracker's object score after the prediction: below the threshold for `lost_frames`
frames in a row, the watch acts as configured — "hold" (the arm holds and the watch waits up to `hold_s` seconds
for the object to come back), "reground" (a supplied callback returns a new prompt box, at most `max_regrounds`
times) or "fail" — and ends with "tracker_lost" when that does not bring the object back. Black frames
(occlusion) are not special: the object score of each frame decides, so a tracker whose memory still carries
the object keeps the run going. Times in seconds on the caller's clock (wall or simulated), boxes in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: Given the current frame, returns a new prompt box (x0, y0, x1, y1 pixels) for the target, or None if not found.
Reground = Callable[[Any], npt.ArrayLike | None]


class LossAction(StrEnum):
    """What the watch does once the tracker has lost the target for `lost_frames` frames."""

    HOLD = "hold"
    REGROUND = "reground"
    FAIL = "fail"


class WatchReason(StrEnum):
    """Why a watch ended the run."""

    TRACKER_LOST = "tracker_lost"
    CAMERA_LOST = "camera_lost"


class Verdict(StrEnum):
    """What the policy loop does with the current observation."""

    RUN = "run"  # queue the chunk
    SKIP = "skip"  # unusable frame: predict nothing, the arm keeps executing what is queued
    HOLD = "hold"  # target lost: queue nothing and make the arm hold still
    REGROUND = "reground"  # prompt the tracker again with `box`, and hold meanwhile
    END = "end"  # end the run with `reason`


@dataclass(frozen=True)
class WatchDecision:
    """A verdict, with the reason ("tracker_lost" / "camera_lost" for END), a detail and, for REGROUND, the box."""

    verdict: Verdict
    reason: str = ""
    detail: str = ""
    box: F64 | None = None


_RUN = WatchDecision(Verdict.RUN)


@dataclass(frozen=True)
class WatchConfig:
    """Settings of the perception watch.

    score_threshold: object-score logit above which the target counts as seen; lost_frames: consecutive frames
    at or below it before the loss action; on_loss: "hold", "reground" or "fail"; hold_s: seconds a hold waits for
    the target; max_regrounds: re-grounding attempts per run; recover_frames: consecutive frames with the target
    seen that end a hold; max_box_jump_px: a tracked box whose centre moves more than this many pixels from the
    last seen one counts as lost (identity switch; None = not checked); camera_timeout_s: seconds without a fresh
    frame before "camera_lost"; max_frame_age_s: a frame older than this (now − its timestamp, seconds) is late
    and skipped.
    """

    score_threshold: float = 0.0
    lost_frames: int = 10
    on_loss: LossAction | str = LossAction.HOLD
    hold_s: float = 2.0
    max_regrounds: int = 2
    recover_frames: int = 1
    max_box_jump_px: float | None = None
    camera_timeout_s: float = 0.5
    max_frame_age_s: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.on_loss, LossAction):
            try:
                object.__setattr__(self, "on_loss", LossAction(str(self.on_loss)))
            except ValueError:
                valid = ", ".join(a.value for a in LossAction)
                raise ValueError(f"on_loss must be one of {valid}, got {self.on_loss!r}") from None
        if not math.isfinite(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite logit, got {self.score_threshold}")
        if self.lost_frames < 1 or self.recover_frames < 1:
            raise ValueError(
                f"lost_frames and recover_frames must be >= 1 frame, got {self.lost_frames}, {self.recover_frames}"
            )
        if self.max_regrounds < 0:
            raise ValueError(f"max_regrounds must be >= 0, got {self.max_regrounds}")
        for name in ("hold_s", "camera_timeout_s", "max_frame_age_s"):
            value = getattr(self, name)
            if not 0.0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.max_box_jump_px is not None and not self.max_box_jump_px > 0:
            raise ValueError(f"max_box_jump_px must be None or > 0 pixels, got {self.max_box_jump_px}")


def frame_timestamp(frame: Any) -> float | None:
    """Capture time of a frame, seconds: `timestamp_s` (camera frames) or `time` (simulator observations)."""
    for name in ("timestamp_s", "time"):
        value = getattr(frame, name, None)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def tracked_score(predictor: Any) -> tuple[float | None, F64 | None]:
    """(object score logit, box pixels) of the predictor's last tracker step, read from `last_step`; (None, None)
    for a predictor without one (the track is then not watched)."""
    step = getattr(predictor, "last_step", None)
    score = getattr(step, "object_score", None)
    if score is None:
        return None, None
    box = getattr(step, "box", None)
    return float(score), None if box is None else np.asarray(box, dtype=np.float64)


class PerceptionWatch:
    """The watch of one run (build a new one per run). `reground` is required for on_loss="reground"."""

    def __init__(self, config: WatchConfig | None = None, reground: Reground | None = None) -> None:
        self.config = cfg = config or WatchConfig()
        if cfg.on_loss == LossAction.REGROUND and reground is None:
            raise ValueError('on_loss="reground" needs a reground callback (frame -> box or None)')
        self.reground = reground
        self._last_ts: float | None = None
        self._last_fresh: float | None = None
        self._low = 0
        self._good = 0
        self._mode = Verdict.RUN
        self._since = 0.0
        self._last_box: F64 | None = None
        self.regrounds = 0
        self.skipped = 0
        self.holds = 0
        self.lost_events = 0
        #: When the watch first acted (held, re-grounded or ended the run), seconds on the caller's clock.
        self.first_action_s: float | None = None

    @property
    def holding(self) -> bool:
        """True while the target is lost and the arm must hold (hold or re-ground in progress)."""
        return self._mode != Verdict.RUN

    # ------------------------------------------------------------------ camera
    def check_frame(self, frame: Any, now_s: float, problem: str = "") -> WatchDecision:
        """Judge the frame observed at `now_s` seconds (None when the camera gave none; `problem` says why)."""
        cfg = self.config
        if self._last_fresh is None:
            self._last_fresh = now_s  # the camera's time limit counts from the first look
        why = problem or ("no frame" if frame is None else "")
        ts = None if frame is None else frame_timestamp(frame)
        if not why and ts is not None:
            if self._last_ts is not None and ts <= self._last_ts:
                why = f"frozen frame (timestamp {ts:.3f} s repeated)"
            elif now_s - ts > cfg.max_frame_age_s:
                why = f"late frame ({now_s - ts:.3f} s old, limit {cfg.max_frame_age_s} s)"
        if not why:
            self._last_fresh = now_s
            self._last_ts = ts if ts is not None else self._last_ts
            return _RUN
        self.skipped += 1
        gone = now_s - self._last_fresh
        if gone > cfg.camera_timeout_s:
            self._acted(now_s)
            detail = f"no fresh frame for {gone:.3f} s (limit {cfg.camera_timeout_s} s); last problem: {why}"
            return WatchDecision(Verdict.END, WatchReason.CAMERA_LOST.value, detail)
        return WatchDecision(Verdict.SKIP, "", why)

    # ------------------------------------------------------------------ tracker
    def check_track(self, score: float | None, box: npt.ArrayLike | None, now_s: float, frame: Any) -> WatchDecision:
        """Judge the tracker's step on `frame` (object score logit, box pixels) at `now_s` seconds."""
        if score is None:
            return _RUN if self._mode == Verdict.RUN else WatchDecision(self._mode)
        seen = self._seen(score, box)
        if self._mode == Verdict.RUN:
            if seen:
                self._low = 0
                return _RUN
            self._low += 1
            if self._low < self.config.lost_frames:
                return _RUN  # the tracker's memory may carry the target through a few bad frames
            self.lost_events += 1
            return self._on_loss(now_s, frame, f"object score <= {self.config.score_threshold} for {self._low} frames")
        if seen:
            self._good += 1
            if self._good >= self.config.recover_frames:
                self._mode, self._low, self._good = Verdict.RUN, 0, 0
                return _RUN
            return WatchDecision(Verdict.HOLD, "", "target seen again, confirming")
        self._good = 0
        if self._mode == Verdict.REGROUND:
            return self._try_reground(now_s, frame, "target not found after re-grounding")
        waited = now_s - self._since
        if waited > self.config.hold_s:
            return WatchDecision(
                Verdict.END,
                WatchReason.TRACKER_LOST.value,
                f"target not back after holding {waited:.3f} s (limit {self.config.hold_s} s)",
            )
        self.holds += 1
        return WatchDecision(Verdict.HOLD, "", f"holding {waited:.3f} s for the target")

    def _seen(self, score: float, box: npt.ArrayLike | None) -> bool:
        if not score > self.config.score_threshold:
            return False
        jump = self.config.max_box_jump_px
        b = None if box is None else np.asarray(box, dtype=np.float64)
        if b is None or b.shape != (4,) or not np.all(np.isfinite(b)):
            return True
        centre = 0.5 * (b[:2] + b[2:])
        last = self._last_box
        if jump is not None and last is not None and float(np.linalg.norm(centre - last)) > jump:
            return False  # an identity switch looks like a jump of the box: not the object we were tracking
        self._last_box = centre
        return True

    def _acted(self, now_s: float) -> None:
        if self.first_action_s is None:
            self.first_action_s = now_s

    def _on_loss(self, now_s: float, frame: Any, why: str) -> WatchDecision:
        self._acted(now_s)
        action = self.config.on_loss
        if action == LossAction.FAIL:
            return WatchDecision(Verdict.END, WatchReason.TRACKER_LOST.value, why)
        self._since, self._good = now_s, 0
        if action == LossAction.HOLD:
            self._mode = Verdict.HOLD
            self.holds += 1
            return WatchDecision(Verdict.HOLD, "", why)
        return self._try_reground(now_s, frame, why)

    def _try_reground(self, now_s: float, frame: Any, why: str) -> WatchDecision:
        if self.regrounds >= self.config.max_regrounds or self.reground is None:
            return WatchDecision(
                Verdict.END, WatchReason.TRACKER_LOST.value, f"{why}; {self.regrounds} re-grounding attempt(s) used"
            )
        self.regrounds += 1
        self._mode = Verdict.REGROUND
        try:
            found = self.reground(frame)
        except Exception as exc:  # a grounding failure is one failed attempt, not a crash of the run
            found, why = None, f"{why}; re-grounding raised {type(exc).__name__}: {exc}"
        box = None if found is None else np.asarray(found, dtype=np.float64)
        if box is None or box.shape != (4,) or not np.all(np.isfinite(box)):
            return WatchDecision(Verdict.HOLD, "", f"{why}; re-grounding attempt {self.regrounds} found nothing")
        self._last_box = None  # the new prompt starts a new track
        return WatchDecision(Verdict.REGROUND, "", f"{why}; re-grounding attempt {self.regrounds}", box)
