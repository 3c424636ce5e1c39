"""`sam2grasp train-tracker`: train the compact SAM2 on simulated episodes with ground-truth masks.

Two stages, as the recipe that learned on 2 CPU cores:
1. box -> mask on single frames, the whole model, batched; BCE + dice on the mask, MSE on the predicted IoU,
   BCE on the object score (black frames teach "absent"). The mask loss is taken before SAM2's object-score
   gating, which would otherwise cut the mask gradient whenever the score starts negative.
2. tracking on clips: prompt on frame 0, SAM2's memory carries the target through the next frames; the image
   encoder is frozen; black frames and the arm's own occlusion teach the score when the target is not visible.
Frames are mirrored and recoloured per sample (`tracker_augment`); several datasets may be trained on as one, their
episodes numbered one after the other. Checkpoints (weights as safetensors, optimiser state, progress as JSON) are
written every few minutes; a rerun resumes from the last one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from pipeline.dataset.reader import Dataset
from policy.sam2_build import (
    build_sam2,
    load_weights,
    read_state_dict,
    save_safetensors,
    tracker_metadata,
    tracker_spec,
)
from policy.tracker import _MEAN, _STD, check_crop
from policy.tracker_augment import augment_clips, check_augment
from policy.tracker_data import TrackingClips, load_clips_from


@dataclass(frozen=True)
class TrackerTrainConfig:
    """Training settings (sizes in pixels of the tracker's square input, times in seconds)."""

    image_size: int = 256
    stage1_steps: int = 1200
    stage1_batch: int = 8
    stage1_lr: float = 8e-4
    stage2_steps: int = 1200
    stage2_batch: int = 2
    stage2_lr: float = 3e-4
    clip_len: int = 6
    max_stride: int = 3
    first_frame_share: float = 0.5
    black_prob: float = 0.15
    box_jitter: float = 0.1
    #: share of samples mirrored left-right, and the relative colour change drawn per sample (`tracker_augment`)
    flip_prob: float = 0.5
    color_jitter: float = 0.2
    held_out: float = 0.1
    seed: int = 0
    checkpoint_every_s: float = 180.0
    device: str = "cpu"
    stage1_budget_s: float = 0.0
    stage2_budget_s: float = 0.0
    crop: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.crop is not None:
            object.__setattr__(self, "crop", check_crop(self.crop))
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.stage1_batch < 1 or self.stage2_batch < 1:
            raise ValueError("step counts must be >= 0 and batch sizes >= 1")
        if not 2 <= self.clip_len <= 16 or not 1 <= self.max_stride <= 8:
            raise ValueError("clip_len must be within 2..16 and max_stride within 1..8")
        if not 0.0 <= self.first_frame_share <= 1.0:
            raise ValueError(f"first_frame_share must be a share within [0, 1], got {self.first_frame_share}")
        if not 0 <= self.black_prob < 1 or not 0 <= self.box_jitter <= 0.5 or not 0 < self.held_out < 1:
            raise ValueError("black_prob within [0, 1), box_jitter within [0, 0.5], held_out within (0, 1)")
        check_augment(self.flip_prob, self.color_jitter)
        if self.stage1_budget_s < 0 or self.stage2_budget_s < 0:
            raise ValueError("stage budgets are seconds >= 0 (0 = no time limit, the step counts alone)")


def split_episodes(n: int, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and held-out episode indices (held-out: at least one)."""
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, round(n * held_out))
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def _normalise(frames: torch.Tensor) -> torch.Tensor:
    mean, std = _MEAN.to(frames.device), _STD.to(frames.device)
    return (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def _jittered_boxes(masks: torch.Tensor, jitter: float, rng: np.random.Generator) -> torch.Tensor:
    boxes = []
    size = masks.shape[-1]
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys) == 0:
            c = rng.uniform(0.2, 0.8, 2) * size
            boxes.append([c[0] - 8, c[1] - 8, c[0] + 8, c[1] + 8])
            continue
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1
        w, h = x1 - x0, y1 - y0
        d = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
        boxes.append(list(np.clip([x0 + d[0], y0 + d[1], x1 + d[2], y1 + d[3]], 0, size)))
    return torch.tensor(boxes, dtype=torch.float32)


def _heads(model: Any, pix: torch.Tensor, high_res: list[torch.Tensor], points: Any, multimask: bool) -> Any:
    """SAM prompt encoder + mask decoder without the object-score gating (for the loss)."""
    b = pix.shape[0]
    if points is None:
        coords = torch.zeros(b, 1, 2, device=pix.device)
        labels = -torch.ones(b, 1, dtype=torch.int32, device=pix.device)
    else:
        coords, labels = points["point_coords"], points["point_labels"]
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return model.sam_mask_decoder(
        image_embeddings=pix,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=high_res,
    )


def _mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask BCE + dice, shape (B, M); logits (B, M, S, S), target (B, S, S) float."""
    t = target[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(2, 3))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * t).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    return 5.0 * bce + dice


def _frame_loss(
    low_res: torch.Tensor,
    ious: torch.Tensor,
    score: torch.Tensor,
    target: torch.Tensor,
    visible: torch.Tensor,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of one frame (batched), the index of the best mask per item, and the IoU of that mask."""
    logits = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    per_mask = _mask_losses(logits, target)
    best = per_mask.argmin(dim=1)
    idx = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        pred = logits > 0
        inter = (pred & (target[:, None] > 0.5)).sum(dim=(2, 3)).float()
        union = (pred | (target[:, None] > 0.5)).sum(dim=(2, 3)).float().clamp_min(1)
        true_iou = inter / union
    vis = visible.float()
    mask_loss = (per_mask[idx, best] * vis).sum() / vis.sum().clamp_min(1)
    iou_loss = (((ious.float() - true_iou) ** 2).mean(dim=1) * vis).sum() / vis.sum().clamp_min(1)
    score_loss = F.binary_cross_entropy_with_logits(score.float().reshape(-1), vis)
    return mask_loss + iou_loss + score_loss, best, true_iou[idx, best]


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


def _split_backbone(model: Any, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    out = model.forward_image(x)
    _, feats, pos, sizes = model._prepare_backbone_features(out)
    return feats, pos, sizes


def _high_res(feats: list[torch.Tensor], sizes: Any) -> list[torch.Tensor]:
    return [f.permute(1, 2, 0).reshape(f.shape[1], f.shape[2], *s) for f, s in zip(feats[:-1], sizes[:-1], strict=True)]


def _box_points(boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device).expand(len(boxes), 2)
    return {"point_coords": boxes.reshape(-1, 2, 2), "point_labels": labels.contiguous()}


def stage1_step(
    model: Any, data: TrackingClips, idx: np.ndarray, cfg: TrackerTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Box -> mask on single frames; some frames blacked out with a random box to teach 'absent'."""
    dev = _model_device(model)
    frames = torch.from_numpy(data.frames[idx]).to(dev)[:, None]
    masks = torch.from_numpy(data.masks[idx]).to(dev)[:, None]
    frames, masks = augment_clips(frames, masks, cfg.flip_prob, cfg.color_jitter, rng)
    frames, masks = frames[:, 0], masks[:, 0]
    black = torch.from_numpy(rng.random(len(idx)) < cfg.black_prob).to(dev)
    frames[black] = 0
    masks[black] = False
    visible = masks.flatten(1).any(dim=1)
    boxes = _jittered_boxes(masks.cpu(), cfg.box_jitter, rng).to(dev)
    feats, _pos, sizes = _split_backbone(model, _normalise(frames))
    b, c = feats[-1].shape[1], feats[-1].shape[2]
    h, w = sizes[-1]
    pix = (feats[-1] + model.no_mem_embed).permute(1, 2, 0).reshape(b, c, h, w)
    low, ious, _, score = _heads(model, pix, _high_res(feats, sizes), _box_points(boxes), multimask=False)
    loss, _, iou = _frame_loss(low, ious, score, masks.float(), visible, cfg.image_size)
    return loss, float(iou[visible].mean()) if bool(visible.any()) else math.nan


def _clip(start: int, end: int, cfg: TrackerTrainConfig, rng: np.random.Generator) -> np.ndarray | None:
    """Frame indices of one clip within an episode's frames [start, end), or None when it is too short.

    With probability `first_frame_share` the prompt is the episode's first frame, as at run time (arm at home,
    away from the target); the tracked frames then follow it directly, or (half of those clips) come from later
    in the episode, so that the prompt's memory alone must carry the target's identity into a changed scene.
    Otherwise the clip starts anywhere. Frames within a clip are `stride` apart (1..max_stride)."""
    stride = int(rng.integers(1, cfg.max_stride + 1))
    span = (cfg.clip_len - 1) * stride
    if end - start <= span:
        return None
    if rng.random() < cfg.first_frame_share:
        rest = (cfg.clip_len - 2) * stride
        first = start + stride if rng.random() < 0.5 else int(rng.integers(start + 1, end - rest))
        return np.concatenate([[start], np.arange(first, first + rest + 1, stride)])
    s = int(rng.integers(start, end - span))
    return np.arange(s, s + span + 1, stride)


def _sample_clips(
    data: TrackingClips, episodes: list[int], cfg: TrackerTrainConfig, rng: np.random.Generator
) -> np.ndarray:
    clips = []
    for _ in range(cfg.stage2_batch):
        for _try in range(50):
            e = episodes[int(rng.integers(len(episodes)))]
            clip = _clip(*data.episode_range(e), cfg, rng)
            if clip is not None and data.masks[clip[0]].any():  # the prompt frame must show the target
                clips.append(clip)
                break
        else:
            raise ValueError("no clip with a visible target on its first frame could be drawn")
    return np.stack(clips)  # (B, K)


def stage2_step(
    model: Any, data: TrackingClips, episodes: list[int], cfg: TrackerTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Track through a batch of clips with SAM2's memory; the image encoder runs without gradients."""
    clips = _sample_clips(data, episodes, cfg, rng)
    bsz, k = clips.shape
    dev = _model_device(model)
    frames = torch.from_numpy(data.frames[clips.reshape(-1)]).to(dev).reshape(bsz, k, *data.frames.shape[1:])
    masks = torch.from_numpy(data.masks[clips.reshape(-1)]).to(dev).reshape(bsz, k, *data.masks.shape[1:])
    frames, masks = augment_clips(frames, masks, cfg.flip_prob, cfg.color_jitter, rng)
    black = torch.from_numpy(rng.random((bsz, k)) < cfg.black_prob).to(dev)
    black[:, 0] = False
    frames[black] = 0
    masks[black] = False
    with torch.no_grad():
        feats, pos, sizes = _split_backbone(model, _normalise(frames.transpose(0, 1).reshape(-1, *frames.shape[2:])))
    memory: dict[str, dict[int, dict[str, Any]]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    total = torch.zeros((), device=dev)
    ious = []
    boxes = _jittered_boxes(masks[:, 0].cpu(), cfg.box_jitter, rng).to(dev)
    for t in range(k):
        sl = slice(t * bsz, (t + 1) * bsz)
        f_t = [f[:, sl] for f in feats]
        p_t = [p[:, sl] for p in pos]
        points = _box_points(boxes) if t == 0 else None
        pix = model._prepare_memory_conditioned_features(t, t == 0, f_t[-1:], p_t[-1:], sizes[-1:], memory, k)
        multimask = model._use_multimask(t == 0, points)
        low, pred_iou, tokens, score = _heads(model, pix, _high_res(f_t, sizes), points, multimask)
        visible = masks[:, t].flatten(1).any(dim=1)
        loss, _, iou = _frame_loss(low, pred_iou, score, masks[:, t].float(), visible, cfg.image_size)
        total = total + loss
        if t > 0 and bool(visible.any()):
            ious.append(float(iou[visible].mean()))
        # what inference would carry forward: the mask SAM2 itself picks, gated by the object score
        pick = pred_iou.argmax(dim=1) if multimask else torch.zeros(bsz, dtype=torch.long, device=dev)
        rows = torch.arange(bsz, device=dev)
        appearing = score.reshape(-1, 1, 1, 1) > 0
        low_sel = torch.where(appearing, low[rows, pick].unsqueeze(1), torch.full_like(low[:, :1], -1024.0))
        high_sel = F.interpolate(
            low_sel.float(), size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False
        )
        ptr = model.obj_ptr_proj(tokens[rows, pick if tokens.shape[1] > 1 else torch.zeros_like(pick)])
        lam = appearing.reshape(-1, 1).float()
        if model.fixed_no_obj_ptr:
            ptr = lam * ptr
        ptr = ptr + (1 - lam) * model.no_obj_ptr
        mem_feat, mem_pos = model._encode_new_memory(f_t, sizes, high_sel, score, t == 0)
        entry = {"maskmem_features": mem_feat, "maskmem_pos_enc": mem_pos, "obj_ptr": ptr}
        memory["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = entry
    return total / k, float(np.mean(ious)) if ious else math.nan


def _save(out: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spec = tracker_spec("compact", int(getattr(model, "image_size")))  # noqa: B009
    recorded = progress["config"].get("crop")
    crop = None if recorded is None else check_crop(recorded)
    save_safetensors(model, out / "tracker.safetensors.tmp", tracker_metadata(spec, crop))
    torch.save(optim.state_dict(), out / "optimizer.pt.tmp")
    (out / "progress.json.tmp").write_text(json.dumps(progress, indent=2))
    for name in ("tracker.safetensors", "optimizer.pt", "progress.json"):
        (out / f"{name}.tmp").replace(out / name)


def _by_dataset(dirs: Sequence[Path], sizes: Sequence[int], episodes: list[int]) -> list[tuple[Path, list[int]]]:
    """`episodes` (numbered over `dirs` one after the other, `sizes` episodes each) as each dataset's own indices."""
    out = []
    offset = 0
    for d, n in zip(dirs, sizes, strict=True):
        out.append((d, sorted(e - offset for e in episodes if offset <= e < offset + n)))
        offset += n
    return out


def held_out_by_dataset(
    dirs: Sequence[Path], held: list[int], sizes: Sequence[int] | None = None
) -> dict[str, list[int]]:
    """The held-out episodes `held` (numbered over `dirs` one after the other) as each dataset's own indices.

    sizes: each dataset's episode count (default: read from the datasets).
    """
    counts = [len(Dataset(d)) for d in dirs] if sizes is None else sizes
    return {str(d): eps for d, eps in _by_dataset(dirs, counts, held)}


def train_tracker(
    data_dir: Path | Sequence[Path],
    out: Path,
    cfg: TrackerTrainConfig,
    *,
    log: Any = print,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train (or resume training) the compact tracker; returns the final progress record.

    data_dir: one dataset, or several trained on as one (episodes numbered over them in the order given; the
    held-out split is drawn over all of them and recorded per dataset in `held_out_by_data`).
    init: weights (.safetensors) to start from instead of the random initialisation (ignored on resume).
    """
    dirs = [data_dir] if isinstance(data_dir, Path) else [Path(d) for d in data_dir]
    if not dirs:
        raise ValueError("train_tracker needs at least one dataset directory")
    torch.manual_seed(cfg.seed)
    spec = tracker_spec("compact", cfg.image_size)
    model: Any = build_sam2(spec, device=cfg.device)
    # start the object-score head positive so early masks are not replaced by "no object"
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    torch.nn.init.constant_(last.bias, 2.0)
    if init is not None:
        load_weights(model, read_state_dict(init), str(init))
    sizes = [len(Dataset(d)) for d in dirs]
    train_eps, held = split_episodes(sum(sizes), cfg.held_out, cfg.seed)
    progress: dict[str, Any] = {
        "stage": 1,
        "step": 0,
        "config": asdict(cfg),
        "data": [str(d) for d in dirs],
        "train_episodes": train_eps,
        "held_out_episodes": held,
        "held_out_by_data": held_out_by_dataset(dirs, held, sizes),
        "seconds": 0.0,
        "history": [],
    }
    if (out / "progress.json").exists():
        progress = json.loads((out / "progress.json").read_text())
        recorded = progress["config"].get("crop")
        if (None if recorded is None else tuple(recorded)) != cfg.crop:
            raise ValueError(
                f"{out} was trained with crop {recorded}, but crop {cfg.crop} was given: resume with the same crop "
                "or train into another --out"
            )
        recorded_data = progress.get("data", [str(d) for d in dirs])
        if recorded_data != [str(d) for d in dirs]:
            raise ValueError(
                f"{out} was trained on {recorded_data}, but {[str(d) for d in dirs]} was given: resume with the same "
                "datasets in the same order or train into another --out"
            )
        load_weights(model, read_state_dict(out / "tracker.safetensors"), str(out / "tracker.safetensors"))
        log(json.dumps({"resumed": True, "stage": progress["stage"], "step": progress["step"]}))
    t_load = time.monotonic()
    sources = _by_dataset(dirs, sizes, progress["train_episodes"])
    data = load_clips_from(sources, cfg.image_size, workers=min(8, os.cpu_count() or 1), crop=cfg.crop)
    # re-index episodes within the loaded subset
    local = list(range(data.episodes))
    log(
        json.dumps(
            {
                "loaded_frames": len(data.frames),
                "episodes": data.episodes,
                "load_s": round(time.monotonic() - t_load, 1),
            }
        )
    )
    rng = np.random.default_rng(cfg.seed + progress["step"] + 1000 * progress["stage"])
    t_start = time.monotonic() - progress["seconds"]
    last_ckpt = time.monotonic()
    for stage in (1, 2):
        if progress["stage"] > stage:
            continue
        steps = cfg.stage1_steps if stage == 1 else cfg.stage2_steps
        budget = cfg.stage1_budget_s if stage == 1 else cfg.stage2_budget_s
        stage_t0 = t10 = time.monotonic()
        model.train()
        if stage == 2:
            for p in model.image_encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        base_lr = cfg.stage1_lr if stage == 1 else cfg.stage2_lr
        optim = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01)
        if (out / "optimizer.pt").exists() and progress["step"] > 0:
            optim.load_state_dict(torch.load(out / "optimizer.pt", weights_only=True))
        window: list[tuple[float, float]] = []
        while progress["step"] < steps:
            step = progress["step"]
            lr = base_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
            for g in optim.param_groups:
                g["lr"] = lr
            if stage == 1:
                idx = rng.choice(
                    np.flatnonzero(data.masks.reshape(len(data.masks), -1).any(axis=1)), size=cfg.stage1_batch
                )
                loss, iou = stage1_step(model, data, idx, cfg, rng)
            else:
                loss, iou = stage2_step(model, data, local, cfg, rng)
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            window.append((float(loss.detach()), iou))
            progress["step"] = step + 1
            if budget and progress["step"] == 10:
                t10 = time.monotonic()  # steps before this one include warm-up (allocator, cuDNN autotuning)
            if budget and progress["step"] == 40:
                # fit the step count (and so the cosine schedule) to the time budget of this stage
                per_step = (time.monotonic() - t10) / 30
                steps = max(41, min(steps, 40 + int((budget - (time.monotonic() - stage_t0)) / per_step)))
                log(json.dumps({"stage": stage, "steps_in_budget": steps, "s_per_step": round(per_step, 4)}))
            if progress["step"] % 25 == 0 or progress["step"] == steps:
                losses = [w[0] for w in window]
                ious = [w[1] for w in window if not math.isnan(w[1])]
                rec = {
                    "stage": stage,
                    "step": progress["step"],
                    "loss": round(float(np.mean(losses)), 4),
                    "train_iou": round(float(np.mean(ious)), 4) if ious else None,
                    "lr": round(lr, 6),
                    "elapsed_s": round(time.monotonic() - t_start, 1),
                }
                progress["history"].append(rec)
                log(json.dumps(rec))
                window = []
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                progress["seconds"] = time.monotonic() - t_start
                _save(out, model, optim, progress)
                last_ckpt = time.monotonic()
        progress["stage"], progress["step"] = stage + 1, 0
        progress["seconds"] = time.monotonic() - t_start
        _save(out, model, optim, progress)
    model.eval()
    return progress
