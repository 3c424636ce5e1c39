"""The report of `sam2grasp eval`: per-trial records, per-level aggregation (success rate, Wilson 95% interval,
outcome mix) and the success-versus-occlusion plot (PIL: one point per level with its interval bar)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.empty_closes import site_counts
from pipeline.wilson import wilson_interval
from robot.sim.outcome import Outcome

#: Outcome of a trial the agent could not act in (bad input, NaN/inf output): not a simulator outcome.
FAILED_INPUT = "failed_input"
#: Every outcome a trial can end with, in report order.
OUTCOMES: tuple[str, ...] = (*(o.value for o in Outcome), FAILED_INPUT)
_W, _H = 640, 420
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 40, 60


@dataclass(frozen=True)
class TrialResult:
    """One trial: its scene seed, outcome, control steps sent, simulated seconds, mean agent step (ms), share of
    tracker steps with the target visible, share of frames blacked out, steps clamped by the safety layer, IK
    failures (ee mode), extra steps executed while waiting for inference (latency mode), the agent error (for
    failed_input), the video written (if any), the steps taken from earlier chunks on frames where the target
    was not seen (SAM2Grasp's coasting) and where each close on nothing happened (`pipeline.empty_closes`)."""

    seed: int
    outcome: str
    steps: int
    sim_seconds: float
    step_ms: float
    visible_share: float
    occluded_share: float
    clamped_steps: int
    ik_failures: int
    latency_steps: int
    error: str | None = None
    video: str | None = None
    coasted_steps: int = 0
    empty_close_sites: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LevelResult:
    """All trials of one occlusion level: success rate with its Wilson 95% interval and the outcome mix.

    empty_grasp_share: trials that ended with the gripper closed on empty space; empty_close_sites: closes on
    nothing during the trials, by where the TCP stood (`pipeline.empty_closes.CLOSE_SITES`); between_objects_share:
    trials that closed on nothing between two objects at least once (the multi-modality failure)."""

    occlusion: float
    trials: int
    successes: int
    rate: float
    wilson_low: float
    wilson_high: float
    outcomes: dict[str, int]
    empty_grasp_share: float
    failed_input: int
    mean_step_ms: float
    visible_share: float
    occluded_share: float
    seeds: list[int]
    videos: list[str]
    episodes: list[TrialResult] = field(default_factory=list)
    empty_close_sites: dict[str, int] = field(default_factory=dict)
    between_objects_share: float = 0.0


@dataclass(frozen=True)
class EvalReport:
    """The whole evaluation, as written to results.json. safety_violations: limit violations clamped by the safety
    layer over the run, by kind (joint_step, tcp_speed, workspace, ...); perception: "tracker" (the method) or
    "oracle" (the simulator's true masks in place of the tracker's: an upper bound, not the method), "none" for an
    image baseline without a tracker; policy_type: which policy ran ("sam2grasp", "act", "act-cvae",
    "act-cvae-condition"); feature_spec: its input (a SAM2 feature spec, or "rgbWxH[+box]" for a baseline);
    coast_unseen: SAM2Grasp took the actions of frames where the target was not seen from earlier chunks (see
    `SAM2GraspAgent`), False for a baseline; chunk_execution: how the head's chunks became actions
    ("ensemble m=0.01", "first N of each chunk"; "" where the policy does not say); between_objects_share: trials
    of all levels that closed on nothing between two objects at least once."""

    policy: str
    tracker_checkpoint: str
    feature_spec: str
    action_mode: str
    mode: str
    trials: int
    objects: list[int]
    seed: int
    width: int
    height: int
    max_seconds: float
    control_dt: float
    prompt: str
    perception: str
    levels: list[LevelResult]
    empty_grasp_share: float
    safety_violations: dict[str, int]
    results: str
    plot: str
    seconds: float
    policy_type: str = "sam2grasp"
    coast_unseen: bool = False
    chunk_execution: str = ""
    between_objects_share: float = 0.0


def level_result(p: float, results: list[TrialResult], videos: list[str]) -> LevelResult:
    n = len(results)
    counts = Counter(r.outcome for r in results)
    wins = counts[Outcome.SUCCESS.value]
    lo, hi = wilson_interval(wins, n)
    times = [r.step_ms for r in results if math.isfinite(r.step_ms)]
    return LevelResult(
        occlusion=p,
        trials=n,
        successes=wins,
        rate=wins / n,
        wilson_low=lo,
        wilson_high=hi,
        outcomes={o: counts[o] for o in OUTCOMES},
        empty_grasp_share=counts[Outcome.EMPTY_GRASP.value] / n,
        failed_input=counts[FAILED_INPUT],
        mean_step_ms=float(np.mean(times)) if times else float("nan"),
        visible_share=float(np.mean([r.visible_share for r in results])),
        occluded_share=float(np.mean([r.occluded_share for r in results])),
        seeds=[r.seed for r in results],
        videos=videos,
        episodes=results,
        empty_close_sites=site_counts([r.empty_close_sites for r in results]),
        between_objects_share=sum("between_objects" in r.empty_close_sites for r in results) / n,
    )


@dataclass(frozen=True)
class PlotSeries:
    """One line of a success plot: its label, occlusion shares, success rates and Wilson 95% intervals (low,
    high), and trials per point (None: not printed)."""

    label: str
    levels: Sequence[float]
    rates: Sequence[float]
    intervals: Sequence[tuple[float, float]]
    trials: Sequence[int] | None = None


#: Line colours of the series of a plot, in order (repeating).
_COLOURS: tuple[tuple[int, int, int], ...] = (
    (30, 90, 200),
    (200, 60, 40),
    (40, 150, 60),
    (150, 70, 170),
    (220, 140, 0),
)


def draw_success_plot(
    levels: Sequence[float],
    rates: Sequence[float],
    intervals: Sequence[tuple[float, float]],
    path: Path,
    *,
    title: str = "success vs occlusion",
    trials: Sequence[int] | None = None,
) -> Path:
    """Write a PNG: x = occlusion share p, y = success rate (%), points with interval bars; returns `path`."""
    return draw_series_plot([PlotSeries("", levels, rates, intervals, trials)], path, title=title)


def draw_series_plot(series: Sequence[PlotSeries], path: Path, *, title: str = "success vs occlusion") -> Path:
    """Write a PNG with one line per series (x = occlusion share p, y = success rate %, Wilson bars), a legend
    when there are several; returns `path`."""
    if not series:
        raise ValueError("give at least one series to plot")
    for s in series:
        if not (len(s.levels) == len(s.rates) == len(s.intervals)) or not s.levels:
            raise ValueError(f"series {s.label!r}: levels, rates and intervals must be non-empty and of one length")
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    x_max = max(0.6, *(max(s.levels) for s in series))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(p: float) -> float:
        return _LEFT + plot_w * (0.05 + 0.9 * p / x_max)

    def py(rate: float) -> float:
        return _TOP + plot_h * (1.0 - rate)

    # axes, grid and ticks
    draw.rectangle([_LEFT, _TOP, _LEFT + plot_w, _TOP + plot_h], outline="black")
    for k in range(6):
        y = py(k / 5)
        draw.line([_LEFT, y, _LEFT + plot_w, y], fill=(225, 225, 225))
        label = f"{20 * k}"
        draw.text((_LEFT - 8 - 6 * len(label), y - 6), label, fill="black")
    n_ticks = round(x_max / 0.1)
    for k in range(n_ticks + 1):
        p = k * x_max / n_ticks
        x = px(p)
        draw.line([x, _TOP + plot_h, x, _TOP + plot_h + 4], fill="black")
        draw.text((x - 9, _TOP + plot_h + 8), f"{p:.1f}", fill="black")
    draw.text((_LEFT + plot_w / 2 - 150, _H - 24), "occlusion share p (frames blacked out at test time)", fill="black")
    draw.text((_LEFT, 6), title, fill="black")
    ylab = Image.new("RGB", (160, 14), "white")
    ImageDraw.Draw(ylab).text((2, 1), "success rate (%)", fill="black")
    image.paste(ylab.rotate(90, expand=True), (12, _TOP + plot_h // 2 - 80))

    # per series: points with Wilson 95% bars, joined by a line; a legend entry when there are several
    shift = 4 if len(series) > 1 else 0
    legend_x = _LEFT
    for j, s in enumerate(series):
        colour = _COLOURS[j % len(_COLOURS)]
        light = tuple(int(c + 0.5 * (255 - c)) for c in colour)
        dx = shift * (j - (len(series) - 1) / 2)
        points = [(px(p) + dx, py(r)) for p, r in zip(s.levels, s.rates, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=light, width=2)
        for i, ((x, y), (lo, hi)) in enumerate(zip(points, s.intervals, strict=True)):
            draw.line([x, py(lo), x, py(hi)], fill=colour, width=2)
            draw.line([x - 6, py(lo), x + 6, py(lo)], fill=colour, width=2)
            draw.line([x - 6, py(hi), x + 6, py(hi)], fill=colour, width=2)
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
            if len(series) == 1:
                text = f"{100 * s.rates[i]:.0f}%" + (f" n={s.trials[i]}" if s.trials is not None else "")
                draw.text((x + 8, y - 14), text, fill="black")
        if len(series) > 1:  # the legend: one line of entries in the margin above the plot
            draw.line([legend_x, _TOP - 10, legend_x + 20, _TOP - 10], fill=colour, width=3)
            draw.text((legend_x + 26, _TOP - 16), s.label, fill="black")
            legend_x += 26 + int(draw.textlength(s.label)) + 18
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
