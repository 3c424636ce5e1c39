"""Request and response bodies of the API. Requests are strict: unknown fields and wrong types are refused (422)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ControllerName = Literal["method", "expert"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    #: Integer fields: JSON does not tell 2 from 2.0, so a float with no fraction is taken as that integer.
    _int_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls._int_fields:
                value = data.get(name)
                if isinstance(value, float) and value.is_integer():
                    data = {**data, name: int(value)}
        return data


class PickRequest(_Strict):
    """A spoken-style command, e.g. "pick the red cup" (several picks: "pick the red cup, then the green cube")."""

    command: str = Field(min_length=1, max_length=500, examples=["pick the red cup"])
    controller: ControllerName | None = Field(
        default=None, description="method (SAM2Grasp) or expert (scripted, privileged simulator state)"
    )


class PlaceModel(_Strict):
    """Where the picked object goes: a drop zone, or a release position (x, y, z metres, robot base frame)."""

    zone: str | None = Field(default=None, max_length=40, examples=["bin"])
    position: list[float] | None = Field(default=None, min_length=3, max_length=3)


class StepModel(_Strict):
    """One step of a sequence."""

    command: str = Field(min_length=1, max_length=500)
    place: PlaceModel | None = None
    _int_fields = ("retries",)
    retries: int = Field(default=0, ge=0, le=5)
    stop_on_failure: bool = True


class _SequenceBase(_Strict):
    controller: ControllerName | None = None
    name: str | None = Field(default=None, max_length=200)


class SequenceCommands(_SequenceBase):
    """A sequence of plain commands (each: place in the bin, no retries, stop on failure)."""

    commands: list[str] = Field(min_length=1, max_length=50)


class SequenceSteps(_SequenceBase):
    """A sequence document as JSON: its steps."""

    steps: list[StepModel] = Field(min_length=1, max_length=50)


class SequenceDocument(_SequenceBase):
    """A sequence document as YAML text (see `sam2grasp sequence --help`)."""

    document: str = Field(min_length=1, max_length=65_536)


#: POST /sequence takes exactly one of the three forms.
SequenceRequest = SequenceCommands | SequenceSteps | SequenceDocument


class ChooseRequest(_Strict):
    """The index of the candidate to pick (as listed in the job's `candidates`)."""

    _int_fields = ("candidate",)
    candidate: int = Field(ge=0, le=100)


class ResetRequest(_Strict):
    """A new simulated scene: `seed` (random when left out) and optionally the exact objects ("red cup", ...)."""

    _int_fields = ("seed",)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    objects: list[str] | None = Field(default=None, min_length=1, max_length=6)


class SceneReset(BaseModel):
    """The new simulated scene: its seed and its objects' names."""

    seed: int
    objects: list[str]


class CandidateModel(BaseModel):
    """A detection a person may choose: box x0, y0, x1, y1 pixels, score 0..1, phrase."""

    box: list[float] | None
    score: float | None
    phrase: str


class TargetModel(BaseModel):
    """What grounding found: phrase, box (pixels), score, and the simulator's object id (null on a real cell)."""

    phrase: str
    box: list[float]
    score: float
    instance: str | None


class SequencePosition(BaseModel):
    """A job's place in a sequence: sequence id, step (0-based), number of steps."""

    id: str
    step: int
    steps: int


class JobModel(BaseModel):
    """A pick job. `timings` holds seconds spent per state; `reason` says why a job failed, stopped or waits."""

    id: str
    state: Literal[
        "queued",
        "grounding",
        "needs_choice",
        "tracking",
        "grasping",
        "lifting",
        "placing",
        "succeeded",
        "failed",
        "stopped",
    ]
    reason: str | None
    command: str
    target: TargetModel | None
    created_at: str
    timings: dict[str, float]
    controller: str
    candidates: list[CandidateModel]
    attempts: int
    detail: str | None
    sequence: SequencePosition | None


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobModel]


class SequenceAccepted(BaseModel):
    """The jobs a sequence became, in the order they run."""

    sequence_id: str | None
    name: str
    jobs: list[JobModel]


class StopResponse(BaseModel):
    """What POST /stop did: motion halted, seconds the halt took, the job that was running, jobs cancelled, and the
    server's monotonic clock (seconds) at the moment the arm was halted and at the moment the server saw the stop's
    bytes (or, served without stop-at-socket, its endpoint started) — for latency measurements on the server's
    machine."""

    halted: bool
    halt_s: float
    job: str | None
    cancelled: int
    halted_monotonic_s: float
    received_monotonic_s: float


class ErrorDetail(BaseModel):
    """An error: a stable `type`, a message saying what was wrong and what is valid, and candidates if any."""

    type: str
    message: str
    candidates: list[CandidateModel] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


class Health(BaseModel):
    """Robot, camera, models, safety, grounding and queue state; `stop_port`: the port of the stop lane, which
    serves POST /stop outside the API's event loop (None when the server runs without one)."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    backend: str
    robot: dict[str, Any]
    camera: dict[str, Any]
    models: dict[str, Any]
    safety: dict[str, Any]
    grounding: str
    queue: dict[str, Any]
    stop_port: int | None = None


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error status codes, all with the `ErrorBody` schema."""
    text = {
        400: "the request is well-formed but cannot be run (malformed JSON, unsupported command, invalid sequence)",
        401: "missing or wrong bearer token",
        404: "no such job",
        409: "conflicts with the robot's state (protective stop, nothing to choose, a motion in progress)",
        413: "request body too large",
        422: "the body does not match the schema (unknown fields, wrong types, out-of-range values)",
        429: "the job queue is full",
        503: "the camera stream serves its most viewers already; retry after the Retry-After seconds",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


def stream_responses(boundary: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of GET /stream: the MJPEG stream (200), an invalid query (422), and 503 with a
    Retry-After header (seconds) when the stream's viewer cap is reached."""
    out = error_responses(422, 503)
    out[503]["headers"] = {
        "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
    }
    return {
        200: {
            "description": "MJPEG: one JPEG per part, with the target box, mask, planned chunk and candidates drawn",
            "content": {f"multipart/x-mixed-replace; boundary={boundary}": {}},
        },
        **out,
    }
