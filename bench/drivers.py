"""Driver timing: the UR5e servo thread's period at 500 Hz under a loaded policy thread, and the Robotiq gripper
command round trip over a socket.

Usage: python bench/drivers.py [--json] [--seconds S] [--torch-threads N] [--switch-interval-ms MS]
       [--round-trips N]

Servo: the `robot.ur5e.UR5e` driver over the MOCK ur_rtde boundary of tests/fake_rtde.py (no controller can run
here), backed by the simulated cell (`SimRobot`, one 2 ms physics step per servo tick); a 100 Hz feeder thread
streams targets through `servo_joints` (each passes the safety layer in the servo thread). Two runs of S seconds
(default 5): alone, and with a policy thread running a torch transformer (4 layers, dim 256, 66 tokens, random
weights) as fast as it can. Prints p50 / p99 / max period error, |measured tick period - 2 ms|, in ms.
Gripper: `robot.robotiq.RobotiqGripper` against tests/robotiq_server.py (a test double of the URCap server on
localhost): p50 / p99 ms of one status read (GET POS) and of one motion command (SET POS SPE FOR GTO + ack).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the mocks and test servers live there

import numpy as np
import numpy.typing as npt
import torch

from robot.sim.config import HOME_Q, CellConfig
from robot.sim.env import PickEnv
from robot.sim.sim_robot import SimRobot
from robot.ur5e import UR5e
from robot.ur5e_config import UR5eConfig

F64 = npt.NDArray[np.float64]


def _policy_thread(stop: threading.Event, counter: list[float]) -> threading.Thread:
    layer = torch.nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 4).eval()
    tokens = torch.randn(1, 66, 256)

    def run() -> None:
        with torch.inference_mode():
            while not stop.is_set():
                t0 = time.perf_counter()
                model(tokens)
                counter.append(time.perf_counter() - t0)

    return threading.Thread(target=run, name="bench-policy", daemon=True)


def servo_run(seconds: float, with_policy: bool) -> dict[str, Any]:
    """One run of the servo thread in the simulated cell; period error statistics in ms."""
    fake = importlib.import_module("fake_rtde")  # tests/fake_rtde.py: the MOCK ur_rtde boundary

    env = PickEnv(CellConfig(render=False, control_dt=0.002, physics_dt=0.002, start_jitter=0.0))
    obs, _ = env.reset(0)
    ctl = fake.FakeController(period_s=0.002, sim=SimRobot(env, obs))
    cfg = UR5eConfig(host="10.0.0.2", handle_signals=False)
    stop = threading.Event()
    inference: list[float] = []
    policy = _policy_thread(stop, inference) if with_policy else None
    home = np.array(HOME_Q)
    with UR5e(cfg, factory=fake.FakeRtdeFactory(ctl), probe=lambda host, timeout: None) as robot:
        if policy is not None:
            policy.start()
        t0 = time.perf_counter()
        next_t = t0
        while (now := time.perf_counter()) - t0 < seconds:
            robot.servo_joints(home + 0.05 * np.sin(2 * np.pi * 0.25 * (now - t0)) * np.array([1, 0.5, 0, 0, 0, 1]))
            next_t += 0.01
            time.sleep(max(0.0, next_t - time.perf_counter()))
        errors = robot.servo.period_errors_s() * 1000.0
        sent = robot.servo.sent
        stop.set()
    if policy is not None:
        policy.join(5.0)
    p50, p99 = np.percentile(errors, [50, 99])
    return {
        "ticks": int(errors.size + 1),
        "servoj_sent": sent,
        "period_error_p50_ms": float(p50),
        "period_error_p99_ms": float(p99),
        "period_error_max_ms": float(errors.max()),
        "policy_inferences": len(inference),
        "inference_p50_ms": float(np.median(inference) * 1000) if inference else None,
    }


def gripper_round_trips(n: int) -> dict[str, Any] | str:
    """Round-trip times (ms) of the Robotiq driver against the URCap test server, or why they were not measured."""
    try:
        server_mod = importlib.import_module("robotiq_server")  # tests/robotiq_server.py: URCap server test double
        from robot.robotiq import RobotiqGripper
    except ImportError as exc:
        return f"missing: {exc}"
    with server_mod.RobotiqTestServer(server_mod.GripperModel(time_scale=50.0)) as server:
        gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, poll_s=0.002)
        gripper.connect()
        try:
            gripper.activate(timeout_s=5.0)
            reads, moves = [], []
            for i in range(n):
                t0 = time.perf_counter()
                gripper.position()
                reads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                gripper.move(0.085 if i % 2 else 0.0, 0.1, 40.0)
                moves.append(time.perf_counter() - t0)
        finally:
            gripper.close()
    r, m = np.array(reads) * 1000, np.array(moves) * 1000
    return {
        "n": n,
        "status_read_p50_ms": float(np.median(r)),
        "status_read_p99_ms": float(np.percentile(r, 99)),
        "move_command_p50_ms": float(np.median(m)),
        "move_command_p99_ms": float(np.percentile(m, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print a table (or one JSON object with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per servo run (default 5)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--switch-interval-ms", type=float, default=None, help="sys.setswitchinterval in ms (default: Python's 5)"
    )
    parser.add_argument("--round-trips", type=int, default=500, help="gripper round trips to time (default 500)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.torch_threads < 1 or args.round_trips < 1:
        parser.error("--seconds must be positive, --torch-threads and --round-trips at least 1")
    torch.set_num_threads(args.torch_threads)
    logging.getLogger("robot.safety").setLevel(logging.ERROR)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000.0)
    alone = servo_run(args.seconds, with_policy=False)
    loaded = servo_run(args.seconds, with_policy=True)
    gripper = gripper_round_trips(args.round_trips)
    report = {
        "servo_hz": 500,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch_threads": args.torch_threads,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "servo_alone": alone,
        "servo_with_policy": loaded,
        "gripper": gripper,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"UR5e servo thread 500 Hz (MOCK ur_rtde + simulated cell), {args.seconds:g} s per run, {os.cpu_count()} CPUs"
    )
    for name, row in (("alone", alone), ("with policy", loaded)):
        line = (
            f"  {name:<12} period error p50 {row['period_error_p50_ms']:.3f} ms  p99 {row['period_error_p99_ms']:.3f}"
            f" ms  max {row['period_error_max_ms']:.2f} ms  ticks {row['ticks']}  servoJ {row['servoj_sent']}"
        )
        if row["inference_p50_ms"] is not None:
            line += f"  | policy inference p50 {row['inference_p50_ms']:.1f} ms ({row['policy_inferences']} runs)"
        print(line)
    if isinstance(gripper, str):
        print(f"Robotiq round trip: not measured ({gripper})")
    else:
        print(
            f"Robotiq round trip over localhost ({gripper['n']} each): status read p50 "
            f"{gripper['status_read_p50_ms']:.3f} ms p99 {gripper['status_read_p99_ms']:.3f} ms; move command p50 "
            f"{gripper['move_command_p50_ms']:.3f} ms p99 {gripper['move_command_p99_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
