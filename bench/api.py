"""Benchmark of the product surface through HTTP, in one run, against a server in a child process.

Measures: seconds from POST /pick to the first arm command and to the job's end; stop latency (POST /stop until
motion is halted, and commanded velocity then checked zero); read requests per second while a job runs; and
end-to-end success over held-out commands (scene seeds from 10,000,000 on, never training scenes), per controller.
A success is the job succeeding on the object the command names (the simulator's instance id).

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/api.py --commands 50 --controllers expert,method
    .venv/bin/python bench/api.py --grounding stand-in --json

--grounding compact (default) uses the project's grounding service; stand-in uses tests/fake_grounding.py, which
reads the simulator's segmentation (privileged): say so when reporting its numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path, and bench/grounding.py would hide the `grounding` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL = {"succeeded", "failed", "stopped"}


# ---------------------------------------------------------------------------------------------- server
def serve_child(
    port: int,
    grounding: str,
    pace: float,
    read_threads: int = 8,
    switch_interval_s: float | None = 0.001,
    early_stop: bool = True,
    stop_port: int | None = None,
) -> None:
    """Run the API (simulated cell, expert default controller) on 127.0.0.1:`port` until killed; early_stop:
    serve with the stop-at-socket protocol as `sam2grasp serve` does (False: uvicorn's plain protocol);
    stop_port: the stop guard's port (`ApiConfig.stop_port`; None: none)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack (diagnosing a stall)
    import torch
    import uvicorn

    from api.app import create_app
    from api.config import ApiConfig
    from api.early_stop import protocol_for
    from pipeline.jobs.sim_cell import SimCell
    from pipeline.jobs.sim_config import SimCellConfig
    from pipeline.jobs.state import Controller

    torch.set_num_threads(1)
    cell = SimCell(SimCellConfig(seed=0, pace=pace, max_pick_s=15.0))
    config = ApiConfig(
        token=TOKEN,
        token_file=None,
        controller=Controller.EXPERT,
        queue_capacity=64,
        read_threads=read_threads,
        switch_interval_s=switch_interval_s,
        stop_port=stop_port,
    )
    if grounding == "stand-in":  # the tests' stand-in: privileged simulator segmentation, not a grounder
        stand_in = importlib.import_module("fake_grounding")
        app = create_app(config, cell=cell, grounding=stand_in.fake_grounding(cell))
    else:
        from pipeline.jobs.grounding_port import load_grounding

        app = create_app(config, cell=cell, grounding=load_grounding(grounding))
    http = protocol_for(app) if early_stop else "auto"
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http=http)


def start_server(
    grounding: str,
    pace: float,
    read_threads: int = 8,
    switch_interval_ms: float = 1.0,
    early_stop: bool = True,
    stop_guard: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """The server child on a free port; read_threads and switch_interval_ms (0 = Python's default) as in
    `ApiConfig.read_threads` / `switch_interval_s`; early_stop as in `serve_child`; stop_guard: run the stop guard
    too (on another free port, which GET /health's `stop_port` gives), as `sam2grasp serve` does."""
    from pipeline.faults.server_process import free_port

    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    cmd = [sys.executable, __file__, "--child", str(port), "--grounding", grounding, "--pace", str(pace)]
    cmd += ["--read-threads", str(read_threads), "--switch-interval-ms", str(switch_interval_ms)]
    cmd += [] if early_stop else ["--plain-protocol"]
    cmd += ["--child-stop-port", str(free_port())] if stop_guard else []
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /health within 120 s")


# ---------------------------------------------------------------------------------------------- measurements
def pick(client: httpx.Client, command: str, controller: str) -> tuple[dict[str, Any], float]:
    """POST /pick; (job JSON, client time just before the request, epoch seconds)."""
    t0 = time.time()
    r = client.post("/pick", json={"command": command, "controller": controller}, headers=AUTH)
    if r.status_code != 202:
        raise RuntimeError(f"POST /pick answered {r.status_code}: {r.text}")
    job: dict[str, Any] = r.json()
    return job, t0


def wait_end(client: httpx.Client, job_id: str, timeout_s: float = 300.0) -> tuple[dict[str, Any], float]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job, time.time()
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} did not end in {timeout_s} s")


def reset(client: httpx.Client, seed: int, objects: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"seed": seed} if objects is None else {"seed": seed, "objects": objects}
    r = client.post("/scene/reset", json=body, headers=AUTH, timeout=120)
    if r.status_code != 200:
        raise RuntimeError(f"POST /scene/reset answered {r.status_code}: {r.text}")
    out: dict[str, Any] = r.json()
    return out


def latency_and_reads(client: httpx.Client, url: str) -> dict[str, Any]:
    """One expert pick: POST → first command, POST → end, and GET throughput from another client meanwhile."""
    reset(client, 11, ["red cube", "green cup", "blue can"])
    counts = [0]
    stop_reading = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop_reading.is_set():
                c.get("/health")
                c.get("/jobs")
                counts[0] += 2

    job, t0 = pick(client, "pick the red cube", "expert")
    thread = threading.Thread(target=reader)
    started = time.monotonic()
    thread.start()
    done, t_end = wait_end(client, job["id"])
    stop_reading.set()
    thread.join()
    read_s = time.monotonic() - started
    first = client.get("/health").json()["robot"]["first_command_at"]
    return {
        "state": done["state"],
        "post_to_first_command_s": None if first is None else first - t0,
        "post_to_end_s": t_end - t0,
        "reads_per_s_during_job": counts[0] / read_s,
        "timings": done["timings"],
    }


def stop_latency(client: httpx.Client, repeats: int) -> dict[str, Any]:
    """POST /stop mid-pick: the request's round trip (it returns once motion is halted), the server's halt time,
    and whether the commanded joints then stay put (zero commanded velocity)."""
    trips, halts, still = [], [], []
    for i in range(repeats):
        reset(client, 20 + i, ["green can", "red ball"])
        job, _ = pick(client, "pick the green can", "expert")
        end = time.monotonic() + 30
        while client.get(f"/jobs/{job['id']}").json()["state"] not in ("tracking", "grasping", "lifting"):
            if time.monotonic() > end:
                raise RuntimeError("the pick never started moving")
            time.sleep(0.01)
        time.sleep(0.4)
        t0 = time.perf_counter()
        r = client.post("/stop")
        trips.append(time.perf_counter() - t0)
        halts.append(r.json()["halt_s"])
        a = client.get("/health").json()["robot"]
        time.sleep(0.2)
        b = client.get("/health").json()["robot"]
        still.append(a["joint_target_rad"] == b["joint_target_rad"] and not b["moving"])
    return {
        "stop_round_trip_median_s": statistics.median(trips),
        "stop_round_trip_max_s": max(trips),
        "server_halt_max_s": max(halts),
        "zero_velocity_after_stop": all(still),
        "repeats": repeats,
    }


def success(client: httpx.Client, controller: str, n: int, first_seed: int) -> dict[str, Any]:
    """Held-out commands: scene seed first_seed + i (random 3-5 objects), a random target named as a person would."""
    import numpy as np

    from robot.sim.naming import pick_command
    from robot.sim.scene import SceneRequest, sample_scene

    outcomes: dict[str, int] = {}
    wins, seconds = 0, []
    for i in range(n):
        seed = first_seed + i
        scene = sample_scene(seed, SceneRequest(n_objects=(3, 5)))
        got = reset(client, seed)
        if got["objects"] != [o.name for o in scene.objects]:
            raise RuntimeError(f"the server's scene {got['objects']} differs from the bench's for seed {seed}")
        target = scene.objects[int(np.random.default_rng(seed).integers(len(scene.objects)))]
        job, t0 = pick(client, pick_command(scene, target.instance), controller)
        done, t_end = wait_end(client, job["id"])
        right = (done["target"] or {}).get("instance") == target.instance
        ok = done["state"] == "succeeded" and right
        wins += int(ok)
        key = "succeeded" if ok else ("wrong_target" if done["state"] == "succeeded" else str(done["reason"]))
        outcomes[key] = outcomes.get(key, 0) + 1
        seconds.append(t_end - t0)
        print(f"  {controller} {i + 1}/{n}: {job['command']!r} -> {key}", file=sys.stderr, flush=True)
    return {
        "controller": controller,
        "commands": n,
        "succeeded": wins,
        "rate": wins / n,
        "wilson95": wilson(wins, n),
        "outcomes": outcomes,
        "median_s_per_command": statistics.median(seconds),
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (round(centre - half, 4), round(centre + half, 4))


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The server child's thread-pool and interpreter-lock settings (the benchmarks compare them)."""
    parser.add_argument("--read-threads", type=int, default=8, help="threads for plain endpoints (default 8)")
    parser.add_argument(
        "--switch-interval-ms", type=float, default=1.0, help="interpreter-lock switch interval, 0 = Python's 5 ms"
    )
    parser.add_argument(
        "--plain-protocol",
        action="store_true",
        help="serve with uvicorn's plain HTTP protocol instead of the stop-at-socket one (for comparison)",
    )
    parser.add_argument("--child-stop-port", type=int, default=None, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grounding", default="compact", help="compact (default) or stand-in (privileged, tests)")
    parser.add_argument("--pace", type=float, default=0.0, help="simulated s per wall s of the server (0 = unpaced)")
    parser.add_argument("--commands", type=int, default=50, help="held-out commands per controller (default 50)")
    parser.add_argument("--controllers", default="expert,method", help="comma-separated (default expert,method)")
    parser.add_argument("--stops", type=int, default=5, help="stop-latency repeats (default 5)")
    add_server_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.child is not None:
        switch = args.switch_interval_ms / 1000 if args.switch_interval_ms > 0 else None
        serve_child(
            args.child,
            args.grounding,
            args.pace,
            args.read_threads,
            switch,
            not args.plain_protocol,
            args.child_stop_port,
        )
        return 0
    proc, url = start_server(
        args.grounding, args.pace, args.read_threads, args.switch_interval_ms, not args.plain_protocol
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            report: dict[str, Any] = {"grounding": args.grounding, "server_pace": args.pace}
            report["latency"] = latency_and_reads(client, url)
            report["stop"] = stop_latency(client, args.stops)
            report["success"] = [
                success(client, c.strip(), args.commands, 10_000_000 + 1000 * k)
                for k, c in enumerate(args.controllers.split(","))
                if c.strip() and args.commands > 0
            ]
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lat, stop = report["latency"], report["stop"]
    first = lat["post_to_first_command_s"]
    rows = [
        ("POST /pick -> first arm command", "n/a" if first is None else f"{first * 1000:.0f} ms"),
        ("POST /pick -> job end (expert, with place)", f"{lat['post_to_end_s']:.2f} s ({lat['state']})"),
        ("reads/s (GET /health + /jobs) during a job", f"{lat['reads_per_s_during_job']:.0f}"),
        (
            "POST /stop round trip, median / max",
            f"{stop['stop_round_trip_median_s'] * 1000:.1f} / "
            f"{stop['stop_round_trip_max_s'] * 1000:.1f} ms (target <= 100)",
        ),
        ("server halt, max", f"{stop['server_halt_max_s'] * 1000:.1f} ms"),
        ("commanded velocity zero after stop", str(stop["zero_velocity_after_stop"])),
    ]
    for s in report["success"]:
        lo, hi = s["wilson95"]
        rows.append(
            (
                f"end-to-end success, {s['controller']} ({args.grounding} grounding)",
                f"{s['succeeded']}/{s['commands']} = {s['rate']:.0%} [{lo:.0%}, {hi:.0%}] {s['outcomes']}",
            )
        )
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
