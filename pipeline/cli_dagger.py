"""`sam2grasp dagger`: a trained head drives the simulated cell, the corrective expert takes over; recorded."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.cli_common import print_json

_EXAMPLES = """examples:
  sam2grasp dagger --policy models/sam2grasp_head --tracker-checkpoint models/tracker_compact.safetensors \\
      --episodes 600 --seed 300000 --out data/policy_train
  (appends takeover episodes to the demonstrations until the dataset holds 600 episodes; then `cache` and `train` again)
"""


def _cmd_dagger(args: argparse.Namespace) -> int:
    import torch

    from pipeline.collect import parse_objects_arg
    from pipeline.dagger import DaggerConfig, dagger
    from policy.agent import load_agent
    from policy.checkpoint import PolicyCheckpointError
    from robot.sim.config import CellConfig
    from robot.sim.outcome import OutcomeRules

    width, height = args.width, args.height
    if (width is None or height is None) and (Path(args.out) / "meta" / "info.json").exists():
        from pipeline.dataset.reader import Dataset

        size = Dataset(Path(args.out)).image_size  # append at the dataset's own camera size
        if size is not None:
            height, width = (height or size[0]), (width or size[1])
    config = DaggerConfig(
        out=Path(args.out),
        episodes=args.episodes,
        seed=args.seed,
        cell=CellConfig(
            image_width=width or 320,
            image_height=height or 240,
            scene=parse_objects_arg(args.objects),
            rules=OutcomeRules(max_episode_s=args.max_seconds),
        ),
        takeover_min_s=args.takeover_min_s,
        takeover_max_s=args.takeover_max_s,
    )
    if not Path(args.policy).is_dir():
        raise FileNotFoundError(f"policy {args.policy} does not exist (a directory from `sam2grasp train`)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        agent = load_agent(Path(args.policy), Path(args.tracker_checkpoint))
    except PolicyCheckpointError as exc:
        raise ValueError(str(exc)) from exc
    report = dagger(config, agent, progress=None if not args.json else False)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(
            f"{report.episodes} episodes, {report.frames} frames in {args.out}; this run: {report.rollouts} "
            f"rollouts, {report.policy_successes} policy successes before a takeover, takeovers {report.takeovers}, "
            f"{report.kept} kept ({report.learned_frames} learned frames), {report.seconds:.1f} s"
        )
    return 0


def add_dagger_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dagger`."""
    p = sub.add_parser(
        "dagger",
        help="record a SAM2Grasp head's rollouts in the simulated cell with the expert taking over",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", required=True, help="SAM2Grasp policy directory (from `train`)")
    p.add_argument("--tracker-checkpoint", required=True, help="the tracker weights its features were cached with")
    p.add_argument("--episodes", type=int, required=True, help="episodes the dataset should hold in the end")
    p.add_argument("--seed", type=int, required=True, help="first scene seed (training range, below 10000000)")
    p.add_argument("--out", required=True, help="dataset directory to append to (created, or resumed)")
    p.add_argument("--objects", default="3-6", help="objects per scene, N or LO-HI within 1..6 (default 3-6)")
    p.add_argument("--width", type=int, default=None, help="camera width in pixels (default: the dataset's, or 320)")
    p.add_argument("--height", type=int, default=None, help="camera height in pixels (default: the dataset's, or 240)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="simulated seconds per rollout (default 15)")
    p.add_argument("--takeover-min-s", type=float, default=0.5, help="earliest drawn takeover, seconds (default 0.5)")
    p.add_argument("--takeover-max-s", type=float, default=8.0, help="latest drawn takeover, seconds (default 8)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_dagger)
