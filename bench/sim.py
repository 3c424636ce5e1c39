"""Simulated-cell throughput: physics steps per second, renders per second, and the real-time factor of a full
scripted-expert episode with and without rendering.

Usage: python bench/sim.py [--json] [--min-seconds S]

Each measurement repeats its work for at least `--min-seconds` of wall time (default 3 s) and reports the rate;
the whole run takes about 30-40 s on one core. Single-threaded: MuJoCo steps on one thread, and rendering uses the
headless OpenGL backend picked by `robot.sim` (MUJOCO_GL, EGL by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import robot.sim  # noqa: F401  (chooses MUJOCO_GL before mujoco is imported below)
from robot.sim.config import HOME_Q, CellConfig
from robot.sim.env import PickEnv
from robot.sim.expert import ExpertConfig, ScriptedExpert
from robot.sim.mjcf import GRIPPER_STROKE
from robot.sim.outcome import Outcome
from robot.sim.render import CameraRenderer
from robot.sim.scene import SceneRequest

THREE_OBJECTS = SceneRequest(n_objects=(3, 3))


def _repeat(work: Callable[[], float], min_seconds: float) -> tuple[float, float]:
    """Run `work` (returning its count of units) until `min_seconds` have passed; (units, wall seconds)."""
    units = 0.0
    start = time.perf_counter()
    while True:
        units += work()
        wall = time.perf_counter() - start
        if wall >= min_seconds:
            return units, wall


def physics_steps_per_second(min_seconds: float) -> float:
    """mj_step rate of the full cell holding 3 objects, the arm servoing to moving joint targets."""
    import mujoco

    env = PickEnv(CellConfig(render=False, scene=THREE_OBJECTS))
    env.reset(0)
    model, data = env.model, env.data
    if model is None or data is None:
        raise RuntimeError("the environment holds no model after reset")
    home = np.asarray(HOME_Q)
    phase = np.arange(6)
    block = 500

    def work() -> float:
        for _ in range(block):
            t = float(data.time)
            data.ctrl[:6] = home + 0.25 * np.sin(2 * math.pi * 0.5 * t + phase)
            data.ctrl[6] = GRIPPER_STROKE / 4 * (1 + math.sin(2 * math.pi * 0.3 * t))
            mujoco.mj_step(model, data)
        return block

    units, wall = _repeat(work, min_seconds)
    return units / wall


def renders_per_second(width: int, height: int, *, all_passes: bool, min_seconds: float) -> float:
    """Front-camera renders per second at `width` x `height`: colour only, or colour + depth + segmentation."""
    env = PickEnv(CellConfig(render=False, scene=THREE_OBJECTS))
    env.reset(0)
    model, data = env.model, env.data
    if model is None or data is None:
        raise RuntimeError("the environment holds no model after reset")
    renderer = CameraRenderer(model, "front", width, height, depth=all_passes, segmentation=all_passes)
    try:
        renderer.render(data)  # warm-up: context, textures

        def work() -> float:
            for _ in range(5):
                renderer.render(data)
            return 5

        units, wall = _repeat(work, min_seconds)
    finally:
        renderer.close()
    return units / wall


def expert_real_time_factor(*, render: bool, min_seconds: float) -> tuple[float, int, int]:
    """Simulated seconds per wall second of whole expert episodes (20 Hz control, 640x480 colour + depth +
    segmentation when `render`); also the episodes run and how many succeeded."""
    env = PickEnv(CellConfig(control_dt=0.05, image_width=640, image_height=480, render=render, depth=True))
    expert = ScriptedExpert(env, ExpertConfig(noise_prob=0.0))
    episodes = successes = 0
    seed = 0

    def work() -> float:
        nonlocal episodes, successes, seed
        env.reset(seed)
        expert.reset(seed)
        seed += 1
        while True:
            _, _, terminated, truncated, info = env.step(expert.act().executed)
            if terminated or truncated:
                break
        episodes += 1
        successes += int(info.outcome == Outcome.SUCCESS)
        return info.time

    try:
        sim_seconds, wall = _repeat(work, min_seconds)
    finally:
        env.close()
    return sim_seconds / wall, episodes, successes


def gl_renderer() -> str:
    """The OpenGL renderer string of the headless context (e.g. "llvmpipe": software rendering), best effort."""
    import mujoco

    try:
        from OpenGL import GL  # type: ignore[import-untyped]

        renderer = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 16, 16)
        try:
            return bytes(GL.glGetString(GL.GL_RENDERER)).decode()
        finally:
            renderer.close()
    except Exception as exc:  # the measurements below still run; they will report the failure themselves
        return f"unknown ({type(exc).__name__})"


def run(min_seconds: float) -> dict[str, object]:
    """Every measurement, as one flat dictionary."""
    results: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
        "gl_renderer": gl_renderer(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "physics_steps_per_s": physics_steps_per_second(min_seconds),
    }
    for width, height in ((640, 480), (256, 256)):
        results[f"renders_per_s_{width}x{height}_rgb"] = renders_per_second(
            width, height, all_passes=False, min_seconds=min_seconds
        )
        results[f"renders_per_s_{width}x{height}_rgb_depth_seg"] = renders_per_second(
            width, height, all_passes=True, min_seconds=min_seconds
        )
    for render in (True, False):
        rtf, episodes, successes = expert_real_time_factor(render=render, min_seconds=min_seconds)
        key = "expert_rtf_render_640x480" if render else "expert_rtf_no_render"
        results[key] = rtf
        results[f"{key}_episodes"] = episodes
        results[f"{key}_successes"] = successes
    return results


def _table(results: dict[str, object]) -> str:
    rows = [
        ("physics steps/s (3 objects, arm under control)", "physics_steps_per_s", "{:,.0f}"),
        ("renders/s 640x480 colour", "renders_per_s_640x480_rgb", "{:.1f}"),
        ("renders/s 640x480 colour+depth+seg", "renders_per_s_640x480_rgb_depth_seg", "{:.1f}"),
        ("renders/s 256x256 colour", "renders_per_s_256x256_rgb", "{:.1f}"),
        ("renders/s 256x256 colour+depth+seg", "renders_per_s_256x256_rgb_depth_seg", "{:.1f}"),
        ("expert episode real-time factor, 20 Hz, 640x480 c+d+s", "expert_rtf_render_640x480", "{:.2f}x"),
        ("expert episode real-time factor, no rendering", "expert_rtf_no_render", "{:.2f}x"),
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'measure':<{width}}  value", f"{'-' * width}  ----------"]
    for label, key, fmt in rows:
        lines.append(f"{label:<{width}}  {fmt.format(results[key])}")
    for key in ("expert_rtf_render_640x480", "expert_rtf_no_render"):
        lines.append(f"  ({key}: {results[key + '_successes']}/{results[key + '_episodes']} episodes succeeded)")
    lines.append(
        f"MUJOCO_GL={results['mujoco_gl']} ({results['gl_renderer']}), OMP_NUM_THREADS={results['omp_num_threads']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="wall seconds per measurement (default 3)")
    args = parser.parse_args(argv)
    if not args.min_seconds > 0:
        parser.error("--min-seconds must be positive")
    results = run(args.min_seconds)
    print(json.dumps(results) if args.json else _table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
