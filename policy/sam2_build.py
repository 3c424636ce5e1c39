"""One builder for every SAM2 the project runs: Meta's official SAM2.1 configs and the project's compact config.

Checkpoints load strictly: a missing file, a file that is not a checkpoint, weights for another configuration,
and missing or unexpected keys are each a `CheckpointError` that says what was found and what was expected.
Official checkpoints are read in their published format (a torch file holding {"model": state_dict}, loaded
with `weights_only=True`); the project's own weights are safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from policy.tracker_names import COMPACT as COMPACT
from policy.tracker_names import OFFICIAL_CONFIGS as OFFICIAL_CONFIGS


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model."""


@dataclass(frozen=True)
class TrackerSpec:
    """Which SAM2 to build.

    name: "compact" or an official name (sam2.1-tiny, -small, -base-plus, -large); image_size: input pixels
    (square); config_file: the hydra config inside `sam2`; overrides: hydra overrides applied at build time
    (the image size can only be set here: changing it after the build breaks tracking).
    """

    name: str
    image_size: int
    config_file: str
    overrides: tuple[str, ...] = ()


def _compact_overrides(image_size: int) -> tuple[str, ...]:
    """Hydra overrides that shrink sam2.1_hiera_t to the compact tracker; coupled sizes change together."""
    embed, d_model, mem_dim = 32, 64, 32
    feat = image_size // 16
    stage_maps = [image_size // 4, image_size // 8, image_size // 16, image_size // 32]
    windows = [min(8, stage_maps[0]), min(4, stage_maps[1]), min(14, stage_maps[2]), min(7, stage_maps[3])]
    return (
        f"++model.image_size={image_size}",
        f"++model.image_encoder.trunk.embed_dim={embed}",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        f"++model.image_encoder.trunk.window_spec=[{','.join(str(w) for w in windows)}]",
        f"++model.image_encoder.neck.d_model={d_model}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d_model}",
        f"++model.image_encoder.neck.backbone_channel_list=[{8 * embed},{4 * embed},{2 * embed},{embed}]",
        f"++model.memory_attention.d_model={d_model}",
        "++model.memory_attention.num_layers=2",
        f"++model.memory_attention.layer.d_model={d_model}",
        f"++model.memory_attention.layer.dim_feedforward={4 * d_model}",
        f"++model.memory_attention.layer.self_attention.embedding_dim={d_model}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.embedding_dim={d_model}",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.kv_in_dim={mem_dim}",
        f"++model.memory_encoder.out_dim={mem_dim}",
        f"++model.memory_encoder.in_dim={d_model}",
        f"++model.memory_encoder.position_encoding.num_pos_feats={mem_dim}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={d_model}",
        f"++model.memory_encoder.fuser.layer.dim={d_model}",
    )


def tracker_spec(name: str, image_size: int | None = None) -> TrackerSpec:
    """The spec of a named tracker; `image_size` defaults to 1024 for official configs and 256 for compact."""
    if name == COMPACT:
        size = 256 if image_size is None else image_size
        if size % 32 or not 64 <= size <= 1024:
            raise ValueError(f"compact image_size must be a multiple of 32 within 64..1024, got {size}")
        return TrackerSpec(COMPACT, size, OFFICIAL_CONFIGS["sam2.1-tiny"], _compact_overrides(size))
    if name in OFFICIAL_CONFIGS:
        size = 1024 if image_size is None else image_size
        if size % 32 or not 256 <= size <= 2048:
            raise ValueError(f"image_size must be a multiple of 32 within 256..2048, got {size}")
        overrides = () if size == 1024 else (f"++model.image_size={size}",)
        return TrackerSpec(name, size, OFFICIAL_CONFIGS[name], overrides)
    valid = ", ".join([COMPACT, *OFFICIAL_CONFIGS])
    raise ValueError(f"unknown tracker {name!r}; valid trackers: {valid}")


def build_model(spec: TrackerSpec, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Instantiate the SAM2 model of `spec` with random weights, in eval mode on `device`."""
    import sam2  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    # SAM2Base itself never fills holes (that post-processing needs sam2's CUDA extension and lives in the
    # video predictor, which the project does not use).
    cfg = compose(config_name=spec.config_file, overrides=list(spec.overrides))
    OmegaConf.resolve(cfg)
    model: torch.nn.Module = instantiate(cfg.model, _recursive_=True)
    return model.to(device).eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from an official checkpoint (.pt/.pth: {"model": state_dict}) or a safetensors file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a SAM2 checkpoint (torch.load with weights_only=True failed: {exc}); "
            "expected a torch file holding {'model': state_dict} or a .safetensors file"
        ) from exc
    if not isinstance(raw, dict) or "model" not in raw or not isinstance(raw["model"], dict):
        keys = sorted(str(k) for k in raw)[:5] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path} holds {keys}, expected a dict with a 'model' state dict (SAM2's format)")
    state: dict[str, torch.Tensor] = raw["model"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)][:5]
    if bad:
        raise CheckpointError(f"{path}: 'model' entries {bad} are not tensors; a state dict maps names to tensors")
    return state


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly copy `state` into `model`: every key present on both sides with the same shape."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (weights for another configuration?): {mismatched[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing keys: {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {unexpected[:5]}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(
            f"{source}: {len(broken)} weight tensors hold NaN or inf ({broken[:3]}): the file is corrupted; "
            "restore it or train again"
        )
    model.load_state_dict(state, strict=True)


def build_sam2(
    spec: TrackerSpec, checkpoint: Path | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Build the model of `spec`, load `checkpoint` strictly when given, and return it in eval mode."""
    model = build_model(spec, device)
    if checkpoint is not None:
        path = Path(checkpoint)
        _check_metadata(path, spec)
        load_weights(model, read_state_dict(path), str(checkpoint))
        model.to(device)
    return model


def _check_metadata(path: Path, spec: TrackerSpec) -> None:
    """Project checkpoints record the tracker and image size they were trained for; refuse another spec (a compact
    model's weights have the same shapes at every image size, so shapes alone cannot tell)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return  # read_state_dict reports the unreadable file
    for key, want in (("tracker", spec.name), ("image_size", str(spec.image_size))):
        if key in meta and meta[key] != want:
            raise CheckpointError(f"{path} was trained as {key}={meta[key]!r}, but {key}={want!r} was requested")


def tracker_metadata(spec: TrackerSpec, crop: tuple[float, float, float, float] | None = None) -> dict[str, str]:
    """Metadata to store with a project checkpoint of `spec`; crop: the frame region it was trained on (fractions
    x0, y0, x1, y1; None = the whole frame)."""
    meta = {"tracker": spec.name, "image_size": str(spec.image_size)}
    if crop is not None:
        meta["crop"] = format_crop(crop)
    return meta


def format_crop(crop: tuple[float, float, float, float] | None) -> str:
    """A crop region as the text stored in checkpoints and cache keys: "x0,y0,x1,y1" or "full"."""
    return "full" if crop is None else ",".join(f"{v:.4f}" for v in crop)


def checkpoint_crop(path: Path | None) -> tuple[float, float, float, float] | None:
    """The frame region a project checkpoint was trained on (its metadata), None for the whole frame or for files
    without the record (official checkpoints)."""
    if path is None or Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    from safetensors import SafetensorError, safe_open

    from policy.tracker import parse_crop

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None  # read_state_dict reports the unreadable file
    try:
        return parse_crop(meta.get("crop", "full"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: its crop record is damaged ({exc})") from exc


def save_official_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Write `model`'s weights in SAM2's published checkpoint format ({"model": state_dict})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def save_safetensors(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `model`'s weights as safetensors (the project's own format)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
