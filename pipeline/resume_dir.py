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


def resume_run(
    out: Path, fingerprint: dict[str, Any], say: Callable[[str], object]
) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """(directory, progress, optimiser state) of the run in `out` to resume, or None when there is none.

    ValueError when that run was written with another configuration or data (`fingerprint` differs)."""
    resume = find_resume(out)
    if resume is None:
        return None
    saved = json.loads((resume / PROGRESS_FILE).read_text())
    if saved.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{resume} was written by a run with another configuration or data; found "
            f"{saved.get('fingerprint')}, this run has {fingerprint}; use a new out_dir or delete {resume}"
        )
    say(json.dumps({"resumed": str(resume), "step": saved["step"]}))
    return resume, saved, load_optimizer_state(resume)


def restore_optimizer(optim: torch.optim.Optimizer, state: dict[str, Any] | None, device: torch.device) -> None:
    """Load a `resume_run` optimiser state (and the RNG states saved with it) into `optim`; nothing when None."""
    if state is None:
        return
    optim.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
