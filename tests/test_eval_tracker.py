"""eval-tracker's breakdown of where IoU is lost (by fifth of the episode, and on frames where the arm covers the
target), checked against a scripted tracker whose IoU on every frame is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
from tiny_world import tiny_world

from pipeline.dataset.reader import Dataset
from policy.eval_tracker import COVERED_SHARE, PHASES, RECOVERY_CAP, blackout_frames, evaluate_tracker
from policy.tracker import SAM2Tracker


class HalfTracker:
    """Gives the true mask on the first half of each episode's frames and nothing after (IoU 1, then 0)."""

    def __init__(self, masks: list[npt.NDArray[np.bool_]]) -> None:
        self.masks = masks
        self.episode = -1
        self.t = 0

    def _step(self) -> Any:
        m = self.masks[self.episode]
        mask = m[self.t] if self.t < len(m) / 2 else np.zeros_like(m[self.t])
        return type("Step", (), {"mask": mask, "visible": bool(mask.any())})()

    def start(self, frame: Any, box: Any) -> Any:
        self.episode += 1
        self.t = 0
        return self._step()

    def step(self, frame: Any) -> Any:
        self.t += 1
        return self._step()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, _, _ = tiny_world(tmp_path_factory.mktemp("eval_tracker"))
    return data


def _true_masks(world: Path) -> list[npt.NDArray[np.bool_]]:
    """Every episode's ground-truth target masks, (T, H, W) each."""
    ds = Dataset(world)
    out = []
    for e in range(len(ds)):
        ep = ds.load_episode(e)
        out.append(np.stack([ep.target_mask(t) for t in range(len(ep))]))
    return out


def test_phase_and_covered_breakdown_match_the_frames(world: Path) -> None:
    masks = _true_masks(world)
    level = evaluate_tracker(cast(SAM2Tracker, HalfTracker(masks)), world, [0, 1], occlusions=(0.0,)).levels[0]
    scores: list[list[float]] = [[] for _ in range(PHASES)]
    covered = 0
    for m in masks:
        for t in range(len(m)):
            if not m[t].any():
                continue
            scores[t * PHASES // len(m)].append(1.0 if t < len(m) / 2 else 0.0)
            covered += int(m[t].sum() < COVERED_SHARE * m[0].sum())
    assert level.frames == sum(len(s) for s in scores)
    assert level.miou == pytest.approx(np.mean([v for s in scores for v in s]))
    assert level.phase_miou == pytest.approx(tuple(np.mean(s) for s in scores))
    assert level.phase_miou[0] == 1.0
    assert level.phase_miou[-1] == 0.0
    assert covered > 0  # the fingers cover the target in these episodes: the check below has something to count
    assert level.covered_frames == covered


class LagTracker:
    """Gives the true mask except on the `lag` frames after each blacked-out frame (nothing there), so recovery after
    every blackout is exactly `lag` frames unless the next blackout comes first."""

    def __init__(self, masks: list[npt.NDArray[np.bool_]], lag: int) -> None:
        self.masks = masks
        self.lag = lag
        self.episode = -1
        self.t = 0
        self.after_black = lag

    def _step(self, frame: npt.NDArray[np.uint8]) -> Any:
        m = self.masks[self.episode][self.t]
        if not frame.any():
            self.after_black = 0
            mask = np.zeros_like(m)
        elif self.after_black < self.lag:
            self.after_black += 1
            mask = np.zeros_like(m)
        else:
            mask = m
        return type("Step", (), {"mask": mask, "visible": bool(mask.any())})()

    def start(self, frame: npt.NDArray[np.uint8], box: Any) -> Any:
        self.episode += 1
        self.t = 0
        self.after_black = self.lag
        return self._step(frame)

    def step(self, frame: npt.NDArray[np.uint8]) -> Any:
        self.t += 1
        return self._step(frame)


def test_recovery_separates_blackouts_cut_short_by_the_next(world: Path) -> None:
    masks = _true_masks(world)
    lag, p = 2, 0.4
    level = evaluate_tracker(cast(SAM2Tracker, LagTracker(masks, lag)), world, [0, 1], occlusions=(p,)).levels[0]
    # both kinds of blackout occur at this level in these episodes
    assert level.blackouts > 0
    assert level.recovery_censored > 0
    assert level.recovery_censored < level.blackouts
    # every blackout the next one did not cut short ends exactly `lag` frames later
    assert level.recovery_uncensored_frames == pytest.approx(lag)
    total = level.recovery_censored * RECOVERY_CAP + (level.blackouts - level.recovery_censored) * lag
    assert level.recovery_frames == pytest.approx(total / level.blackouts)


def test_a_blackout_the_episode_end_cuts_short_counts_at_the_cap(world: Path) -> None:
    masks = _true_masks(world)
    p, seed = 0.4, 0
    never = LagTracker(masks, lag=10**9)  # after its first black frame it never finds the target again
    level = evaluate_tracker(cast(SAM2Tracker, never), world, [0, 1], occlusions=(p,), seed=seed).levels[0]
    # every blackout followed by a frame showing the target counts, at the cap, however the episode goes on
    ds = Dataset(world)
    expected, at_end = 0, 0
    for e, m in enumerate(masks):
        black = blackout_frames(len(m), p, seed, ds.episode_meta(e).seed)
        pending, seen_after = False, 0
        for t in range(len(m)):
            if black[t]:
                pending, seen_after = True, 0
            elif m[t].any() and pending:
                expected, pending, seen_after = expected + 1, False, 1
            elif m[t].any() and seen_after:
                seen_after += 1
        at_end += int(0 < seen_after < RECOVERY_CAP)  # the last blackout had fewer than the cap's frames left
    assert at_end > 0  # these episodes do end within the cap after a blackout: the check below counts them
    assert level.blackouts == expected
    assert level.recovery_frames == RECOVERY_CAP


def test_blackouts_never_cover_the_prompt_frame_and_repeat_for_the_same_episode() -> None:
    black = blackout_frames(4000, 0.4, seed=3, episode_seed=17)
    assert not black[0]
    assert 0.37 < black.mean() < 0.43
    assert np.array_equal(black, blackout_frames(4000, 0.4, seed=3, episode_seed=17))
    assert not np.array_equal(black, blackout_frames(4000, 0.4, seed=3, episode_seed=18))
    assert not blackout_frames(50, 0.0, seed=3, episode_seed=17).any()
