"""Train an image baseline (ACT from frames): the settings and behaviour of `policy.train_head` where they apply.

AdamW, linear warm-up + cosine learning rate (`policy.train_loop.lr_at`), gradient clipping, the held-out L1 per
epoch (normalised action units, zero latent) against predicting the training-mean action, a loss-curve PNG and
resumable checkpoints. Output directory, as for the SAM2Grasp head:
- `policy/`: the final policy (policy/image_checkpoint.py format); `best/`: the lowest validation L1 so far;
- `resume/`: weights + normaliser, `optimizer.pt` (optimiser and RNG state) and `progress.json`, written every
  `checkpoint_every_s` seconds / `checkpoint_every_epochs` epochs; a rerun with the same configuration and data
  continues from it and ends where an uninterrupted run would (the batch order of an epoch is a function of the
  seed and the epoch);
- `loss_curve.png`, `report.json`.
Single process (no DDP): the baselines are reference points, trained once per dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from pipeline.resume_dir import save_resume
from policy.baseline_data import ImageChunkDataset, ImageEpisode
from policy.image_act import ImageACTPolicy
from policy.image_act_config import ImageACTConfig
from policy.image_checkpoint import load_image_policy, save_image_policy
from policy.loss_curve import draw_loss_curve
from policy.normalize import compute_stats
from policy.train_head import HeadTrainConfig, TrainReport, run_report, write_run_files
from policy.train_loop import LoopHooks, StepResult, run_epochs, start_run


def epoch_order(n: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """The sample order of `epoch`: a permutation of 0..n-1 fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def validation_l1(policy: ImageACTPolicy, data: ImageChunkDataset, batch: int) -> tuple[float, float]:
    """Masked-mean L1 (normalised units, zero latent) of the policy over `data`, and of predicting the
    training-mean action (zero in normalised units)."""
    was_training = policy.training
    policy.eval()
    sums = [0.0, 0.0, 0.0]  # policy L1 sum, mean-baseline L1 sum, element count
    norm = policy.normalizer
    for i in range(0, len(data), batch):
        idx = np.arange(i, min(i + batch, len(data)))
        frames, state, tgt = data.batch(idx)
        pred = policy.normalized_chunk(frames, state)
        target = norm.action(tgt.actions.to(pred.device))
        valid = tgt.valid().to(pred.device, pred.dtype)
        sums[0] += float(((pred - target).abs() * valid).sum())
        sums[1] += float((target.abs() * valid).sum())
        sums[2] += float(valid.sum())
    policy.train(was_training)
    return sums[0] / max(sums[2], 1.0), sums[1] / max(sums[2], 1.0)


def _draw(history: list[dict[str, Any]], path: Path, policy: str) -> None:
    draw_loss_curve(
        [h["epoch"] for h in history],
        [h["train_l1"] for h in history],
        [h["val_l1"] for h in history],
        path,
        title=f"{policy} baseline training",
    )


def _save_resume(out: Path, policy: ImageACTPolicy, optim: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    def write(directory: Path) -> None:
        save_image_policy(directory, policy, training={"resume": True, "step": progress["step"]})

    save_resume(out, write, optim, progress, next(policy.parameters()).device)


def train_image_policy(
    episodes_train: Sequence[ImageEpisode],
    episodes_val: Sequence[ImageEpisode],
    config: ImageACTConfig,
    train_cfg: HeadTrainConfig,
    out_dir: Path | str,
    *,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainReport:
    """Train (or resume training of) an image baseline; see the module docstring for the files written.

    stop_after_steps: stop once the step count reaches this (a resume checkpoint is written); a later call
    continues from there.
    """
    out = Path(out_dir)
    say: Callable[[str], None] = log if log is not None else (lambda _s: None)
    device = torch.device(train_cfg.device)
    w, h = config.image_size
    for i, e in enumerate([*episodes_train, *episodes_val]):
        if e.frames.shape[1:3] != (h, w):
            raise ValueError(
                f"episode {i} holds {e.frames.shape[2]}x{e.frames.shape[1]} frames; the policy reads {w}x{h}"
            )
    k = config.head.chunk_size
    train_data = ImageChunkDataset(episodes_train, k)
    val_data = ImageChunkDataset(episodes_val, k) if episodes_val else None
    bsz = train_cfg.batch_size
    batches_per_epoch = len(train_data) // bsz
    if batches_per_epoch < 1:
        raise ValueError(f"{len(train_data)} training samples make no full batch of {bsz}; lower --batch-size")
    total_steps = train_cfg.epochs * batches_per_epoch
    torch.manual_seed(train_cfg.seed)
    fresh = ImageACTPolicy(config)
    fresh.normalizer.set_stats(compute_stats([e.arrays() for e in episodes_train]))
    policy, optim, progress = start_run(
        out,
        "image_act_config",
        config.to_dict(),
        train_cfg,
        len(train_data),
        fresh,
        load_image_policy,
        say,
        ignored_labels=int(train_data.chunks.ignore.sum()),
    )

    base_val = None if val_data is None else validation_l1(policy, val_data, train_cfg.val_batch_size)[1]

    def forward(indices: Sequence[int], _step: int) -> StepResult:
        frames, state, tgt = train_data.batch(np.asarray(indices, dtype=np.int64))
        loss, info = policy(frames.to(device), state.to(device), tgt.to(device))
        return StepResult(loss, info.l1, info.kl, info.loss)

    hooks = LoopHooks(
        order=lambda epoch: epoch_order(len(train_data), train_cfg.seed, epoch).tolist(),
        forward=forward,
        reduce=lambda sums: sums,
        validate=lambda: None if val_data is None else validation_l1(policy, val_data, train_cfg.val_batch_size)[0],
        save_best=lambda info: save_image_policy(out / "best", policy, training=info),
        save_resume=lambda: _save_resume(out, policy, optim, progress),
        draw=lambda history: _draw(history, out / "loss_curve.png", config.policy),
    )
    run_epochs(
        policy,
        optim,
        train_cfg,
        progress,
        hooks,
        total_steps=total_steps,
        batches_per_epoch=batches_per_epoch,
        batch=bsz,
        stop_after_steps=stop_after_steps,
        main=True,
        say=say,
        with_kl=config.head.use_vae,
    )
    report = run_report(out, progress, total_steps, batches_per_epoch, base_val)
    _save_resume(out, policy, optim, progress)

    def save_final(directory: Path, info: dict[str, Any]) -> None:
        save_image_policy(directory, policy, training=info)

    write_run_files(out, report, train_cfg, save_final, {"policy": config.policy})
    _draw(report.history, report.loss_curve, config.policy)
    return report
