"""Fault injection: every scenario of `pipeline.faults` in the simulated cell and the driver test doubles.

Usage: python bench/faults.py [--json] [--only SUBSTRING ...]

Prints one row per scenario: expected end state, end state, reason, time to safe stop (ms from the fault to the arm
holding still or stopped: simulated time for the cell scenarios, measured wall time for the threaded policy,
gripper and process scenarios), split into the detection window (fault to the runtime acting on it: a hold begun
or the run's end decided; mostly a configured limit, e.g. the camera's 0.5 s timeout, that lets a pick ride
through what the tracker's memory carries) and the reaction (acting to safe), data intact, and commands outside
the safety limits. With --json prints one object whose `scenarios` list holds those fields.
Stand-ins: the cell scenarios use a stand-in tracker and head (pipeline.faults.sim_cell); the UR5e runs over the
MOCK ur_rtde boundary (tests/fake_rtde.py) and the gripper against the URCap server test double
(tests/robotiq_server.py); a full disk is a file-size limit (RLIMIT_FSIZE) on a child process.
Bad files (pipeline.faults.bad_files): damaged policy and tracker checkpoints and calibration files, a truncated
dataset episode, a full disk while caching; each must end in an error naming the file, nothing moved or damaged.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import robot.sim  # noqa: F401  (selects MuJoCo's headless backend before mujoco is imported)
from pipeline.faults.bad_files import bad_file_scenarios
from pipeline.faults.core import ScenarioResult
from pipeline.faults.perception import CAMERA, TRACKER
from pipeline.faults.policy_faults import POLICY
from pipeline.faults.process import disk_full_recording, existing_kill_test, kill_during_train
from pipeline.faults.robot_faults import ROBOT
from pipeline.faults.server_process import server_sigkill_mid_pick, server_sigterm_mid_pick

COLUMNS = (
    "scenario",
    "expected_end_state",
    "end_state",
    "reason",
    "safe_stop_ms",
    "detect_ms",
    "react_ms",
    "data_intact",
    "limit_violations",
)
#: The issue's bound on the time to a safe stop, milliseconds (the summary counts reactions over it).
SAFE_STOP_MS = 100.0


def scenarios(tmp: Path) -> dict[str, Callable[[], ScenarioResult]]:
    """Every scenario by name, in table order."""
    process: dict[str, Callable[[], ScenarioResult]] = {
        "process_kill_during_collect": lambda: existing_kill_test(
            "test_dataset_kill.py::test_sigkill_at_random_moments", "process_kill_during_collect"
        ),
        "process_kill_during_cache": lambda: existing_kill_test(
            "test_cache.py::test_kill_then_rerun_completes", "process_kill_during_cache"
        ),
        "process_kill_during_train": lambda: kill_during_train(tmp / "train"),
        "process_disk_full_recording": lambda: disk_full_recording(tmp / "dataset"),
        "server_sigterm_mid_pick": lambda: server_sigterm_mid_pick(tmp / "server_sigterm"),
        "server_sigkill_mid_pick": lambda: server_sigkill_mid_pick(tmp / "server_sigkill"),
    }
    return {**CAMERA, **TRACKER, **POLICY, **ROBOT, **process, **bad_file_scenarios(tmp / "bad_files")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--only", nargs="+", action="extend", default=[], help="run only scenarios whose name holds one of these"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.disable(logging.ERROR)
    rows = []
    started = time.perf_counter()
    if not args.json:
        print(_header(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in scenarios(Path(tmp)).items():
            if args.only and not any(s in name for s in args.only):
                continue
            t0 = time.perf_counter()
            row = run().row()
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            if not args.json:
                print(_line(row), flush=True)
    failed = [r["scenario"] for r in rows if not r["passed"]]
    timed = [r for r in rows if r["react_ms"] is not None]
    slow = [r["scenario"] for r in timed if r["react_ms"] > SAFE_STOP_MS]
    if args.json:
        doc = {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "seconds": round(time.perf_counter() - started, 1),
            "failed": failed,
            "react_over_limit": slow,
            "scenarios": rows,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"{len(rows) - len(failed)}/{len(rows)} scenarios reached their defined end state safely")
        print(
            f"{len(timed) - len(slow)}/{len(timed)} timed scenarios safe within {SAFE_STOP_MS:.0f} ms of the runtime "
            f"acting on the fault{': over it ' + ', '.join(slow) if slow else ''}"
        )
    return 1 if failed else 0


def _ms(value: object) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _header() -> str:
    return (
        f"{'scenario':<32} {'expected':<9} {'end':<9} {'reason':<18} {'safe ms':>8} {'detect':>8} {'react':>7} "
        f"{'data':>4} {'lim':>3}"
    )


def _line(row: dict[str, object]) -> str:
    return (
        f"{row['scenario']:<32} {row['expected_end_state']:<9} {row['end_state']:<9} {str(row['reason'])[:18]:<18} "
        f"{_ms(row['safe_stop_ms']):>8} {_ms(row['detect_ms']):>8} {_ms(row['react_ms']):>7} "
        f"{'yes' if row['data_intact'] else 'no':>4} {row['limit_violations']:>3}"
    )


if __name__ == "__main__":
    sys.exit(main())
