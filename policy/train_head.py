"""Train the ACT head on cached F_t: AdamW, warm-up + cosine learning rate, gradient clipping, held-out L1 per epoch.

Output directory:
- `policy/`: the final policy (policy/checkpoint.py format); `best/`: the lowest validation L1 so far;
- `resume/`: the state to resume from (weights + normaliser via save_policy, `optimizer.pt`, `progress.json`),
  written every `checkpoint_every_s` seconds / `checkpoint_every_epochs` epochs; a rerun with the same
  configuration continues from it and ends where an uninterrupted run would;
- `loss_curve.png`, `report.json`.

Data-parallel training: under `torchrun` call `maybe_init_distributed()` first (gloo on CPU, nccl on CUDA). When
`torch.distributed` is initialised the model is wrapped in DDP, each rank takes its share of every global batch
through a `DistributedSampler`, and only rank 0 writes files. `batch_size` is the global batch. The L1 sum of each
rank is divided by (global non-padded count / world size), so DDP's gradient average is exactly the masked mean
over the global batch: W ranks with batch B/W take the same steps as one process with batch B.
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from pipeline.resume_dir import save_resume
from policy.act import ACTPolicy
from policy.act_config import ACTConfig
from policy.checkpoint import load_policy, save_policy
from policy.chunks import ChunkDataset, EpisodeArrays
from policy.grasp_yaw import GraspYawNet
from policy.loss_curve import draw_loss_curve
from policy.normalize import compute_stats
from policy.state_lag import StateLag, draw_lags
from policy.train_loop import LoopHooks, StepResult, run_epochs, start_run

# fields whose change makes a resume checkpoint unusable


@dataclass(frozen=True)
class HeadTrainConfig:
    """Training settings. batch_size is the global batch (divided over DDP ranks); state_lag: the share of samples
    given an earlier frame's arm state (`policy.state_lag`; off by default, the SAM2Grasp head only)."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    final_lr_fraction: float = 0.01
    grad_clip: float = 10.0
    seed: int = 0
    val_batch_size: int = 256
    checkpoint_every_s: float = 300.0
    checkpoint_every_epochs: int = 1
    device: str = "cpu"
    state_lag: StateLag = field(default_factory=StateLag)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_batch_size", "checkpoint_every_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"HeadTrainConfig.lr must be a finite number > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.checkpoint_every_s <= 0:
            raise ValueError(
                "HeadTrainConfig: warmup_steps and weight_decay must be >= 0; grad_clip and checkpoint_every_s > 0"
            )
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"HeadTrainConfig.final_lr_fraction must be within [0, 1], got {self.final_lr_fraction}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"HeadTrainConfig.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass(frozen=True)
class TrainReport:
    """What a training run produced (val_* None without validation episodes)."""

    policy_dir: Path
    best_dir: Path | None
    loss_curve: Path
    steps: int
    total_steps: int
    epochs_done: int
    stopped_early: bool
    final_train_l1: float
    final_val_l1: float | None
    best_val_l1: float | None
    val_l1_mean_baseline: float | None  # L1 of always predicting the training-mean action
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def maybe_init_distributed(device: str = "cpu") -> bool:
    """Initialise torch.distributed from torchrun's environment (WORLD_SIZE > 1); True when distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return [float(v) for v in t]


def _evaluate(policy: ACTPolicy, data: ChunkDataset, batch: int, rank: int, world: int) -> tuple[float, float]:
    """Masked-mean L1 (normalised units) of the policy and of predicting the training mean, over all ranks."""
    was_training = policy.training
    policy.eval()
    sums = [0.0, 0.0, 0.0]  # policy L1 sum, mean-baseline L1 sum, element count
    idx = list(range(rank, len(data), world))
    norm = policy.normalizer
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            inp, tgt = data.batch(idx[i : i + batch])
            inp, tgt = policy.validate_input(inp), policy.validate_target(tgt, len(idx[i : i + batch]))
            latent = torch.zeros(inp.tokens.shape[0], policy.config.latent_dim, device=inp.tokens.device)
            pred = policy.model(norm.tokens(inp.tokens), norm.extras(inp.extras), norm.state(inp.state), latent)
            target = norm.action(policy.model_actions(inp.state, inp.extras, tgt.actions))
            valid = tgt.valid().to(pred.dtype)
            sums[0] += float(((pred - target).abs() * valid).sum())
            sums[1] += float((target.abs() * valid).sum())
            sums[2] += float(valid.sum())
    policy.train(was_training)
    total = _all_sum(sums, world)
    return total[0] / max(total[2], 1.0), total[1] / max(total[2], 1.0)


def _save_resume(out: Path, policy: ACTPolicy, optim: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    def write(directory: Path) -> None:
        save_policy(directory, policy, training={"resume": True, "step": progress["step"]})

    save_resume(out, write, optim, progress, next(policy.parameters()).device)


def _draw(history: list[dict[str, Any]], path: Path) -> None:
    draw_loss_curve(
        [h["epoch"] for h in history], [h["train_l1"] for h in history], [h["val_l1"] for h in history], path
    )


def run_report(
    out: Path, progress: dict[str, Any], total_steps: int, batches_per_epoch: int, base_val: float | None
) -> TrainReport:
    """The report of a run in `out` that ended (or stopped early) with `progress`; base_val: the held-out L1 of
    predicting the mean action (None without held-out data)."""
    history = progress["history"]
    return TrainReport(
        policy_dir=out / "policy",
        best_dir=out / "best" if progress["best_val_l1"] is not None else None,
        loss_curve=out / "loss_curve.png",
        steps=progress["step"],
        total_steps=total_steps,
        epochs_done=progress["step"] // batches_per_epoch,
        stopped_early=progress["step"] < total_steps,
        final_train_l1=history[-1]["train_l1"] if history else math.nan,
        final_val_l1=history[-1]["val_l1"] if history else None,
        best_val_l1=progress["best_val_l1"],
        val_l1_mean_baseline=base_val,
        seconds=progress["seconds"],
        history=history,
    )


def write_run_files(
    out: Path,
    report: TrainReport,
    train_cfg: HeadTrainConfig,
    save: Callable[[Path, dict[str, Any]], object],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the final weights (`save(out / "policy", summary)`) and `report.json`; the summary is the report
    without its history, plus the training settings and `extra`."""
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(report).items() if k != "history"}
    summary["train_config"] = asdict(train_cfg)
    summary.update(extra or {})
    save(out / "policy", summary)
    (out / "report.json").write_text(json.dumps({**summary, "history": report.history}, indent=2))


def train_head(
    episodes_train: Sequence[EpisodeArrays],
    episodes_val: Sequence[EpisodeArrays],
    config: ACTConfig,
    train_cfg: HeadTrainConfig,
    out_dir: Path | str,
    *,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] | None = print,
    grasp_yaw: GraspYawNet | None = None,
) -> TrainReport:
    """Train (or resume training of) an ACT head; see the module docstring for files and DDP.

    stop_after_steps: stop once the global step reaches this count (a resume checkpoint is written), e.g. to
    time-box a run; a later call continues from there. grasp_yaw: the fitted estimator whose estimates the
    episodes' extras carry (required when config.grasp_yaw; saved with the head, never trained by it).
    """
    if config.grasp_yaw != (grasp_yaw is not None):
        raise ValueError(
            "a head with grasp_yaw=True needs the fitted grasp-yaw estimator its extras came from (grasp_yaw=...), "
            "and one without takes none"
        )
    if grasp_yaw is not None and (grasp_yaw.config.named, grasp_yaw.config.mask) != (
        config.grasp_yaw_named,
        config.grasp_yaw_mask,
    ):
        raise ValueError(
            f"the head's grasp_yaw_named={config.grasp_yaw_named}, grasp_yaw_mask={config.grasp_yaw_mask!r} but the "
            f"estimator given was fitted with named={grasp_yaw.config.named}, mask={grasp_yaw.config.mask!r}: fit "
            "it with the head's settings"
        )
    out = Path(out_dir)
    distributed = dist.is_available() and dist.is_initialized()
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    if train_cfg.batch_size % world:
        raise ValueError(f"batch_size {train_cfg.batch_size} must be divisible by the world size {world}")
    per_rank = train_cfg.batch_size // world
    device = torch.device(train_cfg.device)
    say: Callable[[str], None] = log if (log is not None and rank == 0) else (lambda _s: None)

    train_data = ChunkDataset(episodes_train, config.chunk_size, state_extras_from=config.state_extras_from)
    val_data = ChunkDataset(episodes_val, config.chunk_size) if episodes_val else None
    batches_per_epoch = (len(train_data) // world) // per_rank
    if batches_per_epoch < 1:
        raise ValueError(f"{len(train_data)} training samples make no full global batch of {train_cfg.batch_size}")
    total_steps = train_cfg.epochs * batches_per_epoch
    torch.manual_seed(train_cfg.seed)
    fresh = ACTPolicy(config)
    fresh.normalizer.set_stats(compute_stats(episodes_train, as_predicted=fresh.model_actions))
    if fresh.grasp_yaw is not None and grasp_yaw is not None:
        fresh.grasp_yaw.load_state_dict(grasp_yaw.state_dict(), strict=True)
    policy, optim, progress = start_run(
        out,
        "act_config",
        config.to_dict(),
        train_cfg,
        len(train_data),
        fresh,
        load_policy,
        say,
        ignored_labels=int(train_data.ignore.sum()),
    )
    if policy.grasp_yaw is not None and grasp_yaw is not None:
        kept, given = policy.grasp_yaw.state_dict(), grasp_yaw.state_dict()
        if any(not torch.equal(kept[k].cpu(), given[k].cpu()) for k in kept):
            raise ValueError(
                f"{out} was started with another grasp-yaw estimator than the one fitted now (other data or "
                "settings): its extras would change under the head; train into a new directory"
            )
    net: torch.nn.Module = policy
    if distributed:
        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        net = DistributedDataParallel(policy, device_ids=ids)

    base_val = None
    if val_data is not None:
        _, base_val = _evaluate(policy, val_data, train_cfg.val_batch_size, rank, world)
    sampler: DistributedSampler[int] = DistributedSampler(
        train_data, num_replicas=world, rank=rank, shuffle=True, seed=train_cfg.seed, drop_last=True
    )

    lag_draws: dict[int, Any] = {}  # epoch -> that epoch's lags (the latest only)

    def lags_at(step: int) -> Any:
        epoch = step // batches_per_epoch
        if epoch not in lag_draws:
            lag_draws.clear()
            lag_draws[epoch] = draw_lags(train_cfg.state_lag, len(train_data), train_cfg.seed, epoch)
        return lag_draws[epoch]

    def forward(indices: Sequence[int], step: int) -> StepResult:
        lags = lags_at(step) if train_cfg.state_lag.active else None
        inp, tgt = train_data.batch(list(indices), lags)
        count = None
        if distributed:
            n_valid = _all_sum([float(tgt.valid().sum())], world)[0]
            count = n_valid / world
        loss, info = net(inp, tgt, count)
        return StepResult(loss, info.l1, info.kl, info.loss)

    def order(epoch: int) -> list[int]:
        sampler.set_epoch(epoch)
        return list(sampler)

    hooks = LoopHooks(
        order=order,
        forward=forward,
        reduce=lambda sums: _all_sum(sums, world),
        validate=lambda: _evaluate(policy, val_data, train_cfg.val_batch_size, rank, world)[0] if val_data else None,
        save_best=lambda info: save_policy(out / "best", policy, training=info),
        save_resume=lambda: _save_resume(out, policy, optim, progress),
        draw=lambda history: _draw(history, out / "loss_curve.png"),
    )
    run_epochs(
        policy,
        optim,
        train_cfg,
        progress,
        hooks,
        total_steps=total_steps,
        batches_per_epoch=batches_per_epoch,
        batch=per_rank,
        stop_after_steps=stop_after_steps,
        main=rank == 0,
        say=say,
        with_kl=config.use_vae,
    )
    report = run_report(out, progress, total_steps, batches_per_epoch, base_val)
    if rank == 0:
        _save_resume(out, policy, optim, progress)
        write_run_files(out, report, train_cfg, lambda d, info: save_policy(d, policy, training=info))
        _draw(report.history, report.loss_curve)
    if distributed:
        dist.barrier()
        # free the DDP wrapper (its reducer holds the process group) now, while the group is alive; left to the
        # interpreter's exit it can abort the process ("terminate called without an active exception")
        del net
        gc.collect()
    return report
