"""Settings of the API server (validated on construction)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from api.stream import validate_max_viewers
from pipeline.jobs.sim_config import SimCellConfig
from pipeline.jobs.state import Controller

#: Where a generated token is kept between starts (readable by its owner only).
DEFAULT_TOKEN_FILE = Path.home() / ".config" / "sam2grasp" / "api_token"


def default_state_dir() -> Path:
    """Where `sam2grasp serve` keeps its job journal unless told otherwise: `$XDG_STATE_HOME/sam2grasp`, else
    `~/.local/state/sam2grasp` (the XDG base-directory convention for state that outlives a restart)."""
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "sam2grasp"


@dataclass(frozen=True)
class ApiConfig:
    """What the API serves and how.

    backend: "sim" (the simulated cell) or "ur5e" (the real arm, gripper and camera); controller: default
    controller of new jobs; token: bearer token for state-changing requests (SAM2GRASP_TOKEN overrides it; when
    neither is set one is generated at first start, stored in `token_file` and printed once);
    max_body_bytes: largest request body accepted (bytes); queue_capacity: jobs that may wait;
    choice_timeout_s: seconds an ambiguous job waits for a person; stream_fps: frames per second of GET /stream
    (at most); allowed_origins: origins allowed cross-origin requests (exact origins; a wildcard is refused);
    grounding_backend: backend name passed to the grounding service; sim: the simulated cell's settings;
    robot_ip: the UR5e controller's address (ur5e backend); camera: camera kind (ur5e backend);
    state_dir: directory of the durable job journal (None: jobs live in memory only and a restart forgets them;
    `sam2grasp serve` passes `default_state_dir()`); job_history: finished jobs kept for GET /jobs and in the
    journal (1..100000); stream_max_viewers: most concurrent GET /stream viewers (1..64; None: the
    SAM2GRASP_STREAM_MAX_VIEWERS environment variable, else 4); read_threads: threads serving the plain (non-async)
    endpoints, reads mostly (1..64; Starlette's default is 40: under a flood of reads forty threads contend for
    Python's interpreter lock with the control loop and POST /stop, which then wait their turn);
    switch_interval_s: seconds a thread may hold the interpreter lock while others wait (`sys.setswitchinterval`,
    set while the server runs; None keeps Python's 0.005): shorter lets a stop or a control tick in sooner;
    stop_port: TCP port of the stop guard (`api.stop_guard`: POST /stop served by a process of its own, which
    halts the simulated arm without waiting for the server's threads; 0 picks a free one; None: no guard, stops
    through the API only); stop_host: address the guard binds (the API's own, as `sam2grasp serve --host` passes).
    """

    backend: str = "sim"
    controller: Controller = Controller.METHOD
    token: str | None = None
    token_file: Path | None = DEFAULT_TOKEN_FILE
    max_body_bytes: int = 65_536
    queue_capacity: int = 8
    choice_timeout_s: float = 300.0
    stream_fps: float = 10.0
    allowed_origins: tuple[str, ...] = ()
    grounding_backend: str = "compact"
    sim: SimCellConfig = field(default_factory=SimCellConfig)
    robot_ip: str | None = None
    camera: str = "realsense"
    state_dir: Path | None = None
    job_history: int = 1000
    stream_max_viewers: int | None = None
    read_threads: int = 8
    switch_interval_s: float | None = 0.001
    stop_port: int | None = None
    stop_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.backend not in ("sim", "ur5e"):
            raise ValueError(f"backend must be 'sim' or 'ur5e', got {self.backend!r}")
        if not isinstance(self.controller, Controller):
            try:
                object.__setattr__(self, "controller", Controller(str(self.controller)))
            except ValueError:
                valid = ", ".join(c.value for c in Controller)
                raise ValueError(f"controller must be one of {valid}, got {self.controller!r}") from None
        if self.token is not None and len(self.token) < 16:
            raise ValueError("token must be at least 16 characters (use a random one)")
        if not 1_024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise ValueError(f"max_body_bytes must be within 1 KiB..16 MiB, got {self.max_body_bytes}")
        if not 0 < self.stream_fps <= 30:
            raise ValueError(f"stream_fps must be within (0, 30], got {self.stream_fps}")
        if self.stream_max_viewers is not None:
            validate_max_viewers(self.stream_max_viewers)
        if self.switch_interval_s is not None and not 1e-4 <= self.switch_interval_s <= 0.1:
            raise ValueError(f"switch_interval_s must be within 0.0001..0.1 s (or None), got {self.switch_interval_s}")
        if self.stop_port is not None and not 0 <= self.stop_port <= 65535:
            raise ValueError(f"stop_port must be within 0..65535 (0: any free port) or None, got {self.stop_port}")
        if not 1 <= self.read_threads <= 64:
            raise ValueError(f"read_threads must be within 1..64, got {self.read_threads}")
        if not 1 <= self.job_history <= 100_000:
            raise ValueError(f"job_history must be within 1..100000 jobs, got {self.job_history}")
        for origin in self.allowed_origins:
            if "*" in origin or not origin.startswith(("http://", "https://")):
                raise ValueError(f"allowed origins must be exact http(s) origins without wildcards, got {origin!r}")
