"""`sam2grasp train-grasp-yaw`: fit the grasp-yaw estimator on a cached dataset's prompt frames and report its
held-out error."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.cli_common import print_json

_EXAMPLES = """examples:
  sam2grasp train-grasp-yaw --data data/policy_train --out runs/grasp_yaw.safetensors
  (one sample per cached episode: its first frame's mask moments, box and table position, and its target's grasp
  axis; prints the held-out axis error per symmetry order)
"""


def _cmd_train_grasp_yaw(args: argparse.Namespace) -> int:
    import torch

    from pipeline.train_grasp_yaw import train_grasp_yaw
    from policy.grasp_yaw import GraspYawConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    report = train_grasp_yaw(
        Path(args.data),
        Path(args.out),
        features=args.features,
        config=GraspYawConfig(hidden=args.hidden, layers=args.layers, named=args.named, mask=args.mask),
        val_fraction=args.val_fraction,
        steps=args.steps,
        seed=args.seed,
    )
    if args.json:
        print_json(dataclasses.asdict(report))
        return 0
    acc = "n/a" if report.val_order_accuracy is None else f"{report.val_order_accuracy:.1%}"
    print(f"trained on {report.train_samples} episodes in {report.seconds:.1f} s; weights: {report.out}")
    print(f"held out {report.val_samples}: symmetry order right {acc}")
    for order, err in report.val_axis_error_deg.items():
        print(
            f"  order {order}: axis error median {err['median']:.1f} deg, p90 {err['p90']:.1f} deg ({err['count']:.0f})"
        )
    return 0


def add_grasp_yaw_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `train-grasp-yaw`."""
    p = sub.add_parser(
        "train-grasp-yaw",
        help="fit the estimator of the target's grasp axis from the prompt frame's mask (policy/grasp_yaw.py)",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset directory with a '+shape' feature cache and cameras")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--features", default=None, help="feature spec of the cache (default: the only one)")
    p.add_argument("--hidden", type=int, default=128, help="units per hidden layer (default 128)")
    p.add_argument("--layers", type=int, default=2, help="hidden layers, 1..4 (default 2)")
    p.add_argument(
        "--named",
        action="store_true",
        help="also read the target's catalogue shape as its command names it (one-hot; a quarter hidden in training)",
    )
    p.add_argument(
        "--mask",
        choices=["tracked", "refined"],
        default="tracked",
        help="moments from the tracker's prompt-frame mask (tracked) or a full-resolution mask segmented from the "
        "prompt box (refined)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes held out (default 0.1)")
    p.add_argument("--steps", type=int, default=3000, help="full-batch training steps (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_train_grasp_yaw)
