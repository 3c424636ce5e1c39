"""The epoch loop the head trainer (`policy.train_head`) and the image-baseline trainer (`policy.train_image`)
share: learning-rate schedule, optimiser step with gradient clipping, progress bar, time- and epoch-based resume
checkpoints, per-epoch record (train L1, optional KL, held-out L1), loss curve and best-so-far weights. What differs
between the trainers — sample order, forward pass, reduction across processes, saving — comes in as `LoopHooks`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from pipeline.resume_dir import restore_optimizer, resume_run

if TYPE_CHECKING:
    from policy.train_head import HeadTrainConfig


@dataclass(frozen=True)
class StepResult:
    """One training batch: the loss to back-propagate, and its L1, KL (None without a CVAE) and total as floats."""

    loss: torch.Tensor
    l1: float
    kl: float | None
    total: float


@dataclass(frozen=True)
class LoopHooks:
    """The trainer-specific parts of the loop.

    order(epoch): this process's sample indices for `epoch` (a function of seed and epoch, so a resumed run sees
    the same batches); forward(indices, step): the batch's `StepResult`; reduce(sums): the epoch sums [L1, KL,
    batches] added over every process (identity in a single process); validate(): the held-out L1 or None;
    save_best(info): write the best-so-far weights; save_resume(): write the resume checkpoint; draw(history):
    redraw the loss curve.
    """

    order: Callable[[int], Sequence[int]]
    forward: Callable[[Sequence[int], int], StepResult]
    reduce: Callable[[list[float]], list[float]]
    validate: Callable[[], float | None]
    save_best: Callable[[dict[str, Any]], object]
    save_resume: Callable[[], None]
    draw: Callable[[list[dict[str, Any]]], None]


def lr_at(step: int, total: int, cfg: HeadTrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine from lr down to lr * final_lr_fraction at `total`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    low = cfg.lr * cfg.final_lr_fraction
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


#: Training settings whose change makes a resume checkpoint unusable.
RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "final_lr_fraction", "grad_clip", "seed")

P = TypeVar("P", bound=torch.nn.Module)


def start_run(
    out: Path,
    config_name: str,
    config: dict[str, Any],
    train_cfg: HeadTrainConfig,
    samples: int,
    policy: P,
    load: Callable[[Path], P],
    say: Callable[[str], None],
    ignored_labels: int = 0,
) -> tuple[P, torch.optim.Optimizer, dict[str, Any]]:
    """The policy, its AdamW optimiser and the progress record of a run in `out`: fresh (`policy` as given), or
    resumed from `out/resume` (weights through `load`, optimiser state, progress) when that checkpoint was
    written for the same model config (`config_name`: `config`), training settings, sample count and count of
    labels kept out of the loss (`ignored_labels`, `policy.undone_closes`; recorded only when not zero) and state
    lag (`policy.state_lag`; recorded only when on)."""
    fingerprint: dict[str, Any] = {
        config_name: config,
        "train": {k: getattr(train_cfg, k) for k in RESUME_KEYS},
        "train_samples": samples,
    }
    if ignored_labels:
        fingerprint["ignored_labels"] = ignored_labels
    if train_cfg.state_lag.active:
        fingerprint["state_lag"] = asdict(train_cfg.state_lag)
    progress: dict[str, Any] = {
        "fingerprint": fingerprint,
        "step": 0,
        "history": [],
        "seconds": 0.0,
        "best_val_l1": None,
        "epoch_sums": [0.0, 0.0, 0.0],  # L1 sum, KL sum, batches
    }
    resumed = resume_run(out, fingerprint, say)
    optim_state: dict[str, Any] | None = None
    if resumed is not None:
        resume, progress, optim_state = resumed
        policy = load(resume)
    device = torch.device(train_cfg.device)
    policy.to(device).train()
    optim = torch.optim.AdamW(policy.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    restore_optimizer(optim, optim_state, device)
    return policy, optim, progress


def epoch_sums(progress: dict[str, Any]) -> list[float]:
    """The running sums [L1, KL, batches] of the current epoch (older head runs' progress files hold [L1, batches])."""
    sums = [float(v) for v in progress.get("epoch_sums", [0.0, 0.0, 0.0])]
    return [sums[0], 0.0, sums[1]] if len(sums) == 2 else sums


def run_epochs(
    policy: torch.nn.Module,
    optim: torch.optim.Optimizer,
    train_cfg: HeadTrainConfig,
    progress: dict[str, Any],
    hooks: LoopHooks,
    *,
    total_steps: int,
    batches_per_epoch: int,
    batch: int,
    stop_after_steps: int | None,
    main: bool,
    say: Callable[[str], None],
    with_kl: bool,
) -> None:
    """Train from `progress["step"]` to `total_steps` (or `stop_after_steps`), updating `progress` in place.

    batch: samples per step in this process; main: this process writes files and shows the progress bar;
    with_kl: the model has a KL term (a CVAE); the epoch record's `train_kl` is None otherwise.
    """
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=progress["step"], disable=not main or not sys.stderr.isatty())
    t0 = time.monotonic() - float(progress["seconds"])
    last_ckpt = time.monotonic()
    lr = lr_at(progress["step"], total_steps, train_cfg)
    progress["epoch_sums"] = epoch_sums(progress)
    stopped = stop_after_steps is not None and progress["step"] >= stop_after_steps
    while progress["step"] < total_steps and not stopped:
        epoch, first = divmod(progress["step"], batches_per_epoch)
        order = hooks.order(epoch)
        for b in range(first, batches_per_epoch):
            step = progress["step"]
            lr = lr_at(step, total_steps, train_cfg)
            for g in optim.param_groups:
                g["lr"] = lr
            result = hooks.forward(order[b * batch : (b + 1) * batch], step)
            if not math.isfinite(result.total):
                raise FloatingPointError(
                    f"non-finite loss (l1 {result.l1}, kl {result.kl}) at step {step}; lower lr or check the data"
                )
            optim.zero_grad(set_to_none=True)
            result.loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(policy.parameters(), train_cfg.grad_clip)
            optim.step()
            sums = progress["epoch_sums"]
            progress["epoch_sums"] = [sums[0] + result.l1, sums[1] + (result.kl or 0.0), sums[2] + 1]
            progress["step"] = step + 1
            progress["seconds"] = time.monotonic() - t0
            bar.update(1)
            bar.set_postfix(l1=f"{result.l1:.4f}", lr=f"{lr:.2e}")
            if stop_after_steps is not None and progress["step"] >= stop_after_steps:
                stopped = True
                break
            if main and time.monotonic() - last_ckpt > train_cfg.checkpoint_every_s:
                hooks.save_resume()
                last_ckpt = time.monotonic()
        if stopped and progress["step"] % batches_per_epoch:
            break
        # end of an epoch
        l1_sum, kl_sum, n = hooks.reduce(progress["epoch_sums"])
        val_l1 = hooks.validate()
        rec: dict[str, Any] = {
            "epoch": progress["step"] // batches_per_epoch,
            "step": progress["step"],
            "train_l1": l1_sum / max(n, 1.0),
            "train_kl": kl_sum / max(n, 1.0) if with_kl else None,
            "val_l1": val_l1,
            "lr": lr,
            "elapsed_s": round(time.monotonic() - t0, 2),
        }
        progress["history"].append(rec)
        progress["epoch_sums"] = [0.0, 0.0, 0.0]
        say(json.dumps(rec))
        if main:
            hooks.draw(progress["history"])
        if val_l1 is not None and (progress["best_val_l1"] is None or val_l1 < progress["best_val_l1"]):
            progress["best_val_l1"] = val_l1
            if main:
                hooks.save_best({"epoch": rec["epoch"], "step": rec["step"], "val_l1": val_l1})
        if main and (rec["epoch"] % train_cfg.checkpoint_every_epochs == 0 or progress["step"] == total_steps):
            hooks.save_resume()
            last_ckpt = time.monotonic()
        if stopped:
            break
    bar.close()
    progress["seconds"] = time.monotonic() - t0
