"""`sam2grasp eval-tracker`: how well a tracker follows the target on held-out simulated episodes.

Per occlusion level p (share of frames blacked out after the prompt frame, seeded): mean IoU of the target on
the frames it is visible and not blacked out; the same over the first `EARLY_FRAMES` tracked frames alone, while the
arm is still far from the target (a tracker that learned to follow the gripper fails exactly there); recovery,
the frames after a blackout ends until IoU >= 0.8 again (a track that does not get there within 10 frames, or
before the next blackout or the episode's end, counts as 10; how many blackouts were cut short so, and the mean over
the others, are reported beside it);
the share of blacked-out frames the tracker calls absent; and identity switches, the share of frames in scenes
with a same-named twin where the predicted mask sits on the twin instead of the target. A copy-the-first-box
baseline (the prompt box, held still) is measured on the same frames.

Where the IoU is lost: the same mean over each fifth of the episodes (`PHASES` equal parts of each episode's
frames: the arm's approach first, the grasp and lift last), and over the frames on which less than
`COVERED_SHARE` of the target's first-frame area is visible (the arm or the fingers cover it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.dataset.reader import Dataset
from policy.tracker import SAM2Tracker

#: IoU at which a track counts as recovered after a blackout; most frames counted as "not recovered".
RECOVERED_IOU = 0.8
RECOVERY_CAP = 10
#: Tracked frames after the prompt whose IoU also counts in `early_miou`.
EARLY_FRAMES = 10
#: Equal parts of each episode over which `phase_miou` is taken.
PHASES = 5
#: A frame counts as covered when the target's visible area is below this share of its first-frame area.
COVERED_SHARE = 0.5


@dataclass(frozen=True)
class LevelResult:
    """Results at one occlusion level (IoUs 0..1, rates 0..1, recovery in frames)."""

    occlusion: float
    miou: float
    early_miou: float
    baseline_miou: float
    frames: int
    recovery_frames: float
    blackouts: int
    absent_on_black: float
    identity_switch_rate: float
    twin_frames: int
    phase_miou: tuple[float, ...] = ()
    covered_miou: float = float("nan")
    covered_frames: int = 0
    #: blackouts that the next blackout (or the episode's end) cut short before the track reached `RECOVERED_IOU`
    #: (in the mean at the cap)
    recovery_censored: int = 0
    #: mean recovery over the other blackouts: those the track came back from, or did not within `RECOVERY_CAP`
    recovery_uncensored_frames: float = float("nan")


@dataclass(frozen=True)
class TrackerEvalReport:
    """All levels, the episodes used and the mean tracker step time in milliseconds."""

    levels: tuple[LevelResult, ...]
    episodes: int
    step_ms: float


def iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two masks (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def blackout_frames(frames: int, occlusion: float, seed: int, episode_seed: int) -> npt.NDArray[np.bool_]:
    """Which of an episode's `frames` frames an evaluation blacks out at share `occlusion` (never the first).

    Drawn from `seed`, the episode's own `episode_seed` and the level, so every tracker sees the same blackouts.
    """
    black = np.random.default_rng([seed, episode_seed, round(occlusion * 1000)]).random(frames) < occlusion
    black[0] = False
    return black


def _box_mask(box: npt.NDArray[np.float32], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    m = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = (round(v) for v in box)
    m[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return m


def _uncensored_mean(recov: list[int], censored: int) -> float:
    """Mean recovery without the `censored` blackouts (each of those entered `recov` as `RECOVERY_CAP`)."""
    rest = len(recov) - censored
    return (sum(recov) - censored * RECOVERY_CAP) / rest if rest else float("nan")


def evaluate_tracker(
    tracker: SAM2Tracker,
    data: Path,
    episodes: Sequence[int],
    occlusions: Sequence[float] = (0.0, 0.2, 0.4, 0.6),
    seed: int = 0,
) -> TrackerEvalReport:
    """Track every episode in `episodes` of the dataset at `data` at each occlusion level."""
    for p in occlusions:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"occlusion levels must be within [0, 1), got {p}")
    ds = Dataset(data)
    loaded = []
    for e in episodes:
        ep = ds.load_episode(e)
        meta = ds.episode_meta(e)
        if ep.rgb is None:
            raise ValueError(f"episode {e} has no colour frames")
        target = meta.target_object()
        if target is None:
            raise ValueError(f"episode {e}: its target {meta.target!r} is not among its objects")
        twins = [
            np.asarray(o.box, dtype=np.float32)
            for o in meta.objects
            if o.name == target.name and o.instance != target.instance
        ]
        masks = np.stack([ep.target_mask(t) for t in range(len(ep))])
        loaded.append((ep.rgb, masks, ep.target_box[0], twins, meta.seed))
    levels = []
    step_times: list[float] = []
    for p in occlusions:
        ious, early, base, recov, absent, switched, twin_frames = [], [], [], [], [], 0, 0
        censored = 0
        by_phase: list[list[float]] = [[] for _ in range(PHASES)]
        covered: list[float] = []
        for rgb, masks, box0, twins, ep_seed in loaded:
            first_area = max(int(np.count_nonzero(masks[0])), 1)
            black = blackout_frames(len(rgb), p, seed, ep_seed)
            prompt = _box_mask(box0, masks.shape[1:])
            since_black: int | None = None
            for t in range(len(rgb)):
                frame = np.zeros_like(rgb[t]) if black[t] else rgb[t]
                t0 = time.perf_counter()
                step = tracker.start(frame, box0) if t == 0 else tracker.step(frame)
                step_times.append(time.perf_counter() - t0)
                if black[t]:
                    absent.append(not step.visible)
                    if since_black:  # a new blackout before the track recovered: not recovered (censored)
                        recov.append(RECOVERY_CAP)
                        censored += 1
                    since_black = 0
                    continue
                if not masks[t].any():
                    continue
                score = iou(step.mask, masks[t])
                ious.append(score)
                by_phase[min(PHASES - 1, t * PHASES // len(rgb))].append(score)
                if np.count_nonzero(masks[t]) < COVERED_SHARE * first_area:
                    covered.append(score)
                if 1 <= t <= EARLY_FRAMES:
                    early.append(score)
                base.append(iou(prompt, masks[t]))
                if since_black is not None:
                    since_black += 1
                    if score >= RECOVERED_IOU or since_black >= RECOVERY_CAP:
                        recov.append(since_black - 1 if score >= RECOVERED_IOU else RECOVERY_CAP)
                        since_black = None
                if twins:
                    twin_frames += 1
                    ys, xs = np.nonzero(step.mask)
                    if len(xs) and score < 0.2:
                        cx, cy = xs.mean(), ys.mean()
                        if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in twins):
                            switched += 1
            if since_black:  # the episode ended before the track recovered: cut short, like a new blackout
                recov.append(RECOVERY_CAP)
                censored += 1
        levels.append(
            LevelResult(
                occlusion=p,
                miou=float(np.mean(ious)) if ious else float("nan"),
                early_miou=float(np.mean(early)) if early else float("nan"),
                baseline_miou=float(np.mean(base)) if base else float("nan"),
                frames=len(ious),
                recovery_frames=float(np.mean(recov)) if recov else 0.0,
                blackouts=len(recov),
                absent_on_black=float(np.mean(absent)) if absent else float("nan"),
                identity_switch_rate=switched / twin_frames if twin_frames else 0.0,
                twin_frames=twin_frames,
                phase_miou=tuple(float(np.mean(v)) if v else float("nan") for v in by_phase),
                covered_miou=float(np.mean(covered)) if covered else float("nan"),
                covered_frames=len(covered),
                recovery_censored=censored,
                recovery_uncensored_frames=_uncensored_mean(recov, censored),
            )
        )
    return TrackerEvalReport(tuple(levels), len(loaded), 1000.0 * float(np.mean(step_times)) if step_times else 0.0)
