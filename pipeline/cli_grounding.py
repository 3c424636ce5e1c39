"""Subcommands of `sam2grasp` for language grounding: ground, train-grounder, eval-grounding."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.cli_common import print_json

_GROUND_EXAMPLES = """examples:
  sam2grasp ground "pick the red cup" --scene-seed 3 --json
  sam2grasp ground "grab the blue can on the left" --scene-seed 10000007 --objects 4-6
"""
_TRAIN_EXAMPLES = """examples:
  sam2grasp train-grounder --data data/grounding --scenes 1500 --out models/grounder_compact
  sam2grasp train-grounder --data data/grounding --epochs 2 --json      # resumes an interrupted run
"""
_EVAL_EXAMPLES = """examples:
  sam2grasp eval-grounding --scenes 200 --json
  sam2grasp eval-grounding --backend transformers --model IDEA-Research/grounding-dino-tiny --device cuda
"""


def _cmd_ground(args: argparse.Namespace) -> int:
    from grounding.ground_scene import ground_in_scene
    from robot.sim.scene import parse_count_range

    result = ground_in_scene(
        args.command, args.scene_seed, parse_count_range(args.objects), backend=args.backend, model=args.model
    )
    if args.json:
        print_json(result)
    else:
        for obj in result["objects"]:
            print(f"  {obj['name']:<14} box {obj['box']}")
        if result["error"] is None:
            t = result["target"]
            print(f"target: {t['name']} box {t['box']} score {t['score']:.3f}")
        else:
            print(f"{result['error']['type']}: {result['error']['message']}")
    return 0 if result["error"] is None else 1


def _cmd_train_grounder(args: argparse.Namespace) -> int:
    from grounding.compact.scenes import TRAIN_SEED, render_dataset
    from grounding.compact.train import GrounderTrainConfig, train_grounder

    data = Path(args.data)
    if args.scenes:
        render_dataset(data, args.scenes, seed=TRAIN_SEED, progress=not args.json)
    cfg = GrounderTrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, threads=args.threads)
    report = train_grounder(data, Path(args.out), cfg, log=None if args.json else print)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(
            f"compact grounder: {report.steps} steps ({report.train_images} training images) in {report.seconds:.0f} s;"
            f" validation on {report.val_images} images: {report.val}; saved in {report.out}"
        )
    return 0


def _cmd_eval_grounding(args: argparse.Namespace) -> int:
    from grounding.evaluate import GROUNDING_EVAL_SEED, evaluate_grounding
    from grounding.service import load_grounding_service

    service = load_grounding_service(args.backend, model=args.model, device=args.device)
    result = evaluate_grounding(service, scenes=args.scenes, seed=args.seed or GROUNDING_EVAL_SEED)
    if args.json:
        print_json(dataclasses.asdict(result))
    else:
        print(
            f"{result.scenes} held-out scenes, {result.commands} commands: top-1 {result.top1:.3f} "
            f"(target ≥0.98), ambiguity precision {result.ambiguity_precision:.3f} recall "
            f"{result.ambiguity_recall:.3f}, no-match detection {result.no_match_rate:.3f} (targets ≥0.95); "
            f"{result.ms_per_command:.1f} ms per command"
        )
        print("by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in result.by_kind.items()))
        print("by phrasing: " + ", ".join(f"{k} {v:.3f}" for k, v in result.by_phrasing.items()))
    return 0


def add_grounding_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "ground",
        help="render a seeded scene and ground one command in it",
        epilog=_GROUND_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("command", help='the command, e.g. "pick the red cup"')
    p.add_argument("--scene-seed", type=int, required=True, help="seed of the simulated scene to render")
    p.add_argument("--objects", default="3-6", help="objects in the scene, N or LO-HI within 1..6 (default 3-6)")
    p.add_argument("--backend", default="compact", help="compact (default), transformers or groundingdino")
    p.add_argument("--model", default=None, help="model directory, Hugging Face id or checkpoint of the backend")
    p.add_argument("--json", action="store_true", help="print one JSON object: objects, target, error")
    p.set_defaults(func=_cmd_ground)

    p = sub.add_parser(
        "train-grounder",
        help="train the compact grounder on rendered simulated scenes (resumable)",
        epilog=_TRAIN_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--data", required=True, help="directory of rendered scene shards (created and filled by --scenes)")
    p.add_argument("--scenes", type=int, default=0, help="render scenes into --data until it holds this many")
    p.add_argument(
        "--out", default="models/grounder_compact", help="output directory (default models/grounder_compact)"
    )
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_train_grounder)

    p = sub.add_parser(
        "eval-grounding",
        help="grounding accuracy on held-out scenes and phrasings: top-1, ambiguity, no-match",
        epilog=_EVAL_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--scenes", type=int, default=200, help="held-out scenes (default 200)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (default: the grounding benchmark's)")
    p.add_argument("--backend", default="compact", help="compact (default), transformers or groundingdino")
    p.add_argument("--model", default=None, help="model directory, Hugging Face id or checkpoint of the backend")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval_grounding)
