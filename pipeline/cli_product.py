"""Subcommands of `sam2grasp` for the product surface: serve, pick, sequence.

Exit codes: 0 every pick succeeded (or the server ended normally); 1 a pick failed or was stopped (the result is
printed); 2 bad input (an unsupported command, an invalid sequence file); 3 a part is unavailable (grounding
model, robot drivers, models); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli_common import print_json

if TYPE_CHECKING:
    import uvicorn

    from pipeline.jobs.runner import JobRunner

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 3

_SERVE_EXAMPLES = """examples:
  sam2grasp serve                                  # simulated cell on http://127.0.0.1:8000, SAM2Grasp controller
  sam2grasp serve --controller expert --port 8080  # scripted expert (privileged simulator state)
  sam2grasp serve --backend ur5e --robot-ip 192.168.1.10 --camera realsense --calibration cell.json
  SAM2GRASP_TOKEN=... sam2grasp serve --host 0.0.0.0   # only on a trusted network

The bearer token for POST requests comes from SAM2GRASP_TOKEN, else it is generated at first start, stored in
~/.config/sam2grasp/api_token and printed once. POST /stop needs no token.

Jobs are journaled in --state-dir (default $XDG_STATE_HOME/sam2grasp, else ~/.local/state/sam2grasp): after a
restart GET /jobs still lists them, and a job the server was running when it was stopped or killed is reported as
failed with reason "interrupted". SIGTERM or Ctrl+C halts the arm at once, then the server shuts down."""

_PICK_EXAMPLES = """examples:
  sam2grasp pick "pick the red cup"
  sam2grasp pick "pick the left green cube, then the blue can" --controller expert --json
  sam2grasp pick "pick the red cube" --objects "red cube,green cup,blue can" --seed 4"""

_SEQUENCE_EXAMPLES = """examples:
  sam2grasp sequence tidy.yaml
  sam2grasp sequence tidy.yaml --controller expert --json

a sequence file:
  name: tidy the table
  steps:
    - command: pick the red cup
      place: bin                      # or {position: [0.30, 0.40, 0.15]} (metres, robot base frame)
    - command: pick the green cube
      retries: 1                      # extra attempts, 0..5
      stop_on_failure: false          # default true: a failed step skips the rest"""


def _sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="scene seed of the simulated cell (default 0)")
    p.add_argument(
        "--objects", default="", help="exact objects, comma-separated ('red cup,green cube'); default random"
    )
    p.add_argument("--pace", type=float, default=0.0, help="simulated seconds per wall second (0 = unpaced, default)")
    p.add_argument(
        "--controller", choices=("method", "expert"), default=None, help="default: the sequence's, else method"
    )
    p.add_argument("--grounding", default="compact", help="grounding backend (default compact)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_product_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("serve", help="serve the API and the web page", epilog=_SERVE_EXAMPLES, formatter_class=fmt)
    p.add_argument("--backend", choices=("sim", "ur5e"), default="sim", help="sim (default) or the real ur5e")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--stop-port",
        type=int,
        default=None,
        help="TCP port of the stop guard, a process of its own serving POST /stop, which halts the arm without "
        "waiting for the API's threads; the web page stops through it (default: --port + 1; 0: no guard)",
    )
    p.add_argument("--controller", choices=("method", "expert"), default="method", help="default: method")
    p.add_argument("--robot-ip", default=None, help="UR controller address (ur5e backend)")
    p.add_argument("--camera", choices=("realsense",), default="realsense", help="camera of the ur5e backend")
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="PATH",
        help="ur5e backend (required): the camera-to-base calibration file written by `sam2grasp calibrate`",
    )
    p.add_argument("--seed", type=int, default=0, help="first scene seed of the simulated cell")
    p.add_argument("--pace", type=float, default=1.0, help="simulated seconds per wall second (default 1: real time)")
    p.add_argument("--grounding", default="compact", help="grounding backend (default compact)")
    p.add_argument(
        "--objects", default="", help="sim backend: exact objects of the first scene, comma-separated; default random"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory of the durable job journal, created if absent (default: $XDG_STATE_HOME/sam2grasp, else "
        "~/.local/state/sam2grasp)",
    )
    p.add_argument(
        "--job-history",
        type=int,
        default=1000,
        help="finished jobs kept for GET /jobs and in the journal (default 1000)",
    )
    p.add_argument(
        "--read-threads",
        type=int,
        default=8,
        help="threads serving reads and other plain endpoints (1..64, default 8; fewer keep POST /stop and the "
        "control loop quick under a flood of reads)",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("pick", help="run one command in the simulated cell", epilog=_PICK_EXAMPLES, formatter_class=fmt)
    p.add_argument("text", metavar="COMMAND", help='what to pick, e.g. "pick the red cup"')
    _sim_args(p)
    p.set_defaults(func=_cmd_pick)

    p = sub.add_parser(
        "sequence", help="run a YAML sequence in the simulated cell", epilog=_SEQUENCE_EXAMPLES, formatter_class=fmt
    )
    p.add_argument("file", metavar="FILE", help="sequence document (YAML)")
    _sim_args(p)
    p.set_defaults(func=_cmd_sequence)


def _unavailable(command: str, exc: Exception) -> int:
    print(f"sam2grasp {command}: unavailable: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.config import ApiConfig, default_state_dir
    from api.early_stop import protocol_for
    from pipeline.jobs.cell import CellUnavailable
    from pipeline.jobs.grounding_port import GroundingUnavailable
    from pipeline.jobs.sim_config import SimCellConfig

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be within 1..65535, got {args.port}")
    stop_port = args.port + 1 if args.stop_port is None else args.stop_port
    if not 0 <= stop_port <= 65535 or stop_port == args.port:
        raise ValueError(f"--stop-port must be within 0..65535 (0: none) and differ from --port, got {stop_port}")
    names = tuple(n.strip() for n in args.objects.split(",") if n.strip())
    config = ApiConfig(
        backend=args.backend,
        controller=args.controller,
        robot_ip=args.robot_ip,
        camera=args.camera,
        grounding_backend=args.grounding,
        sim=SimCellConfig(seed=args.seed, pace=args.pace, names=names),
        state_dir=args.state_dir if args.state_dir is not None else default_state_dir(),
        job_history=args.job_history,
        read_threads=args.read_threads,
        stop_port=stop_port or None,
        stop_host=args.host,
    )
    cell = None
    try:
        if args.backend == "ur5e":  # connected here with its calibration file, and closed when the server ends
            from pipeline.jobs.real_cell import connect_real_cell

            cell = connect_real_cell(args.robot_ip, args.camera, args.calibration, controller=args.controller)
        app = create_app(config, cell=cell)
    except BaseException as exc:
        if cell is not None:
            cell.close()
        if isinstance(exc, CellUnavailable | GroundingUnavailable):
            return _unavailable("serve", exc)
        raise
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it can watch the camera", file=sys.stderr)
    replay = app.state.journal_replay
    if replay is not None:
        note = f", {len(replay.interrupted)} interrupted by the last stop" if replay.interrupted else ""
        print(f"sam2grasp: job journal {replay.path}: {len(replay.jobs)} jobs{note}", flush=True)
    print(f"sam2grasp: serving the {args.backend} cell on http://{args.host}:{args.port}/", flush=True)
    if stop_port:
        print(f"sam2grasp: stop guard on http://{args.host}:{stop_port}/stop", flush=True)
    server_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=3,
        http=protocol_for(app),  # a stop's halt starts as its bytes arrive
    )
    try:
        _halting_server(server_config, app.state.runner).run()
    finally:
        if cell is not None:
            cell.close()  # the drivers' exit path: servoStop, stopScript, disconnect; gripper and camera closed
    return EXIT_OK


def _halting_server(config: uvicorn.Config, runner: JobRunner) -> uvicorn.Server:
    """A uvicorn server that, on SIGTERM or SIGINT, halts the arm and ends the running job as interrupted at once
    (on a thread of its own, so the signal handler returns at once), before uvicorn's graceful shutdown, which
    waits up to 3 s for open connections and then closes the app (the runner and the cell again, idempotently).
    Unlike plain uvicorn it does not re-raise the signal after the shutdown (that would end the process before the
    caller's `finally` blocks, such as closing a real cell's drivers): `run()` returns and serve exits with 0."""
    import contextlib
    import signal
    import threading
    from collections.abc import Iterator

    import uvicorn

    def halt(name: str, at: float) -> None:
        report = runner.shutdown(name, at)
        since = "" if report.signal_to_halt_s is None else f"{report.signal_to_halt_s * 1000:.1f} ms after the signal"
        jobs = ", ".join(report.interrupted) or "none"
        print(
            f"sam2grasp: {name}: arm halted {since} (halt {report.halt_s * 1000:.1f} ms); jobs interrupted: {jobs}",
            file=sys.stderr,
            flush=True,
        )

    class HaltingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                name = signal.Signals(sig).name
                threading.Thread(target=halt, args=(name, time.monotonic()), name="halt-on-signal").start()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)  # what uvicorn would re-raise on leaving
                if isinstance(captured, list):
                    captured.clear()

    return HaltingServer(config)


def grounding_for(cell: Any, backend: str) -> Any:
    """The grounding of local runs: the project's service for `backend` (the cell is for stand-ins in tests)."""
    from pipeline.jobs.grounding_port import load_grounding

    return load_grounding(backend)


def _run_local(args: argparse.Namespace, steps: list[Any], controller: str | None) -> int:
    """Run `steps` on a local simulated cell and report; the exit code says whether all succeeded."""
    from pipeline.jobs.grounding_port import GroundingUnavailable
    from pipeline.jobs.runner import JobRunner
    from pipeline.jobs.sim_cell import SimCell
    from pipeline.jobs.sim_config import SimCellConfig
    from pipeline.jobs.state import Controller

    names = tuple(n.strip() for n in args.objects.split(",") if n.strip())
    cell = SimCell(SimCellConfig(seed=args.seed, names=names, pace=args.pace))
    try:
        grounding = grounding_for(cell, args.grounding)
    except GroundingUnavailable as exc:
        cell.close()
        return _unavailable(args.command, exc)
    runner = JobRunner(cell, grounding, controller=Controller(args.controller or controller or "method"))
    started = time.monotonic()
    try:
        runner.start()
        jobs = runner.submit_steps(steps, sequence=len(steps) > 1)
        while not all(j.done for j in jobs):
            time.sleep(0.05)
    except KeyboardInterrupt:
        runner.stop()
        raise
    finally:
        runner.close()
        cell.close()
    results = [j.to_json() for j in jobs]
    ok = all(r["state"] == "succeeded" for r in results)
    if args.json:
        print_json({"succeeded": ok, "seconds": round(time.monotonic() - started, 2), "jobs": results})
    else:
        for r in results:
            why = f" ({r['reason']}: {r['detail']})" if r["reason"] else ""
            print(f"{r['command']!r} → {(r['target'] or {}).get('phrase', '?')}: {r['state']}{why}")
            print(f"    {r['controller']}; seconds per state: {r['timings']}")
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_pick(args: argparse.Namespace) -> int:
    from pipeline.jobs.runner import StepRequest

    return _run_local(args, [StepRequest(args.text)], None)


def _cmd_sequence(args: argparse.Namespace) -> int:
    from pipeline.sequence import load_sequence

    doc = load_sequence(Path(args.file))
    return _run_local(args, list(doc.steps), None if doc.controller is None else doc.controller.value)
