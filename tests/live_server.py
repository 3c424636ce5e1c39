"""A real uvicorn server on a free local port in a background thread, for tests that speak HTTP to the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from api.early_stop import protocol_for
from pipeline.faults.server_process import free_port

__all__ = ["free_port", "running"]


@contextmanager
def running(app: Any, start_timeout_s: float = 20.0) -> Iterator[int]:
    """Serve `app` on 127.0.0.1 until the block ends; yields the port (start_timeout_s: seconds to wait)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    if getattr(app.state, "early_stop", None) is not None:  # served as `sam2grasp serve` serves it
        config.http = protocol_for(app)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if not srv.started:
            raise RuntimeError("uvicorn did not start")
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)
