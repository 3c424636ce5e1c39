"""State lag: training samples whose arm state comes from an earlier frame of the same episode.

A head that reads the arm's joints can learn to continue the motion it sees in them (the next targets lie close
to the current joints, moving the way they were moving) instead of reading from the features where the target
asks the arm to go. In closed loop a motion the head has not started then never starts: the grasp yaw a
demonstration reaches by turning the wrist during the approach is predicted well from a state that has already
turned, and hardly at all from the start pose. Pairing a share of the samples' features and action labels with
the state of up to `max_frames` frames earlier shows the head arms that lag their plan, whose labels only the
features can tell. The lag never crosses into the previous episode (it is clipped at the episode's first frame).

Values computed from the state (the place values' offset of the target from the TCP and the TCP's height,
`policy.place`) are taken from the same earlier frame, so that a lagged sample describes one consistent arm.
Draws are a function of the training seed and the epoch, so every data-parallel rank and a resumed run see the
same lags.

Measured (`models/sam2grasp_head.md`): the head shipped before the grasp-yaw input, trained with a share of 0.5 and
up to 30 frames together with takeover episodes, still predicts almost no turn from an arm whose wrist lags
(`bench/wrist_probe.py`, the same reading as the head before it), so the lag does not cure that reliance; trained
without the lag the same head picks 40 of 50 tuning scenes against 38 with it: the gain came from the takeover
episodes. The first grasp-yaw head, trained with the same lag, read the same (0.01 from a lagging wrist); the
shipped one, whose estimator also reads the named shape and a refined prompt mask, reads 0.15.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class StateLag:
    """prob: share of training samples given a lagged state, [0, 1] (0: off); max_frames: the largest lag in
    frames (at 20 Hz, 20 frames = 1 s); lags are drawn uniformly from 1..max_frames."""

    prob: float = 0.0
    max_frames: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prob) and 0.0 <= self.prob <= 1.0):
            raise ValueError(f"state lag share must be within [0, 1] (0 turns it off), got {self.prob}")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"state lag max_frames must be an integer >= 1 (frames), got {self.max_frames!r}")

    @property
    def active(self) -> bool:
        """True when some samples are lagged."""
        return self.prob > 0.0


def draw_lags(lag: StateLag, samples: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """Lag in frames (0: not lagged) of each of `samples` training samples in `epoch`; the same for the same
    (lag, samples, seed, epoch)."""
    if samples < 0 or epoch < 0 or seed < 0:
        raise ValueError(f"samples, seed and epoch must be >= 0, got {samples}, {seed}, {epoch}")
    if not lag.active:
        return np.zeros(samples, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch, 0x5A6])
    on = rng.random(samples) < lag.prob
    frames = rng.integers(1, lag.max_frames + 1, size=samples)
    return np.where(on, frames, 0).astype(np.int64)
