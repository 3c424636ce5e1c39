"""The HTTP API and web page of the pick cell: `create_app(config)`.

POST /pick and /sequence queue jobs (202); GET /jobs, /jobs/{id} read them; POST /jobs/{id}/choose resolves an
ambiguous command; POST /stop halts motion at once and cancels the queue; GET /stream is the camera as MJPEG with
overlays; WebSocket /events carries job and robot events; GET /health the cell's state; GET / the web page.
State-changing endpoints need the bearer token, except POST /stop: stopping can only make the cell safer and must
never be refused, so it needs no token. Bind to 127.0.0.1 unless the network is trusted.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from api.auth import BearerAuth, resolve_token
from api.config import ApiConfig
from api.early_stop import EarlyStop, stop_now
from api.errors import install_error_handlers
from api.events import EventBus
from api.middleware import BodyLimit, SecurityHeaders
from api.schemas import (
    ChooseRequest,
    Health,
    JobList,
    JobModel,
    PickRequest,
    ResetRequest,
    SceneReset,
    SequenceAccepted,
    SequenceCommands,
    SequenceDocument,
    SequenceRequest,
    StopResponse,
    error_responses,
    stream_responses,
)
from api.stop_guard import StopGuard
from api.stop_port import stop_answer
from api.stream import BOUNDARY, ViewerGate, max_viewers_from_env, mjpeg_frames
from pipeline.jobs.cell import Cell, CellUnavailable
from pipeline.jobs.grounding_port import Grounding, load_grounding
from pipeline.jobs.journal import JobJournal
from pipeline.jobs.runner import JobRunner
from pipeline.jobs.state import Controller, JobNotWaiting
from pipeline.sequence import from_commands, parse_sequence_text, validate_sequence
from robot.stop_signal import StopSignal

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)


def build_cell(config: ApiConfig) -> Cell:
    """The cell of `config.backend`: the simulated cell, or the real UR5e (imported only then)."""
    if config.backend == "sim":
        from pipeline.jobs.sim_cell import SimCell

        return SimCell(config.sim)
    from pipeline.jobs.real_cell import connect_real_cell

    return connect_real_cell(config.robot_ip, config.camera)


def create_app(config: ApiConfig, *, cell: Cell | None = None, grounding: Grounding | None = None) -> FastAPI:
    """The API over `cell` (default: built from `config`) with `grounding` (default: the project's service).
    With `config.state_dir`, the job journal there is replayed first (JournalError when it cannot be used)."""
    owns_cell = cell is None
    the_cell = cell if cell is not None else build_cell(config)
    journal = None if config.state_dir is None else JobJournal(config.state_dir, config.job_history)
    try:
        the_grounding = grounding if grounding is not None else load_grounding(config.grounding_backend)
        token, generated = resolve_token(config.token, config.token_file)
        replay = None if journal is None else journal.open()
    except BaseException:
        if owns_cell:
            the_cell.close()
        raise
    if generated:
        where = f" (stored in {config.token_file})" if config.token_file else ""
        print(f"sam2grasp API token{where}: {token}", flush=True)
    bus = EventBus()
    runner = JobRunner(
        the_cell,
        the_grounding,
        controller=config.controller,
        capacity=config.queue_capacity,
        history=config.job_history,
        choice_timeout_s=config.choice_timeout_s,
        on_event=bus.publish,
        journal=journal,
    )
    if replay is not None:
        runner.restore(replay.jobs)
    closing = threading.Event()
    stop_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stop")
    early_stop = EarlyStop(runner.stop, stop_lane)
    guards: list[StopGuard] = []  # the stop guard while the server runs (config.stop_port)
    viewers = ViewerGate(config.stream_max_viewers or max_viewers_from_env())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the thread pool that runs every plain endpoint (process-wide, so set where the server's loop runs)
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.read_threads
        switch = sys.getswitchinterval()
        if config.switch_interval_s is not None:
            sys.setswitchinterval(config.switch_interval_s)
        load = getattr(the_cell, "load_agent", None)
        if config.controller == Controller.METHOD and load is not None:
            try:  # load the method's models before the first pick needs them
                await asyncio.to_thread(load)
            except (OSError, ValueError, RuntimeError) as exc:
                log.error("the method's models could not be loaded (GET /health says why): %s", exc)
        runner.start()
        if config.stop_port is not None:
            signal = StopSignal.create()
            attach = getattr(the_cell, "attach_stop_signal", None)
            if attach is not None:
                attach(signal)  # the simulated arm holds from its next control step once the guard raises a stop
            watched = attach is not None and bool(getattr(the_cell, "halts_on_raised_stop", False))
            guard = StopGuard(runner.stop, signal, watched, config.stop_host, config.stop_port, config.allowed_origins)
            try:
                await asyncio.to_thread(guard.start)
            except RuntimeError:
                if attach is not None:
                    attach(None)
                signal.close()
                raise
            guards.append(guard)
            log.info("stop guard: POST /stop on http://%s:%d/stop", config.stop_host, guard.port)
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            closing.set()
            for guard in guards:
                guard.close()  # no further stop comes through it; the API's POST /stop still serves
            stop_lane.shutdown(wait=False)
            await asyncio.to_thread(runner.close)  # motion ends here: only then is the signal let go
            detach = getattr(the_cell, "attach_stop_signal", None)
            for guard in guards:
                if detach is not None:
                    detach(None)
                guard.signal.close()
            guards.clear()
            if owns_cell:
                await asyncio.to_thread(the_cell.close)
            if journal is not None:
                journal.close()

    app = FastAPI(
        title="sam2grasp",
        version="0.1.0",
        summary="Text-commanded picking with a UR5e: pick jobs, sequences, stop, live camera stream",
        lifespan=lifespan,
    )
    app.state.runner, app.state.cell, app.state.bus, app.state.config = runner, the_cell, bus, config
    app.state.journal_replay = replay  # what the journal held at start (None without a state directory)
    app.state.early_stop = early_stop  # serve with api.early_stop.protocol_for(app) so stops start at the socket
    app.state.stop_guards = guards  # the running stop guard (api.stop_guard), if config.stop_port is set
    install_error_handlers(app)
    if config.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(SecurityHeaders, stop_port=lambda: guards[0].port if guards else None)
    auth = Depends(BearerAuth(token))
    post_errors = error_responses(400, 401, 409, 413, 422, 429)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.post("/pick", status_code=202, response_model=JobModel, dependencies=[auth], responses=post_errors)
    def pick(body: PickRequest) -> JSONResponse:
        """Queue the pick(s) a command names; returns the first job (each object named becomes one job)."""
        ctrl = None if body.controller is None else Controller(body.controller)
        jobs = runner.submit(body.command, controller=ctrl)
        first = jobs[0]
        return JSONResponse(first.to_json(), status_code=202, headers={"Location": f"/jobs/{first.id}"})

    @app.post("/sequence", status_code=202, response_model=SequenceAccepted, dependencies=[auth], responses=post_errors)
    def sequence(body: SequenceRequest) -> JSONResponse:
        """Queue a sequence: plain `commands`, the document's `steps` as JSON, or the YAML `document`."""
        ctrl = None if body.controller is None else Controller(body.controller)
        if isinstance(body, SequenceDocument):
            doc = parse_sequence_text(body.document, "document")
        elif isinstance(body, SequenceCommands):
            doc = from_commands(body.commands, ctrl)
        else:
            steps = [s.model_dump(exclude_none=True) for s in body.steps]
            doc = validate_sequence({"steps": steps, "name": body.name or ""}, "steps", ctrl)
        jobs = runner.submit_steps(doc.steps, controller=ctrl or doc.controller)
        seq = jobs[0].sequence
        out = {"sequence_id": None if seq is None else seq.id, "name": doc.name, "jobs": [j.to_json() for j in jobs]}
        return JSONResponse(out, status_code=202)

    @app.get("/jobs", response_model=JobList, responses=error_responses(422))
    def jobs(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Known jobs, newest first."""
        return {"jobs": [j.to_json() for j in runner.jobs()[:limit]]}

    @app.get("/jobs/{job_id}", response_model=JobModel, responses=error_responses(404, 422))
    def job(job_id: str) -> dict[str, Any]:
        """One job."""
        return runner.get(job_id).to_json()

    @app.post(
        "/jobs/{job_id}/choose",
        response_model=JobModel,
        dependencies=[auth],
        responses=error_responses(400, 401, 404, 409, 413, 422),
    )
    def choose(job_id: str, body: ChooseRequest) -> dict[str, Any]:
        """Resolve a job waiting in needs_choice with one of its candidates."""
        job = runner.get(job_id)
        try:
            job.choose(body.candidate)
        except JobNotWaiting:
            raise
        except ValueError as exc:  # an index the job does not have
            raise HTTPException(400, str(exc)) from exc
        return job.to_json()

    @app.post("/stop", response_model=StopResponse, responses=error_responses(413))
    async def stop() -> dict[str, Any]:
        """Halt all motion now and cancel every waiting job. Always accepted, no token needed."""
        # a lane of its own: behind the thread pool that serves every other endpoint, a stop would wait for the
        # reads queued ahead of it when many clients poll; served with `api.early_stop.protocol_for(app)`, the halt
        # has already started when the bytes of this request arrived
        report, seen = await stop_now(early_stop, runner, stop_lane)
        return stop_answer(report, seen)

    @app.post(
        "/scene/reset",
        response_model=SceneReset,
        dependencies=[auth],
        responses=error_responses(400, 401, 409, 413, 422),
    )
    def reset_scene(body: ResetRequest) -> dict[str, Any]:
        """Simulated cell only: a new scene (clears a simulated protective stop). Refused while a job runs."""
        reset = getattr(the_cell, "reset_scene", None)
        if reset is None:
            raise CellUnavailable("this cell is not simulated: there is no scene to reset")
        if runner.current is not None:
            raise CellUnavailable("a job is running: stop it (POST /stop) before resetting the scene")
        import random

        seed = body.seed if body.seed is not None else random.randrange(2**31 - 1)
        try:
            scene = reset(seed, tuple(body.objects or ()))
        except RuntimeError as exc:
            raise CellUnavailable(str(exc)) from exc
        except ValueError as exc:  # an object name the catalogue does not hold
            raise HTTPException(400, str(exc)) from exc
        bus.publish("robot", {"event": "scene_reset", "seed": seed})
        return {"seed": seed, "objects": [o.name for o in scene.objects]}

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """Robot, camera, models, safety state, grounding and queue."""
        facts = the_cell.health()
        current = runner.current
        facts["grounding"] = the_grounding.name
        facts["queue"] = {
            "waiting": len(runner.queue),
            "capacity": runner.queue.capacity,
            "current": None if current is None else current.id,
            "default_controller": runner.controller.value,
        }
        facts["stop_port"] = guards[0].port if guards else None  # the web page sends its stop there first
        robot = facts.get("robot", {})
        facts["ok"] = (
            bool(robot.get("connected"))
            and not robot.get("protective_stop")
            and bool(facts.get("camera", {}).get("ok"))
        )
        return facts

    @app.get(
        "/stream",
        response_class=StreamingResponse,
        responses=stream_responses(BOUNDARY),
    )
    def stream(
        frames: int | None = Query(None, ge=1, le=100_000, description="end after this many frames"),
    ) -> StreamingResponse:
        """The camera as MJPEG with the target box, mask, planned chunk and candidates drawn; 503 with Retry-After
        when the most viewers the server streams to at once are already watching."""
        parts = mjpeg_frames(the_cell.overlay_frame, config.stream_fps, frames, closing, gate=viewers)
        return StreamingResponse(parts, media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.websocket("/events")
    async def events(ws: WebSocket) -> None:
        """Job and robot events as JSON text messages `{"kind", "time", "data"}`; first a snapshot of the jobs."""
        origin = ws.headers.get("origin")
        if (
            origin is not None
            and not _same_origin(origin, ws.headers.get("host", ""))
            and origin not in (config.allowed_origins)
        ):
            await ws.close(code=1008, reason="cross-origin WebSocket refused")  # a page of another site
            return
        await ws.accept()
        sub = bus.subscribe()
        gone = asyncio.ensure_future(_until_disconnect(ws))
        try:
            await ws.send_json({"kind": "snapshot", "data": {"jobs": [j.to_json() for j in runner.jobs()[:50]]}})
            while not closing.is_set() and not gone.done():
                try:
                    message = await asyncio.wait_for(sub[1].get(), timeout=0.5)
                except TimeoutError:
                    continue
                await ws.send_text(message)
        except WebSocketDisconnect:
            pass
        finally:
            gone.cancel()
            bus.unsubscribe(sub)

    return app


async def _until_disconnect(ws: WebSocket) -> None:
    """Return when the client closes the WebSocket (messages from the client are ignored)."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


def _same_origin(origin: str, host: str) -> bool:
    """True when an Origin header ("http://127.0.0.1:8000") names the host the request was sent to."""
    return origin.split("://", 1)[-1].rstrip("/") == host
