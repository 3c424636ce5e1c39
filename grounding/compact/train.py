"""`sam2grasp train-grounder`: train the compact detector on rendered scenes, resumably.

Files in `out`: `detector.safetensors` + `detector.json` (the trained grounder), `loss_curve.png`,
`history.json`, and `resume/` (weights, `optimizer.pt` holding only tensors and numbers, `progress.json`), written
every `checkpoint_every_s` seconds and at each epoch's end; a rerun with the same `out` continues from it.
The last shard of the data is held out for validation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from grounding.compact.checkpoint import load_detector, save_detector
from grounding.compact.config import DetectorConfig
from grounding.compact.model import CompactDetector, DetectorOutput
from grounding.compact.scenes import LabelledImage, load_shard
from grounding.compact.targets import Targets, build_targets
from grounding.compact.validate import DetectorScores, score_detector
from pipeline.resume_dir import find_resume, load_optimizer_state, save_resume
from policy.loss_curve import draw_loss_curve


@dataclass(frozen=True)
class GrounderTrainConfig:
    """Training settings.

    epochs: passes over the training images; batch: images per step; lr: peak AdamW learning rate (cosine decay
    after `warmup_steps`); weight_decay: AdamW decay; clip: gradient-norm clip; seed: shuffling and
    augmentation seed; checkpoint_every_s: seconds between resume checkpoints; threads: torch CPU threads.
    """

    epochs: int = 12
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    clip: float = 5.0
    seed: int = 0
    checkpoint_every_s: float = 180.0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.threads < 1:
            raise ValueError(
                f"epochs, batch and threads must be positive, got {self.epochs}, {self.batch}, {self.threads}"
            )
        if not (self.lr > 0 and self.clip > 0 and self.checkpoint_every_s > 0 and self.weight_decay >= 0):
            raise ValueError("lr, clip and checkpoint_every_s must be positive and weight_decay non-negative")


@dataclass(frozen=True)
class GrounderTrainReport:
    """What a training run produced: images used, steps, seconds of this run, final losses and validation scores."""

    train_images: int
    val_images: int
    steps: int
    seconds: float
    train_loss: float
    val: DetectorScores
    out: str


def _focal(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, n_pos: float) -> torch.Tensor:
    """Penalty-reduced focal loss on centre heat maps (alpha 2, beta 4), normalised by the object count."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return ((pos_loss + neg_loss) * weight).sum() / max(n_pos, 1.0)


_PARTS = ("heat", "size", "offset", "colour", "shape")


def detector_loss(out: DetectorOutput, t: Targets) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts: focal heat, L1 log-size and offset at centres, colour and shape cross-entropy."""
    n_pos = float(t.centre.sum())
    heat = _focal(out.heat[:, 0], t.heat, t.heat_weight, n_pos)
    c = t.centre[:, None].expand_as(out.size)
    size = F.l1_loss(out.size[c], t.size[c], reduction="sum") / max(n_pos, 1.0)
    offset = F.l1_loss(out.offset[c], t.offset[c], reduction="sum") / max(n_pos, 1.0)
    colour = F.cross_entropy(out.colour.permute(0, 2, 3, 1)[t.attr_mask], t.colour[t.attr_mask])
    shape = F.cross_entropy(out.shape.permute(0, 2, 3, 1)[t.attr_mask], t.shape[t.attr_mask])
    total = heat + size + offset + colour + shape
    parts = {k: float(v.detach()) for k, v in zip(_PARTS, (heat, size, offset, colour, shape), strict=True)}
    return total, parts


def augment(items: list[LabelledImage], rng: np.random.Generator) -> tuple[torch.Tensor, list[npt.NDArray[np.float32]]]:
    """A batch tensor (B, 3, H, W) pixels with random horizontal flips and brightness/contrast, and its boxes.

    Colours are the labels, so hue is never changed; brightness stays within ±20%.
    """
    images, boxes = [], []
    for it in items:
        img = it.image.astype(np.float32)
        bx = it.boxes.copy()
        if rng.random() < 0.5:
            img = img[:, ::-1]
            w = img.shape[1]
            bx[:, [0, 2]] = w - bx[:, [2, 0]]
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-12, 12)
        img = np.clip(img * gain + bias + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.float32)
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        boxes.append(bx)
    return torch.stack(images), boxes


def _lr(step: int, total: int, cfg: GrounderTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _save_resume(out: Path, model: CompactDetector, optim: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    def write(directory: Path) -> None:
        save_detector(directory, model, {"resume": True, "step": progress["step"]})

    save_resume(out, write, optim, progress)


def load_split(data: Path) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Training and validation images of a rendered dataset: the last shard is held out."""
    shards = sorted(data.glob("scenes_*.npz"))
    if len(shards) < 2:
        raise FileNotFoundError(
            f"{data} holds {len(shards)} scene shards; training needs at least 2 (one is held out): "
            "render them with `sam2grasp train-grounder --data DIR --scenes N`"
        )
    train = [it for p in shards[:-1] for it in load_shard(p)]
    return train, load_shard(shards[-1])


def train_grounder(
    data: Path,
    out: Path,
    cfg: GrounderTrainConfig,
    model_cfg: DetectorConfig | None = None,
    *,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] | None = print,
) -> GrounderTrainReport:
    """Train (or resume) the compact detector on the shards in `data`; see the module docstring for files."""
    torch.set_num_threads(cfg.threads)
    train, val = load_split(data)
    out.mkdir(parents=True, exist_ok=True)
    resume = find_resume(out)
    if resume is not None:
        model = load_detector(resume).train()
        progress = json.loads((resume / "progress.json").read_text())
    else:
        torch.manual_seed(cfg.seed)
        model = CompactDetector(model_cfg or DetectorConfig())
        progress = {"step": 0, "epoch": 0, "history": []}
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume is not None:
        state = load_optimizer_state(resume)
        optim.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    steps_per_epoch = len(train) // cfg.batch
    total = steps_per_epoch * cfg.epochs
    start, last_ckpt, run_steps = time.monotonic(), time.monotonic(), 0
    losses: list[float] = []
    from tqdm import tqdm

    while progress["epoch"] < cfg.epochs:
        epoch = progress["epoch"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
        done_in_epoch = progress["step"] - epoch * steps_per_epoch
        rng = np.random.default_rng([cfg.seed, epoch, done_in_epoch])
        model.train()
        bar = tqdm(range(done_in_epoch, steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=log is None)
        for k in bar:
            items = [train[i] for i in order[k * cfg.batch : (k + 1) * cfg.batch]]
            images, boxes = augment(items, rng)
            loss, parts = detector_loss(model(images), build_targets(items, boxes, model.config))
            for g in optim.param_groups:
                g["lr"] = _lr(progress["step"], total, cfg)
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optim.step()
            progress["step"] += 1
            run_steps += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", heat=f"{parts['heat']:.2f}")
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                _save_resume(out, model, optim, progress)
                last_ckpt = time.monotonic()
            if stop_after_steps is not None and progress["step"] >= stop_after_steps:
                _save_resume(out, model, optim, progress)
                return _finish(out, model, train, val, progress, run_steps, start, losses, final=False)
        progress["epoch"] = epoch + 1
        scores = score_detector(model.eval(), val)
        progress["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses[-steps_per_epoch:]))})
        progress["history"][-1].update(asdict(scores))
        if log is not None:
            log(f"epoch {epoch + 1}: loss {progress['history'][-1]['train_loss']:.3f}; validation {scores}")
        _save_resume(out, model, optim, progress)
        last_ckpt = time.monotonic()
    return _finish(out, model, train, val, progress, run_steps, start, losses, final=True)


def _finish(
    out: Path,
    model: CompactDetector,
    train: list[LabelledImage],
    val: list[LabelledImage],
    progress: dict[str, Any],
    run_steps: int,
    start: float,
    losses: list[float],
    *,
    final: bool,
) -> GrounderTrainReport:
    scores = score_detector(model.eval(), val)
    history = progress["history"]
    if final:
        info = {"steps": progress["step"], "epochs": progress["epoch"], "train_images": len(train)}
        info.update(val_images=len(val), validation=asdict(scores))
        save_detector(out, model, info)
        (out / "history.json").write_text(json.dumps(history, indent=2))
        if history:
            draw_loss_curve(
                [h["epoch"] for h in history],
                [h["train_loss"] for h in history],
                [None for _ in history],
                out / "loss_curve.png",
                title="compact grounder training",
                y_label="focal + L1 + CE (sum)",
            )
    train_loss = float(np.mean(losses[-50:])) if losses else float("nan")
    return GrounderTrainReport(
        len(train), len(val), progress["step"], time.monotonic() - start, train_loss, scores, str(out)
    )
