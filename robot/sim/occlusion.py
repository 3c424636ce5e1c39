"""Test-time occlusion: black out a share `p` of camera frames, seeded (the SAM2Grasp paper's protocol)."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from robot.camera_view import CameraView
from robot.sim.env import Observation, PickEnv, ResetInfo, ResetOptions, StepInfo


class OcclusionWrapper:
    """Wraps a `PickEnv`; each observation's camera images are blacked out (all zeros) with probability `p`.

    The first frame after reset stays visible (it carries the prompt) unless `keep_first` is False.
    Ground-truth masks and boxes are left as they are; `last_occluded` tells whether the last frame was hidden.
    """

    def __init__(self, env: PickEnv, p: float, *, keep_first: bool = True) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"occlusion share p must be within [0, 1], got {p}")
        self.env = env
        self.p = p
        self.keep_first = keep_first
        self._rng = np.random.default_rng(0)
        self.last_occluded = False
        self.frames = 0
        self.occluded = 0

    def reset(self, seed: int, options: ResetOptions | None = None) -> tuple[Observation, ResetInfo]:
        """Reset the environment; the blackout draw is seeded by `seed` too."""
        self._rng = np.random.default_rng([seed, 3])
        obs, info = self.env.reset(seed, options)
        return self._maybe_black(obs, allow=not self.keep_first), info

    def camera_view(self) -> CameraView:
        """The wrapped cell's camera calibration (a blacked-out frame hides the image, not the calibration)."""
        return self.env.camera_view()

    def step(self, action: npt.ArrayLike) -> tuple[Observation, float, bool, bool, StepInfo]:
        """Step the environment and black out the observation with probability `p`."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._maybe_black(obs, allow=True), reward, terminated, truncated, info

    def _maybe_black(self, obs: Observation, *, allow: bool) -> Observation:
        hide = allow and bool(self._rng.random() < self.p)
        self.last_occluded = hide
        self.frames += 1
        self.occluded += int(hide)
        if not hide:
            return obs
        return dataclasses.replace(
            obs,
            rgb=None if obs.rgb is None else np.zeros_like(obs.rgb),
            depth_mm=None if obs.depth_mm is None else np.zeros_like(obs.depth_mm),
            wrist_rgb=None if obs.wrist_rgb is None else np.zeros_like(obs.wrist_rgb),
        )

    @property
    def rate(self) -> float:
        """Share of frames blacked out so far."""
        return self.occluded / self.frames if self.frames else 0.0

    def close(self) -> None:
        """Close the wrapped environment."""
        self.env.close()
