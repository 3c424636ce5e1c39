"""Control-loop timing under load: does the 100 Hz loop keep its period while a torch policy runs beside it?

Usage: python bench/runtime.py [--json] [--seconds S] [--torch-threads N] [--switch-interval-ms MS]
       [--realtime-priority P] [--stand-in-model]

Runs the `ControlLoop` at 100 Hz against a fake robot (a mock: perfect tracking, no I/O) for S seconds (default 10)
twice: alone, and with a `PolicyLoop` running a torch model in the same process as fast as it can. The model is
`policy.act.ACTPolicy` (dim 256, 4 encoder + 1 decoder layers, chunk 50, 65 F_t tokens of 64 channels + latent,
state and extras tokens) with random weights, or, when that module is missing, a plain torch transformer encoder
of the same size (4 layers, dim 256, 66 tokens); the output says which. Prints p50 / p99 / max period error
(lateness of each tick behind its absolute deadline, ms) for both runs and the p99 ratio (with policy / alone).
Target (ARCHITECTURE §5): p99 <= 2 ms while the policy thread runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt
import torch

from pipeline.runtime import ChunkQueue, ControlConfig, ControlLoop, LoopResult, PolicyLoop
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET

F64 = npt.NDArray[np.float64]
PERIOD = 0.01
CHUNK = 50


class BenchRobot:
    """Mock `Robot` (no real arm here): tracks every target perfectly and does no I/O."""

    def __init__(self) -> None:
        self.q = np.array(HOME_Q)
        self.commands = 0

    def joint_positions(self) -> F64:
        return self.q.copy()

    def servo_joints(self, q: F64) -> None:
        self.q = q
        self.commands += 1

    def stop(self) -> None:
        pass

    def status(self) -> RobotStatus:
        return RobotStatus()


class TorchPredictor:
    """A torch model behind the `ChunkPredictor` protocol: random weights, so the chunk is the current joints plus
    a small model-dependent offset (keeps the commands realistic for the safety layer)."""

    def __init__(self, stand_in: bool = False) -> None:
        try:
            if stand_in:
                raise ImportError("stand-in model requested")
            from policy.act import ACTPolicy, PolicyInput
            from policy.act_config import ACTConfig
        except ImportError:
            layer = torch.nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
            self.model: torch.nn.Module = torch.nn.TransformerEncoder(layer, 4).eval()
            self.head: torch.nn.Module = torch.nn.Linear(256, 7 * CHUNK)
            self.tokens = torch.randn(1, 66, 256)
            self.description = (
                "stand-in torch TransformerEncoder (policy.act "
                + ("not used on request" if stand_in else "missing")
                + "): 4 layers, dim 256, 66 tokens"
            )
            self.kind = "encoder"
            return
        cfg = ACTConfig(feature_spec="pooled8", token_dim=64, n_tokens=65, chunk_size=CHUNK)
        self.act: Any = ACTPolicy(cfg).eval()
        self.act_input = PolicyInput
        self.tokens = torch.randn(65, 64)
        n_tok = cfg.n_tokens + 3
        params = sum(p.numel() for p in self.act.parameters())
        self.description = (
            f"policy.act.ACTPolicy: dim {cfg.dim_model}, {cfg.n_encoder_layers} encoder + {cfg.n_decoder_layers} "
            f"decoder layers, chunk {cfg.chunk_size}, {n_tok} encoder tokens, {params / 1e6:.2f} M parameters"
        )
        self.kind = "act"

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[Any]:
        with torch.inference_mode():
            if self.kind == "act":
                inp = self.act_input.from_numpy(self.tokens.numpy(), np.zeros(7, np.float32), state)
                out = self.act.predict_action_chunk(inp)[0].numpy()
            else:
                out = self.head(self.model(self.tokens)[:, 0]).reshape(CHUNK, 7).numpy()
        chunk = np.tile(np.asarray(state, dtype=np.float64), (CHUNK, 1))
        chunk[:, :6] += 1e-3 * np.tanh(out[:, :6])
        chunk[:, 6] = 0.05
        return chunk


def run_once(seconds: float, predictor: TorchPredictor | None, rt: int | None) -> tuple[LoopResult, F64, int]:
    """One control run of `seconds`; (result, inference times in seconds, chunks queued)."""
    robot = BenchRobot()
    queue = ChunkQueue()
    # a command timeout of 5 s so that one long stall is measured instead of ending the run
    safety = SafetyLayer(SafetyLimits(command_timeout=5.0), tcp_offset=TCP_OFFSET, period_s=PERIOD)
    cfg = ControlConfig(period_s=PERIOD, hold_timeout_s=5.0, first_prediction_timeout_s=30.0, realtime_priority=rt)
    loop = ControlLoop(robot, queue, safety, config=cfg)
    policy: PolicyLoop | None = None
    if predictor is None:
        queue.put(np.tile(np.append(robot.q, 0.05), (int(seconds / PERIOD) + 1000, 1)), 0)
    else:
        predictor.predict(None, np.append(robot.q, 0.05).astype(np.float32))  # warm-up outside the timed run

        def observe() -> tuple[Any, npt.NDArray[Any], int]:
            return None, np.append(robot.q, 0.05).astype(np.float32), loop.current_tick

        policy = PolicyLoop(predictor, observe, queue, control=loop)
        policy.start()
    loop.start()
    time.sleep(seconds)
    loop.stop()
    result = loop.join(10.0)
    if policy is not None:
        policy.stop()
        policy.join(10.0)
    if result is None:
        raise RuntimeError("the control loop did not end within 10 s of stop()")
    times = policy.inference_times() if policy is not None else np.zeros(0)
    return result, times, policy.chunks if policy is not None else 0


def summary(result: LoopResult, times: F64, chunks: int) -> dict[str, Any]:
    ms = 1000.0
    return {
        "ticks": result.ticks,
        "end_reason": result.reason.value,
        "missed_ticks": result.missed_ticks,
        "period_error_p50_ms": result.period_error_p50_s * ms,
        "period_error_p99_ms": result.period_error_p99_s * ms,
        "period_error_max_ms": result.period_error_max_s * ms,
        "chunks": chunks,
        "inference_p50_ms": float(np.percentile(times, 50) * ms) if times.size else None,
        "inference_p99_ms": float(np.percentile(times, 99) * ms) if times.size else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--switch-interval-ms", type=float, default=None, help="sys.setswitchinterval in ms (default: Python's 5 ms)"
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=None,
        help="SCHED_FIFO priority 1..99 for the control thread (needs root or CAP_SYS_NICE; default: normal)",
    )
    parser.add_argument("--stand-in-model", action="store_true", help="use the plain transformer, not ACTPolicy")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.torch_threads < 1:
        parser.error("--seconds must be positive and --torch-threads at least 1")
    torch.set_num_threads(args.torch_threads)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000.0)
    predictor = TorchPredictor(stand_in=args.stand_in_model)
    alone = summary(*run_once(args.seconds, None, args.realtime_priority))
    loaded = summary(*run_once(args.seconds, predictor, args.realtime_priority))
    ratio = loaded["period_error_p99_ms"] / max(alone["period_error_p99_ms"], 1e-6)
    report = {
        "seconds": args.seconds,
        "period_ms": PERIOD * 1000,
        "model": predictor.description,
        "torch_threads": args.torch_threads,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "realtime_priority": args.realtime_priority,
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "alone": alone,
        "with_policy": loaded,
        "p99_ratio_with_policy_over_alone": ratio,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"control loop {1 / PERIOD:.0f} Hz, {args.seconds:g} s per run, {os.cpu_count()} CPUs, "
        f"load average {report['load_average_1min']:.2f}, switch interval {report['switch_interval_ms']:.1f} ms"
    )
    print(f"policy model: {predictor.description} (torch threads {args.torch_threads})")
    for name, row in (("alone", alone), ("with policy", loaded)):
        line = (
            f"  {name:<12} period error p50 {row['period_error_p50_ms']:.3f} ms  p99 {row['period_error_p99_ms']:.3f}"
            f" ms  max {row['period_error_max_ms']:.2f} ms  ticks {row['ticks']}  missed {row['missed_ticks']}"
        )
        if row["inference_p50_ms"] is not None:
            line += (
                f"  | inference p50 {row['inference_p50_ms']:.1f} ms  p99 {row['inference_p99_ms']:.1f} ms"
                f"  chunks {row['chunks']}"
            )
        print(line)
    print(f"  p99 ratio (with policy / alone): {ratio:.2f}   target: p99 <= 2 ms with the policy running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
