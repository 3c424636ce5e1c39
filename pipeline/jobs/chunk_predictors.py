"""Adapters between a policy's chunks and the control loop that executes them: resampling a chunk from the period
its actions were trained at to the control period, and remembering the last chunk for the camera overlay.
Units: seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def resample_chunk(chunk: npt.ArrayLike, action_period_s: float, control_period_s: float) -> F64:
    """A chunk of K actions `action_period_s` seconds apart as one action per control period (linear
    interpolation; action 0 stays first): (floor((K-1) x action / control) + 1, 7)."""
    arr = np.asarray(chunk, dtype=np.float64)
    if abs(action_period_s - control_period_s) < 1e-12:
        return arr  # nothing to resample (the shape is the control loop's to check)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"chunk must have shape (K >= 1, D), got {arr.shape}")
    if arr.shape[0] == 1:
        return arr
    t_actions = np.arange(arr.shape[0]) * action_period_s
    t_ticks = np.arange(int(t_actions[-1] / control_period_s + 1e-9) + 1) * control_period_s
    return np.stack([np.interp(t_ticks, t_actions, arr[:, j]) for j in range(arr.shape[1])], axis=1)


class PacedPredictor:
    """A `ChunkPredictor` that runs `predictor` (chunks of actions `action_period_s` apart, as the head was
    trained) and returns its chunks resampled to the control period; keeps the last chunk as predicted (for the
    overlay) and passes the tracker's last step (for the perception watch), `coast_unseen` (the policy loop's
    coasting on frames without the target) and `reprompt` (re-grounding) through."""

    def __init__(self, predictor: Any, action_period_s: float, control_period_s: float) -> None:
        if not 0 < control_period_s <= action_period_s:
            raise ValueError(
                f"the control period must be within (0, action period {action_period_s} s], got {control_period_s}"
            )
        self.predictor, self.action_period_s, self.control_period_s = predictor, action_period_s, control_period_s
        self.last_chunk: F64 | None = None

    @property
    def last_step(self) -> Any:
        """The tracker's last step (mask, box, object score), or None."""
        return getattr(self.predictor, "last_step", None)

    @property
    def coast_unseen(self) -> bool:
        """The wrapped predictor's `coast_unseen` (False when it has none)."""
        return bool(getattr(self.predictor, "coast_unseen", False))

    def reprompt(self, box: npt.ArrayLike) -> None:
        """Prompt the tracker again with `box` (pixels) at the next prediction."""
        self.predictor.reprompt(box)

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        """The wrapped predictor's chunk at the control period, (M, 7)."""
        chunk = np.asarray(self.predictor.predict(frame, state), dtype=np.float64)
        self.last_chunk = chunk
        return resample_chunk(chunk, self.action_period_s, self.control_period_s)
