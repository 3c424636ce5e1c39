"""`sam2grasp train`: train a policy on a dataset. SAM2Grasp trains its ACT head on cached F_t only; the image
baselines (`act`, `act-cvae`, `act-cvae-condition`) train a CNN + the same ACT transformer from the dataset's frames
(downscaled to `image_size`; see `policy.train_image`), with the same schedule, validation, curve and resume.

Steps: find the dataset's feature cache (`--cache DIR`, else the one complete cache under DATA/cache of the asked
feature spec), build one `EpisodeArrays` per episode (cached tokens and extras, the dataset's proprioception and
action targets), split by episode, size the head from the cache (tokens per frame, channels, spec) and train it
with `policy.train_head.train_head`. The run directory gets `policy/`, `best/`, `resume/`, `loss_curve.png`,
`report.json` (train_head's) plus `tracker.json` next to each policy, naming the tracker whose features the head
learned from (`policy.agent.load_agent` checks it).

Action targets: joint mode, the dataset's `action` (the expert's joint targets + gripper opening target).
ee mode, the next frame's TCP pose (`ee_pose`, the last frame repeated) with two fixes that make it learnable:
(1) the axis-angle vector of a downward-pointing TCP sits at |r| ≈ π where it flips sign between neighbouring
frames, so each rotation is written as whichever of its two equivalent vectors (r, r·(1 − 2π/|r|)) lies nearer to
the home pose's; (2) the gripper entry is the commanded opening (`action[:, 6]`), not the measured one, which
stops at the object's width when grasping (a policy that imitated it would command a grip with no force).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from policy.cache_store import MANIFEST, CacheError, FeatureCache
from policy.chunks import EpisodeArrays

if TYPE_CHECKING:
    from policy.grasp_yaw import GraspYaw

#: Policies `sam2grasp train --policy` knows: SAM2Grasp and the paper's image baselines.
POLICIES: tuple[str, ...] = ("sam2grasp", "act", "act-cvae", "act-cvae-condition")
BUILT_POLICIES: tuple[str, ...] = POLICIES
#: Folds of the grasp-yaw estimator's cross-fitting for a head trained with grasp_yaw (`pipeline.train_grasp_yaw`).
GRASP_YAW_FOLDS = 5


@dataclass(frozen=True)
class PolicyTrainConfig:
    """What `train` does besides the head's own training settings.

    features: feature spec name the cache must hold (None: whichever single complete cache there is);
    cache: an explicit cache directory; val_fraction: share of episodes held out (whole episodes); action_mode:
    "joint" or "ee"; head: ACTConfig fields other than those taken from the cache (feature_spec, token_dim,
    n_tokens, action_mode). image_size: (width, height) pixels the image baselines downscale frames to (None:
    128x96); backbone: the baselines' vision backbone ("cnn" or "resnet18", `policy.image_act_config.BACKBONES`;
    None: cnn); features, cache: SAM2Grasp only; image_size, backbone: baselines only. learn_undone_closes: also
    learn the close labels a demonstration opens again (`policy.undone_closes`; by default they stay out of the loss).
    """

    policy: str = "sam2grasp"
    features: str | None = None
    cache: Path | None = None
    val_fraction: float = 0.1
    action_mode: str = "joint"
    head: dict[str, Any] | None = None
    image_size: tuple[int, int] | None = None
    learn_undone_closes: bool = False
    backbone: str | None = None

    def __post_init__(self) -> None:
        check_policy_name(self.policy)
        if self.action_mode not in ("joint", "ee"):
            raise ValueError(f"unknown action mode {self.action_mode!r}; valid: joint, ee")
        if self.policy == "sam2grasp" and self.image_size is not None:
            raise ValueError("--image-size sets the image baselines' input; sam2grasp reads cached features")
        if self.policy == "sam2grasp" and self.backbone is not None:
            raise ValueError("--backbone sets the image baselines' vision backbone; sam2grasp reads cached features")
        if self.backbone is not None:
            from policy.image_act_config import check_backbone

            check_backbone(self.backbone)
        if self.policy != "sam2grasp" and (self.features is not None or self.cache is not None):
            raise ValueError(f"--features and --cache select SAM2 feature caches; {self.policy!r} trains on frames")


def check_policy_name(name: str) -> None:
    """ValueError unless `name` is a policy this build can train."""
    if name in BUILT_POLICIES:
        return
    raise ValueError(f"unknown policy {name!r}; valid: {', '.join(BUILT_POLICIES)}")


# ---------------------------------------------------------------- finding the cache


def _describe(directory: Path) -> str:
    """One line about a cache directory: key, spec, tracker, image size, complete or not."""
    try:
        doc = json.loads((directory / MANIFEST).read_text())
        fields = doc.get("key_fields", {})
        state = "complete" if doc.get("complete") else "incomplete"
        return (
            f"{directory} (features {fields.get('features')}, tracker {fields.get('tracker')} at "
            f"{fields.get('image_size')} px, weights {str(fields.get('weights_sha256'))[:12]}, {state})"
        )
    except (OSError, ValueError, AttributeError):
        return f"{directory} (unreadable manifest)"


def find_cache(
    data: Path, features: str | None = None, cache: Path | None = None, tracker_weights: str | None = None
) -> FeatureCache:
    """The feature cache to train on: `cache` when given (its spec must be `features` when both are given), else
    the one complete cache under `data/cache` of spec `features` (any spec when None) and, when `tracker_weights`
    is given, computed by the tracker whose weights hash to it (a head's `tracker.json` `weights_sha256`);
    CacheError listing what exists otherwise."""
    if cache is not None:
        found = FeatureCache(Path(cache))
        if features is not None and found.spec.name != features:
            raise CacheError(f"cache {cache} holds features {found.spec.name!r}, not the requested {features!r}")
        return found
    root = Path(data) / "cache"
    dirs = sorted(p for p in root.glob("*") if (p / MANIFEST).is_file()) if root.is_dir() else []
    candidates: list[FeatureCache] = []
    for d in dirs:
        try:
            fc = FeatureCache(d)
        except CacheError:
            continue
        if (features is None or fc.spec.name == features) and (
            tracker_weights is None or fc.key.weights_sha256 == tracker_weights
        ):
            candidates.append(fc)
    if len(candidates) == 1:
        return candidates[0]
    listing = "; ".join(_describe(d) for d in dirs) or "none"
    wanted = f"features {features!r}" if features else "any features"
    if tracker_weights is not None:
        wanted += f" from tracker weights {tracker_weights[:12]}"
    if not candidates:
        raise CacheError(
            f"no complete feature cache with {wanted} under {root}; caches there: {listing}. "
            f"Run `sam2grasp cache --data {data}{' --features ' + features if features else ''}` first"
        )
    raise CacheError(
        f"{len(candidates)} complete caches with {wanted} under {root}: {listing}; choose one with --cache DIR"
        + ("" if features else " or --features SPEC")
    )


# ---------------------------------------------------------------- episode arrays


def _home_rotation() -> npt.NDArray[np.float64]:
    from robot.kinematics import forward, pose_to_vector
    from robot.sim.config import HOME_Q
    from robot.sim.mjcf import TCP_OFFSET

    return np.asarray(pose_to_vector(forward(HOME_Q, TCP_OFFSET))[3:], dtype=np.float64)


def canonical_rotvec(rot: npt.ArrayLike, reference: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Each row's axis-angle vector r (N, 3) as whichever of r and its equivalent r·(1 − 2π/|r|) is nearer to
    `reference` (3,): the same rotation, without the sign flips of |r| ≈ π."""
    r = np.asarray(rot, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(reference, dtype=np.float64)
    norm = np.linalg.norm(r, axis=1, keepdims=True)
    alt = np.where(norm > 1e-9, r * (1.0 - 2.0 * math.pi / np.maximum(norm, 1e-9)), r)
    use_alt = np.linalg.norm(alt - ref, axis=1) < np.linalg.norm(r - ref, axis=1)
    return np.where(use_alt[:, None], alt, r)


def ee_targets(action: npt.NDArray[np.floating], reference: npt.ArrayLike | None = None) -> npt.NDArray[np.float32]:
    """ee-mode targets (T, 7) of one episode: the TCP pose the joint targets command (forward kinematics of
    `action`'s six joint angles, radians, so that corrective labels of perturbed demonstrations stay corrective),
    its rotation made continuous (`canonical_rotvec`, reference: the home pose's), and the commanded gripper
    opening (metres)."""
    from robot.kinematics import forward, pose_to_vector
    from robot.sim.mjcf import TCP_OFFSET

    a = np.asarray(action, dtype=np.float64)
    poses = np.array([pose_to_vector(forward(q, TCP_OFFSET)) for q in a[:, :6]], dtype=np.float64).reshape(-1, 6)
    ref = _home_rotation() if reference is None else np.asarray(reference, dtype=np.float64)
    out = np.empty((len(a), 7), dtype=np.float64)
    out[:, :3] = poses[:, :3]
    out[:, 3:6] = canonical_rotvec(poses[:, 3:6], ref)
    out[:, 6] = a[:, 6]
    return out.astype(np.float32)


def episode_targets(
    action: npt.NDArray[np.floating],
    action_mode: str,
    *,
    learn_undone_closes: bool = False,
    reference: npt.ArrayLike | None = None,
    learn: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_] | None]:
    """What a policy learns from one episode's recorded actions (T, 7): the targets of `action_mode` ("joint":
    the actions themselves; "ee": `ee_targets`, rotation continuous about `reference`) and the (T, 7) labels kept
    out of the loss, or None when every label counts: unless learn_undone_closes, the close labels a
    demonstration opens again (`policy.undone_closes.label_ignore`); and every label of a frame whose `learn` flag
    (T,) is False (the dataset's `action.learn`: a policy drove that frame)."""
    from policy.undone_closes import label_ignore

    target = np.asarray(action if action_mode == "joint" else ee_targets(action, reference), dtype=np.float32)
    ignore = None if learn_undone_closes else label_ignore(target)
    if learn is not None:
        flags = np.asarray(learn, dtype=bool)
        if flags.shape != (target.shape[0],):
            raise ValueError(f"learn must be one flag per frame ({target.shape[0]},), got {flags.shape}")
        if not flags.all():
            ignore = (np.zeros(target.shape, bool) if ignore is None else ignore) | ~flags[:, None]
    return target, ignore


def episode_arrays(
    data: Path,
    cache: FeatureCache,
    action_mode: str,
    *,
    learn_undone_closes: bool = False,
    place_tcp_offset: float | None = None,
    place_source: str = "tracked",
    action_frame: str = "base",
    grasp_yaw: Mapping[int, GraspYaw] | None = None,
    shapes: Mapping[int, str | None] | None = None,
) -> list[EpisodeArrays]:
    """One `EpisodeArrays` per cached episode: tokens and extras from the cache, state and targets from the
    dataset, and (unless learn_undone_closes) the close labels a demonstration opens again marked to be
    ignored. With place_tcp_offset (metres), the extras gain the target's base-frame place values
    (`policy.place`) from each episode's recorded camera calibration, the target's position taken from each
    frame's tracked box (place_source "tracked") or from the episode's first-frame target box, which the cache
    prompted the tracker with ("prompt"). CacheError when the cache does not match the dataset; ValueError when
    an episode has no camera record or no first-frame box and place values are asked for. action_frame "target"
    (ee mode, prompt place values) makes the targets' TCP x, y relative to the target's table position that the
    first-frame box places (`ACTConfig.action_frame`). grasp_yaw (with place values): each episode's prompt-frame
    grasp-yaw estimate, whose values (`policy.grasp_yaw.yaw_values`; zeros for an episode without one) follow the
    place values. shapes: each episode's target shape as its command names it (None: none named), whose one-hot
    (`policy.grasp_yaw.shape_code`) ends the extras (`ACTConfig.shape_input`)."""
    from pipeline.dataset.reader import Dataset
    from policy.act_config import ACTION_FRAMES
    from policy.grasp_yaw import shape_code, yaw_values
    from policy.place import PlaceError, check_place_source, normalised_box, prompt_target, with_place

    check_place_source(place_source)
    if action_frame not in ACTION_FRAMES:
        raise ValueError(f"action frame {action_frame!r} is not known; valid: {', '.join(ACTION_FRAMES)}")
    if action_frame == "target" and (action_mode != "ee" or place_tcp_offset is None or place_source != "prompt"):
        raise ValueError("action frame 'target' needs ee actions and place values from the prompt box")
    if grasp_yaw is not None and place_tcp_offset is None:
        raise ValueError("grasp-yaw values follow the place values: give place_tcp_offset with grasp_yaw")

    dataset = Dataset(data)
    problems = cache.verify(data)
    if problems:
        raise CacheError(
            f"cache {cache.path} does not match the dataset {data}: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}; rerun `sam2grasp cache`"
        )
    reference = _home_rotation()
    out = []
    for e in cache.episodes:
        feats = cache.load(e, dtype="float16")
        ep = dataset.load_episode(e, images=False)
        if len(ep) != len(feats):
            raise CacheError(f"episode {e}: {len(ep)} frames in the dataset, {len(feats)} in the cache {cache.path}")
        target, ignore = episode_targets(
            ep.action, action_mode, learn_undone_closes=learn_undone_closes, reference=reference, learn=ep.learn
        )
        extras = feats.extras
        if place_tcp_offset is not None:
            view = dataset.episode_meta(e).camera
            if view is None:
                raise ValueError(
                    f"episode {e} of {data} has no camera record, which place values need; collect the dataset "
                    "with this build (it records each episode's camera calibration) or train without --place"
                )
            prompt = None
            if place_source == "prompt":
                try:
                    prompt = normalised_box(ep.target_box[0], view.intrinsics.width, view.intrinsics.height)
                except PlaceError as exc:
                    raise ValueError(f"episode {e} of {data}: its first-frame target box: {exc}") from None
            extras = with_place(extras, ep.state, view, place_tcp_offset, prompt)
            if grasp_yaw is not None:
                extras = np.concatenate([extras, yaw_values(grasp_yaw.get(e), ep.state, place_tcp_offset)], axis=1)
            if action_frame == "target" and prompt is not None:
                try:
                    anchor = prompt_target(prompt, view)
                except PlaceError as exc:
                    raise ValueError(f"episode {e} of {data}: {exc}") from None
                target = target.copy()
                target[:, :2] -= anchor.astype(np.float32)
        if shapes is not None:
            code = shape_code(shapes.get(e))
            extras = np.concatenate([extras, np.broadcast_to(code, (len(extras), len(code)))], axis=1)
        out.append(EpisodeArrays(feats.tokens, extras, ep.state, target, ignore))
    if not out:
        raise CacheError(f"cache {cache.path} holds no episodes")
    return out


#: Share of training episodes whose target shape a shape_input head does not see, as when a command names no
#: shape ("pick the red object"): the head learns to act without one too.
SHAPE_NAME_DROPOUT = 0.25


def episode_shapes(
    data: Path, episodes: Sequence[int], *, hidden: float = SHAPE_NAME_DROPOUT, seed: int = 0
) -> dict[int, str | None]:
    """Each episode's target shape (the catalogue shape of its recorded target object) for a shape_input head,
    None for a seeded share `hidden` of the episodes (the same episodes on every run of the same seed)."""
    from pipeline.dataset.reader import Dataset

    if not 0.0 <= hidden < 1.0:
        raise ValueError(f"hidden must be a share within [0, 1), got {hidden}")
    dataset = Dataset(data)
    draws = np.random.default_rng([seed, 11]).random(len(episodes))
    out: dict[int, str | None] = {}
    for e, draw in zip(episodes, draws, strict=True):
        meta = dataset.episode_meta(e)
        record = meta.target_object()
        if record is None:
            raise ValueError(f"episode {e} of {data}: its target {meta.target!r} is not among its objects")
        out[e] = None if draw < hidden else record.shape
    return out


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class PolicyTrainReport:
    """What `train` produced: paths, losses (normalised L1; val None without held-out episodes), the baseline
    (L1 of always predicting the training-mean action on the held-out episodes), sizes and seconds."""

    policy: str
    policy_dir: str
    best_dir: str | None
    loss_curve: str
    report: str
    cache: str
    features: str
    action_mode: str
    train_episodes: int
    val_episodes: int
    train_frames: int
    parameters: int
    epochs_done: int
    steps: int
    final_train_l1: float
    final_val_l1: float | None
    best_val_l1: float | None
    val_l1_mean_baseline: float | None
    seconds: float
    grasp_yaw: dict[str, Any] | None = None  # the estimator's out-of-fold measurements (`CrossFit.summary`)


def _train_baseline(data: Path, out: Path, config: PolicyTrainConfig, train_cfg: Any, log: Any) -> PolicyTrainReport:
    """Train image baseline `config.policy` from the dataset's frames (see `policy.train_image`)."""
    from policy.baseline_data import load_image_episodes
    from policy.chunks import split_by_episode
    from policy.image_act import ImageACTPolicy
    from policy.image_act_config import DEFAULT_IMAGE_SIZE, ImageACTConfig
    from policy.train_image import train_image_policy

    start = time.perf_counter()
    image_cfg = ImageACTConfig.create(
        config.policy,
        config.image_size or DEFAULT_IMAGE_SIZE,
        backbone=config.backbone or "cnn",
        action_mode=config.action_mode,
        **(config.head or {}),
    )
    episodes = load_image_episodes(data, image_cfg, config.action_mode, learn_undone_closes=config.learn_undone_closes)
    # the same whole-episode split as SAM2Grasp's (same function, seed and episode order): the same held-out episodes
    arrays = [e.arrays() for e in episodes]
    position = {id(a): i for i, a in enumerate(arrays)}
    train_arrays, val_arrays = split_by_episode(arrays, config.val_fraction, train_cfg.seed)
    train = [episodes[position[id(a)]] for a in train_arrays]
    val = [episodes[position[id(a)]] for a in val_arrays]
    result = train_image_policy(train, val, image_cfg, train_cfg, out, log=log)
    return _report(
        config,
        result,
        out,
        ("", image_cfg.input_name),
        (len(train), len(val)),
        train,
        start,
        ImageACTPolicy(image_cfg).num_parameters(),
    )


def train_policy(
    data: Path,
    out: Path,
    config: PolicyTrainConfig,
    train_cfg: Any = None,
    *,
    log: Any = print,
) -> PolicyTrainReport:
    """Train the policy of `config` on `data` into `out` (resumed when `out` holds a run of the same settings).

    train_cfg: a `policy.train_head.HeadTrainConfig` (default settings when None).
    """
    from policy.act import ACTPolicy
    from policy.act_config import ACTConfig, head_extras_dim
    from policy.agent import TRACKER_INFO_FILE
    from policy.chunks import split_by_episode
    from policy.train_head import HeadTrainConfig, train_head

    start = time.perf_counter()
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise FileNotFoundError(f"dataset {data} does not exist")
    train_cfg = train_cfg or HeadTrainConfig()
    if config.policy != "sam2grasp":
        if train_cfg.state_lag.active:
            raise ValueError(
                f"state lag is implemented for the sam2grasp head only; train {config.policy!r} without it"
            )
        return _train_baseline(data, out, config, train_cfg, log)
    if config.features is not None:
        from policy.features import parse_feature_spec

        parse_feature_spec(config.features)  # a bad name is reported as such, before any cache search
    cache = find_cache(data, config.features, config.cache)
    n_tokens, channels = cache.token_shape
    head_fields = dict(config.head or {})
    fixed = {"feature_spec", "token_dim", "n_tokens", "extras_dim", "action_mode"} & set(head_fields)
    if fixed:
        raise ValueError(f"head settings {sorted(fixed)} come from the cache and --action-mode; remove them")
    options = {k: head_fields.get(k) is True for k in ("place", "grasp_yaw", "shape_input")}
    act_config = ACTConfig(
        feature_spec=cache.spec.name,
        token_dim=channels,
        n_tokens=n_tokens,
        extras_dim=head_extras_dim(cache.spec.extras_dim, **options),
        action_mode=config.action_mode,
        **head_fields,
    )
    fit = None
    if act_config.grasp_yaw:
        from pipeline.train_grasp_yaw import cross_fit, grasp_yaw_samples

        samples = grasp_yaw_samples(data, cache=cache, mask=act_config.grasp_yaw_mask)
        folds = min(GRASP_YAW_FOLDS, len(samples.orders) // 2)  # every fold's estimator fits >= 2 samples
        if folds < 2:
            raise ValueError(
                f"--grasp-yaw cross-fits its estimator and needs at least 4 episodes whose target the tracker sees "
                f"on the prompt frame; {data} has {len(samples.orders)}"
            )
        from policy.grasp_yaw import GraspYawConfig

        estimator = GraspYawConfig(named=act_config.grasp_yaw_named, mask=act_config.grasp_yaw_mask)
        fit = cross_fit(samples, folds=folds, seed=train_cfg.seed, config=estimator)
        if log is not None:
            log(f"grasp-yaw estimator: {json.dumps(fit.summary())}")
    episodes = episode_arrays(
        data,
        cache,
        config.action_mode,
        learn_undone_closes=config.learn_undone_closes,
        place_tcp_offset=act_config.place_tcp_offset if act_config.place else None,
        place_source=act_config.place_source,
        action_frame=act_config.action_frame,
        grasp_yaw=None if fit is None else fit.estimates,
        shapes=episode_shapes(data, cache.episodes, seed=train_cfg.seed) if act_config.shape_input else None,
    )
    train, val = split_by_episode(episodes, config.val_fraction, train_cfg.seed)
    result = train_head(train, val, act_config, train_cfg, out, log=log, grasp_yaw=None if fit is None else fit.final)
    tracker_record = {**asdict(cache.key), "cache": str(cache.path), "cache_key": cache.key.digest}
    for d in (result.policy_dir, result.best_dir):
        if d is not None and d.is_dir():
            (d / TRACKER_INFO_FILE).write_text(json.dumps(tracker_record, indent=2) + "\n")
    return _report(
        config,
        result,
        out,
        (str(cache.path), cache.spec.name),
        (len(train), len(val)),
        train,
        start,
        ACTPolicy(act_config).num_parameters(),
        None if fit is None else fit.summary(),
    )


def _report(
    config: PolicyTrainConfig,
    result: Any,
    out: Path,
    source: tuple[str, str],
    split: tuple[int, int],
    train: Sequence[Sized],
    start: float,
    parameters: int,
    grasp_yaw: dict[str, Any] | None = None,
) -> PolicyTrainReport:
    """The report of a finished run: source (cache path or "", input name), split (train, held-out episodes),
    `start` the run's time.perf_counter() at its beginning."""
    return PolicyTrainReport(
        policy=config.policy,
        policy_dir=str(result.policy_dir),
        best_dir=None if result.best_dir is None else str(result.best_dir),
        loss_curve=str(result.loss_curve),
        report=str(out / "report.json"),
        cache=source[0],
        features=source[1],
        action_mode=config.action_mode,
        train_episodes=split[0],
        val_episodes=split[1],
        train_frames=sum(len(e) for e in train),
        parameters=parameters,
        epochs_done=result.epochs_done,
        steps=result.steps,
        final_train_l1=result.final_train_l1,
        final_val_l1=result.final_val_l1,
        best_val_l1=result.best_val_l1,
        val_l1_mean_baseline=result.val_l1_mean_baseline,
        seconds=time.perf_counter() - start,
        grasp_yaw=grasp_yaw,
    )
