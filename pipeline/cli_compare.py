"""`sam2grasp eval-compare`: several `sam2grasp eval` runs side by side on one protocol (`pipeline.eval_compare`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.cli_common import print_json

_EXAMPLES = """examples:
  sam2grasp eval-compare runs/eval_head runs/eval_act_p0 runs/eval_act_p0.6 --labels SAM2Grasp,ACT,ACT \
      --out runs/compare
  (one row per label, its levels joined across runs; the first row is the reference of the seed-by-seed
  comparison; refuses runs on different seeds or settings)
"""


def _cmd_eval_compare(args: argparse.Namespace) -> int:
    from pipeline.eval_compare import compare, markdown_table, write_plot

    labels = None if args.labels is None else [s.strip() for s in args.labels.split(",")]
    result = compare([Path(r) for r in args.results], labels)
    if args.out is not None:
        out = Path(args.out)
        plot = write_plot(result, out / "success_vs_occlusion.png")
        result = dataclasses.replace(result, plot=str(plot))
        (out / "comparison.md").write_text(markdown_table(result) + "\n")
    if args.json:
        print_json(dataclasses.asdict(result))
    else:
        print(markdown_table(result))
        if result.plot is not None:
            print(f"\nplot: {result.plot}")
    return 0


def add_compare_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `eval-compare` on the `sam2grasp` sub-command parser."""
    p = sub.add_parser(
        "eval-compare",
        help="several eval runs side by side on the same seeds: Wilson intervals, closes between objects, McNemar",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "results", nargs="+", help="eval run directories or their results.json; the first policy is the reference"
    )
    p.add_argument(
        "--labels",
        default=None,
        help="comma-separated row names, one per run in order (runs with one name form one row)",
    )
    p.add_argument("--out", default=None, help="directory for comparison.md and success_vs_occlusion.png")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval_compare)
