"""`sam2grasp collect`: record scripted-expert demonstrations in the simulated cell as a dataset.

Each episode's target is drawn at random among the scene's objects, so demonstrations of the same scene layout
grasp different objects: the data is multi-modal by construction, which is the problem SAM2Grasp's prompt solves.
Collection resumes: rerunning the same command on a partly written dataset continues after its last seed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.writer import DatasetWriter
from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv, ResetInfo
from robot.sim.expert import ExpertConfig, ScriptedExpert
from robot.sim.outcome import Outcome
from robot.sim.render import mask_box
from robot.sim.scene import EVAL_SEED_BASE, SceneRequest


@dataclass(frozen=True)
class CollectConfig:
    """What to collect.

    episodes: number of episodes to end up with in `out`; seed: first scene seed (attempt i uses seed + i);
    keep_failures: also store episodes the expert failed (outcome recorded per episode);
    max_attempts_factor: give up after this many attempts per wanted episode.
    """

    out: Path
    episodes: int
    seed: int = 0
    cell: CellConfig = field(default_factory=CellConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    keep_failures: bool = False
    max_attempts_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {self.episodes}")
        if not 0 <= self.seed < EVAL_SEED_BASE - self.episodes * self.max_attempts_factor:
            raise ValueError(
                f"seed must be within 0..{EVAL_SEED_BASE - 1} less the attempts, got {self.seed}: "
                f"seeds from {EVAL_SEED_BASE} on are kept for evaluation scenes"
            )
        if not self.cell.render:
            raise ValueError("collection records images: CellConfig.render must be on")


@dataclass(frozen=True)
class CollectReport:
    """Summary of a collection run: episodes and frames in the dataset, this run's attempts, the expert's
    success rate over them, outcome counts, and wall-clock seconds."""

    episodes: int
    frames: int
    attempts: int
    expert_success_rate: float
    outcomes: dict[str, int]
    seconds: float


def object_records(info: ResetInfo, obs: Observation) -> tuple[ObjectRecord, ...]:
    records = []
    for i, obj in enumerate(info.scene.objects):
        box = mask_box(obs.instance_map == i) if obs.instance_map is not None else np.zeros(4, np.float32)
        half_yaw = obj.yaw / 2
        records.append(
            ObjectRecord(
                instance=obj.instance,
                name=obj.name,
                colour=obj.kind.colour.value,
                shape=obj.kind.shape.value,
                position=(obj.x, obj.y, obj.kind.spec.half_extents[2]),
                quat=(float(np.cos(half_yaw)), 0.0, 0.0, float(np.sin(half_yaw))),
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            )
        )
    return tuple(records)


def episode_frame(obs: Observation, action: np.ndarray) -> Frame:
    if obs.rgb is None or obs.depth_mm is None or obs.target_mask is None:
        raise RuntimeError("collection needs colour, depth and segmentation rendering")
    return Frame(
        rgb=obs.rgb,
        depth_mm=obs.depth_mm,
        state=obs.state,
        action=action.astype(np.float32),
        ee_pose=np.append(obs.tcp_pose, obs.gripper_width).astype(np.float32),
        target_box=obs.target_box,
        target_mask=obs.target_mask,
        timestamp=obs.time,
        wrist_rgb=obs.wrist_rgb,
    )


def recorded_episode(
    env: PickEnv,
    info: ResetInfo,
    seed: int,
    outcome: Outcome | None,
    objects: tuple[ObjectRecord, ...],
    frames: list[Frame],
) -> Episode:
    """The dataset episode of a finished run on `env` (reset for `seed` with `info`)."""
    if outcome is None:
        raise RuntimeError(f"the episode of seed {seed} ended without an outcome")
    return Episode(
        task=info.command,
        target=info.target,
        seed=seed,
        outcome=str(outcome.value),
        fps=1.0 / env.config.control_dt,
        objects=objects,
        frames=tuple(frames),
        camera=env.camera_view(),
    )


def run_expert_episode(env: PickEnv, expert: ScriptedExpert, seed: int) -> Episode:
    """Reset `env` for `seed`, let the expert pick a random target, and record every step."""
    obs, info = env.reset(seed)
    expert.reset(seed)
    frames: list[Frame] = []
    objects = object_records(info, obs)
    outcome: Outcome | None = None
    while outcome is None:
        step = expert.act()
        frames.append(episode_frame(obs, step.label))
        obs, _, terminated, truncated, step_info = env.step(step.executed)
        if terminated or truncated:
            outcome = step_info.outcome
    return recorded_episode(env, info, seed, outcome, objects, frames)


def resume_point(out: Path, start_seed: int) -> tuple[int, int]:
    """(episodes already there, next seed) of an existing dataset, or (0, start_seed)."""
    if not (out / "meta" / "info.json").exists():
        return 0, start_seed
    ds = Dataset(out)
    if len(ds) == 0:
        return 0, start_seed
    last_seed = max(ds.episode_meta(i).seed for i in range(len(ds)))
    return len(ds), max(start_seed, last_seed + 1)


@dataclass
class Recording:
    """An open run that appends episodes to a dataset: the simulated cell, the writer, the progress bar (`bar`:
    tqdm), and `have`/`seed`, the episodes the dataset holds and the next scene seed (resumed from the dataset)."""

    env: PickEnv
    writer: DatasetWriter
    bar: Any
    have: int
    seed: int

    def added(self) -> None:
        """Count one episode written."""
        self.have += 1
        self.bar.update(1)


@contextmanager
def recording(
    out: Path, cell: CellConfig, *, total: int, first_seed: int, desc: str, progress: bool | None
) -> Iterator[Recording]:
    """Open `out` for appending (created, or resumed after its last seed) with a new cell and a progress bar over
    `total` episodes (shown on a terminal unless `progress` says otherwise); the cell and the bar close on exit."""
    from tqdm import tqdm

    have, seed = resume_point(out, first_seed)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, initial=have, disable=not show, unit="ep", desc=desc)
    env = PickEnv(cell)
    try:
        with DatasetWriter(out, fps=1.0 / cell.control_dt) as writer:
            yield Recording(env, writer, bar, have, seed)
    finally:
        env.close()
        bar.close()


def collect(config: CollectConfig, *, progress: bool | None = None) -> CollectReport:
    """Record demonstrations into `config.out` until it holds `config.episodes` episodes."""
    t0 = time.monotonic()
    outcomes: Counter[str] = Counter()
    attempts = 0
    max_attempts = int(np.ceil(config.episodes * config.max_attempts_factor)) + 5
    with recording(
        config.out, config.cell, total=config.episodes, first_seed=config.seed, desc="collect", progress=progress
    ) as rec:
        expert = ScriptedExpert(rec.env, config.expert)
        while rec.have < config.episodes:
            if attempts >= max_attempts:
                raise RuntimeError(
                    f"expert succeeded on only {outcomes['success']} of {attempts} attempts; "
                    f"stopped at {rec.have} of {config.episodes} episodes"
                )
            episode = run_expert_episode(rec.env, expert, rec.seed)
            attempts += 1
            rec.seed += 1
            outcomes[episode.outcome] += 1
            if episode.outcome == Outcome.SUCCESS.value or config.keep_failures:
                rec.writer.add_episode(episode)
                rec.added()
            rec.bar.set_postfix(success=f"{outcomes['success']}/{attempts}")
    ds = Dataset(config.out)
    return CollectReport(
        episodes=len(ds),
        frames=ds.total_frames,
        attempts=attempts,
        expert_success_rate=outcomes["success"] / attempts if attempts else 0.0,
        outcomes=dict(outcomes),
        seconds=time.monotonic() - t0,
    )


def parse_objects_arg(text: str) -> SceneRequest:
    """`--objects 3-6` as a scene request."""
    from robot.sim.scene import parse_count_range

    return SceneRequest(n_objects=parse_count_range(text))
