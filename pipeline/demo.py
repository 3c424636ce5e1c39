"""`make demo` until the learned pipeline lands: the scripted expert (privileged simulator state, no learned
model) picks a named object in the simulated cell, and a video of it is written with the target's ground-truth
mask and box drawn in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.dataset.video import write_rgb_video
from pipeline.overlay import draw_overlay
from robot.sim.catalogue import all_kinds, parse_object_name
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv, ResetOptions
from robot.sim.expert import ScriptedExpert
from robot.sim.scene import MAX_OBJECTS, MIN_OBJECTS, SceneRequest, sample_scene


@dataclass(frozen=True)
class DemoResult:
    """Outcome of the demo episode, the command shown, frames written, seconds simulated and the video path."""

    outcome: str
    command: str
    frames: int
    sim_seconds: float
    video: Path


def run_demo(
    target: str, out: Path, *, seed: int = 0, n_objects: int = 4, cell: CellConfig | None = None
) -> DemoResult:
    """Build a scene of `n_objects` holding `target` ("red cube"), let the expert pick it, write `out` (mp4)."""
    if not MIN_OBJECTS <= n_objects <= MAX_OBJECTS:
        raise ValueError(
            f"the demo scene holds at least {MIN_OBJECTS} and at most {MAX_OBJECTS} objects, got {n_objects}"
        )
    kind = parse_object_name(target)
    rng = np.random.default_rng(seed)
    others = [k for k in all_kinds() if k != kind]
    picks = rng.choice(len(others), size=max(0, n_objects - 1), replace=False)
    names = (kind.name, *(others[int(i)].name for i in picks))
    cfg = cell or CellConfig(depth=False)
    scene = sample_scene(seed, SceneRequest(names=names, camera_jitter=cfg.scene.camera_jitter))
    env = PickEnv(cfg)
    expert = ScriptedExpert(env)
    frames = []
    try:
        obs, info = env.reset(seed, ResetOptions(scene=scene, target=kind.name))
        expert.reset(seed)
        outcome = None
        while outcome is None:
            if obs.rgb is None:
                raise RuntimeError("the demo needs rendering")
            caption = f"'{info.command}'  scripted expert (privileged state)  t={obs.time:4.2f}s"
            frames.append(draw_overlay(obs.rgb, box=obs.target_box, mask=obs.target_mask, caption=caption))
            obs, _, terminated, truncated, step = env.step(expert.act().executed)
            if terminated or truncated:
                outcome = step.outcome
    finally:
        env.close()
    if outcome is None:
        raise RuntimeError("episode ended without an outcome")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_rgb_video(out, np.stack(frames), fps=1.0 / cfg.control_dt)
    return DemoResult(str(outcome.value), info.command, len(frames), step.time, out)
