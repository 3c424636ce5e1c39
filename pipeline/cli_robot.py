"""Subcommands of `sam2grasp` for real-cell drivers: record."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipeline.cli_common import print_json

RECORD_EXAMPLES = """examples:
  # the simulated cell (the scripted expert plays the hand), 3 episodes of the red cube, keys from stdin
  sam2grasp record --robot sim --camera sim --target "red cube" --out data/sim_teach --episodes 3

  # the real cell: UR5e at 192.168.1.10 in freedrive, RealSense, prompt box drawn around the target
  sam2grasp record --robot ur5e --camera realsense --host 192.168.1.10 --box 250,180,330,260 \\
      --calibration calib/cell.json --out data/teach

keys (type one, then Enter): s start an episode, e end and save it, d discard it, q quit
"""


def parse_box(text: str) -> tuple[float, float, float, float]:
    """`x0,y0,x1,y1` pixels with x0 < x1 and y0 < y1."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--box must be four numbers x0,y0,x1,y1 (pixels), got {text!r}") from None
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise ValueError(f"--box needs 0 <= x0 < x1 and 0 <= y0 < y1 (pixels), got {text!r}")
    return (x0, y0, x1, y1)


def _cmd_record(args: argparse.Namespace) -> int:
    from pipeline.record import RealRecordCell, RecordCell, SimRecordCell, StdinKeys, record

    if args.fps <= 0 or args.fps > 100:
        raise ValueError(f"--fps must be within (0, 100] frames per second, got {args.fps}")
    box = parse_box(args.box) if args.box is not None else None
    period = 1.0 / args.fps
    cell: RecordCell
    if (args.robot, args.camera) == ("sim", "sim"):
        if box is not None:
            raise ValueError("--box is for the real camera; in the simulated cell name the object with --target")
        if args.calibration is not None:
            raise ValueError("--calibration is for the real camera; the simulated cell records its own scene camera")
        cell = SimRecordCell(args.target, args.seed, args.width, args.height, period)
    elif (args.robot, args.camera) == ("ur5e", "realsense"):
        if args.host is None:
            raise ValueError("--robot ur5e needs --host IP (the controller's address)")
        calibration = None
        if args.calibration is not None:
            from robot.calibration import load_calibration

            calibration = load_calibration(args.calibration)  # CalibrationFileError (a ValueError) names the flaw
        else:
            print(
                "note: no --calibration: episodes carry no camera record, so heads trained with --place cannot "
                "learn from them",
                file=sys.stderr,
            )
        cell = RealRecordCell(
            args.host, box, args.target, period, args.tcp_offset, args.width, args.height, calibration
        )
    else:
        raise ValueError(
            f"--robot {args.robot} with --camera {args.camera} is not a cell; valid: sim+sim, ur5e+realsense"
        )
    report = record(Path(args.out), cell, StdinKeys(), episodes=args.episodes, max_episode_s=args.max_episode_s)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(
            f"{len(report.saved)} episodes saved ({report.frames} frames), {report.discarded} discarded, in {args.out}"
        )
    return 0


def add_robot_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
    p = sub.add_parser(
        "record",
        help="record kinesthetic demonstrations (arm in teach mode) into a dataset",
        description="Record demonstrations by moving the arm by hand (teach mode), sampled at the policy rate "
        "into the same dataset layout as simulated data.",
        epilog=RECORD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--robot", choices=("ur5e", "sim"), required=True, help="the arm")
    p.add_argument("--camera", choices=("realsense", "sim"), required=True, help="the camera")
    p.add_argument("--out", required=True, help="dataset directory (created, or appended to)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--box", help="prompt box x0,y0,x1,y1 in pixels of the first frame (real camera)")
    target.add_argument("--target", help="the object's name, e.g. 'red cube' (sim: random when left out)")
    p.add_argument("--episodes", type=int, default=None, help="stop after saving this many (default: until q)")
    p.add_argument("--host", help="UR controller IP address (with --robot ur5e)")
    p.add_argument("--fps", type=float, default=20.0, help="samples per second, the policy rate (default 20)")
    p.add_argument("--max-episode-s", type=float, default=120.0, help="an episode is saved at this length (s)")
    p.add_argument("--tcp-offset", type=float, default=0.0, help="metres from the flange to the TCP (ur5e)")
    p.add_argument(
        "--calibration",
        default=None,
        help="camera-to-base calibration file from `sam2grasp calibrate` (ur5e): opens that camera and is recorded "
        "with every episode, as heads trained with --place need",
    )
    p.add_argument("--width", type=int, default=640, help="camera width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, help="camera height in pixels (default 480)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (sim)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_record)
