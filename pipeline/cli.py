"""The `sam2grasp` command line."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.cli_calibrate import add_calibrate_commands
from pipeline.cli_common import print_json
from pipeline.cli_compare import add_compare_command
from pipeline.cli_dagger import add_dagger_command
from pipeline.cli_grasp_yaw import add_grasp_yaw_command
from pipeline.cli_grounding import add_grounding_commands
from pipeline.cli_policy import add_policy_commands
from pipeline.cli_product import add_product_commands
from pipeline.cli_robot import add_robot_commands

#: Errors that are the user's to fix: printed as one line, exit status 2, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)
#: errno values of a write refused for want of space (full disk, file-size limit, quota): also the user's to fix.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def _cmd_collect(args: argparse.Namespace) -> int:
    from pipeline.collect import CollectConfig, collect, parse_objects_arg
    from robot.sim.config import CellConfig
    from robot.sim.expert import ExpertConfig

    cell = CellConfig(
        control_dt=args.control_dt,
        image_width=args.width,
        image_height=args.height,
        wrist_camera=args.wrist_camera,
        scene=parse_objects_arg(args.objects),
    )
    config = CollectConfig(
        out=Path(args.out),
        episodes=args.episodes,
        seed=args.seed,
        cell=cell,
        expert=ExpertConfig(noise_prob=args.noise_prob, miss_prob=args.miss_prob),
        keep_failures=args.keep_failures,
    )
    report = collect(config, progress=None if not args.json else False)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(
            f"{report.episodes} episodes, {report.frames} frames in {args.out}; this run: {report.attempts} "
            f"attempts, expert success {report.expert_success_rate:.1%}, {report.seconds:.1f} s"
        )
    return 0


def _cmd_dataset_check(args: argparse.Namespace) -> int:
    from pipeline.dataset.check import check_dataset

    report = check_dataset(Path(args.dir))
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        status = "ok" if report.ok else "BROKEN"
        print(f"{args.dir}: {status}: {report.episodes} episodes, {report.frames} frames")
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    result = run_demo(
        args.command_text,
        Path(args.out),
        seed=args.seed,
        n_objects=args.objects,
        expert=args.expert,
        width=args.width,
        height=args.height,
    )
    if args.json:
        print_json(dataclasses.asdict(result))
    elif result.error is not None:
        print(f"{result.command!r}: nothing moved: {result.error['type']}: {result.error['message']}")
    else:
        print(
            f"{result.command!r} grounded to {result.target} (box {[round(v) for v in result.box or ()]}, score "
            f"{result.score:.2f}); by {result.method}: {result.outcome} after {result.sim_seconds:.1f} s simulated; "
            f"video with the tracked mask: {result.video}"
        )
    # a pick that fails is a result, reported above; a command refused by grounding exits 1 (nothing moved)
    return 1 if result.error is not None else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="sam2grasp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collect", help="record scripted-expert demonstrations in the simulated cell")
    p.add_argument("--episodes", type=int, required=True, help="episodes the dataset should hold")
    p.add_argument("--objects", default="3-6", help="objects per scene, N or LO-HI within 1..6 (default 3-6)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (default 0)")
    p.add_argument("--out", required=True, help="dataset directory (created, or resumed)")
    p.add_argument("--width", type=int, default=640, help="camera width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, help="camera height in pixels (default 480)")
    p.add_argument("--control-dt", type=float, default=0.05, help="seconds per recorded step (default 0.05)")
    p.add_argument("--wrist-camera", action="store_true", help="also record the wrist camera")
    p.add_argument("--noise-prob", type=float, default=0.3, help="share of episodes with perturbations")
    p.add_argument(
        "--miss-prob",
        type=float,
        default=0.0,
        help="share of episodes whose first grasp closes beside the target, then opens and grasps again (default 0)",
    )
    p.add_argument("--keep-failures", action="store_true", help="also store episodes the expert failed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("dataset-check", help="verify a dataset and say what is wrong with it")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_dataset_check)

    p = sub.add_parser(
        "demo", help="simulated pick from a text command by the shipped models (or --expert), written as a video"
    )
    p.add_argument(
        "command_text", nargs="?", default="pick the red cube", metavar="COMMAND", help='e.g. "pick the red cup"'
    )
    p.add_argument("--out", default="out/demo.mp4", help="video path (default out/demo.mp4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objects", type=int, default=4, help="objects in the scene, 1..6 (default 4)")
    p.add_argument("--width", type=int, default=320, help="camera width in pixels (default 320)")
    p.add_argument("--height", type=int, default=240, help="camera height in pixels (default 240)")
    p.add_argument("--expert", action="store_true", help="run the scripted expert instead of the learned method")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_demo)

    add_policy_commands(sub)
    add_compare_command(sub)
    add_dagger_command(sub)
    add_grasp_yaw_command(sub)
    add_grounding_commands(sub)
    add_robot_commands(sub)
    add_calibrate_commands(sub)
    add_product_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sam2grasp` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _USER_ERRORS as exc:
        print(f"sam2grasp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        print(
            f"sam2grasp {args.command}: error: no space to write: {exc}. Free disk space and run it again "
            "(files written completely before are kept)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"sam2grasp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
