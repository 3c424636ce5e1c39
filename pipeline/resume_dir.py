"""Resume checkpoints of training runs: one directory swapped in whole, so a crash leaves the old or the new one.

Layout of `out/resume/`: the model's own files (written by a caller-supplied function), `optimizer.pt` (optimiser
and RNG state: plain tensors and numbers, read back with `torch.load(weights_only=True)`, which refuses arbitrary
pickled objects) and `progress.json`. The swap goes through `resume.new` and `resume.old`; a crash between its
two renames leaves `resume.old`, which `find_resume` also accepts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PROGRESS_FILE = "progress.json"
OPTIMIZER_FILE = "optimizer.pt"


def find_resume(out: Path) -> Path | None:
    """The resume directory of run `out`, or None when there is nothing to resume."""
    for name in ("resume", "resume.old"):
        if (out / name / PROGRESS_FILE).is_file():
            return out / name
    return None


def save_resume(
    out: Path,
    write_model: Callable[[Path], object],
    optim: torch.optim.Optimizer,
    progress: dict[str, Any],
    device: torch.device | None = None,
) -> None:
    """Write a resume checkpoint of run `out`: `write_model(directory)` saves the weights; the optimiser, the
    CPU (and, on `device` of type cuda, the CUDA) RNG state and `progress` go beside them."""
    new, cur, old = out / "resume.new", out / "resume", out / "resume.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    write_model(new)
    state: dict[str, Any] = {"optimizer": optim.state_dict(), "torch_rng": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    torch.save(state, new / OPTIMIZER_FILE)
    (new / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
    if cur.exists():
        shutil.rmtree(old, ignore_errors=True)
        cur.rename(old)
    new.rename(cur)
    shutil.rmtree(old, ignore_errors=True)


def load_optimizer_state(resume: Path) -> dict[str, Any]:
    """The optimiser and RNG state saved by `save_resume` (tensors and numbers only)."""
    state: dict[str, Any] = torch.load(resume / OPTIMIZER_FILE, weights_only=True)
    return state
