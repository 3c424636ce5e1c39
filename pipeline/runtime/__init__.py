"""The asynchronous runtime: a policy thread queues action chunks by control tick, a control thread ensembles the
predictions for each tick and streams safety-checked commands to the arm; plus a lockstep mode for simulation.

The lockstep mode (`pipeline.runtime.lockstep`) imports the simulated cell (MuJoCo); import it from there.
"""

from pipeline.runtime.chunk_queue import ChunkQueue, Prediction
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason, LoopResult
from pipeline.runtime.ensemble import ensemble, ensemble_weights
from pipeline.runtime.policy_loop import (
    ChunkError,
    ChunkPredictor,
    Observe,
    PolicyEnd,
    PolicyLoop,
    PolicyResult,
    validate_chunk,
)

__all__ = [
    "ChunkError",
    "ChunkPredictor",
    "ChunkQueue",
    "ControlConfig",
    "ControlLoop",
    "EndReason",
    "LoopResult",
    "Observe",
    "PolicyEnd",
    "PolicyLoop",
    "PolicyResult",
    "Prediction",
    "ensemble",
    "ensemble_weights",
    "validate_chunk",
]
