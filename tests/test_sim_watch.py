"""Jobs of the simulated cell driven by the method are watched by the perception watch: when the camera is covered
after the tracker was prompted (injected here: the frames the method sees turn black), the shipped tracker calls the
target absent, the arm holds, and the job ends failed with reason "tracker_lost" (real MuJoCo, the shipped models
of models/, the stand-in grounding of tests/fake_grounding.py). The expert, which reads simulator state, is not
watched."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fake_grounding import fake_grounding

import policy.agent
from pipeline.jobs.runner import JobRunner
from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig
from pipeline.jobs.sim_drive import ExpertPredictor, SimDrive
from pipeline.jobs.state import Controller
from pipeline.runtime.perception_watch import PerceptionWatch

pytestmark = pytest.mark.render


class CoveredCamera(policy.agent.AgentChunkPredictor):
    """FAULT INJECTION: the method's predictor, whose camera is covered (black frames) once the tracker was
    prompted on the first frame."""

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        if self._started:
            frame = np.zeros_like(frame.rgb)
        return super().predict(frame, state)


def test_a_covered_camera_ends_a_method_job_as_tracker_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy.agent, "AgentChunkPredictor", CoveredCamera)
    cell = SimCell(SimCellConfig(seed=3, pace=0, names=("red cube", "green cup"), max_pick_s=10.0))
    runner = JobRunner(cell, fake_grounding(cell), controller=Controller.METHOD)
    runner.start()
    try:
        (job,) = runner.submit("pick the red cube")
        deadline = time.monotonic() + 120
        while not job.done and time.monotonic() < deadline:
            time.sleep(0.05)
        data = job.to_json()
        assert data["state"] == "failed", data
        assert data["reason"] == "tracker_lost", data
        assert "target not back after holding" in data["detail"]
        assert data["controller"].startswith("method: SAM2Grasp")
        frame = cell.overlay_frame()
        assert frame is not None
        assert "target lost" in frame.caption
    finally:
        runner.close()
        cell.close()


def test_only_a_predictor_that_tracks_is_watched() -> None:
    cell = SimCell(SimCellConfig(seed=3, pace=0, names=("red cube",)))
    try:
        lock = threading.RLock()
        expert = SimDrive(cell.robot, ExpertPredictor(cell.env), cell.safety, lock)
        assert expert.watch is None  # privileged simulator state: no camera, no tracker to lose

        class Tracked:
            last_step = None

            def predict(self, frame: Any, state: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
                return np.tile(np.asarray(state, dtype=np.float64), (5, 1))

        assert isinstance(SimDrive(cell.robot, Tracked(), cell.safety, lock).watch, PerceptionWatch)
        assert SimDrive(cell.robot, Tracked(), cell.safety, lock, watch=None).watch is None
    finally:
        cell.close()
