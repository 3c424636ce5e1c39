"""The perception and policy subcommands of `sam2grasp`: train-tracker, eval-tracker, cache, cache-merge, train,
eval."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from pipeline.cli_common import print_json


def _cmd_train_tracker(args: argparse.Namespace) -> int:
    import torch

    from policy.tracker import parse_crop
    from policy.train_tracker import TrackerTrainConfig, train_tracker

    torch.set_num_threads(args.threads)
    cfg = TrackerTrainConfig(
        image_size=args.image_size,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        stage1_batch=args.stage1_batch,
        stage2_batch=args.stage2_batch,
        first_frame_share=args.first_frame_share,
        flip_prob=args.flip_prob,
        color_jitter=args.color_jitter,
        stage1_budget_s=args.stage1_budget_s,
        stage2_budget_s=args.stage2_budget_s,
        seed=args.seed,
        device=args.device,
        checkpoint_every_s=args.checkpoint_every_s,
        crop=parse_crop(args.crop),
    )
    init = Path(args.init) if args.init else None
    data = [Path(d) for d in args.data]
    progress = train_tracker(data, Path(args.out), cfg, log=lambda line: print(line, flush=True), init=init)
    summary = {k: progress[k] for k in ("seconds", "held_out_episodes")}
    summary["held_out_by_data"] = progress.get("held_out_by_data", {str(data[0]): progress["held_out_episodes"]})
    summary["weights"] = str(Path(args.out) / "tracker.safetensors")
    if args.json:
        print_json(summary)
    else:
        print(f"trained in {summary['seconds']:.0f} s; weights: {summary['weights']}")
    return 0


def _cmd_eval_tracker(args: argparse.Namespace) -> int:
    import torch

    from policy.eval_tracker import RECOVERY_CAP, evaluate_tracker
    from policy.sam2_build import build_sam2, checkpoint_crop, tracker_spec
    from policy.tracker import SAM2Tracker, TrackerConfig, parse_crop

    torch.set_num_threads(args.threads)
    levels = [float(v) for v in args.occlusion.split(",")]
    episodes = _parse_episode_list(args.episodes, Path(args.data))
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    crop = parse_crop(args.crop) if args.crop else checkpoint_crop(checkpoint)
    model = build_sam2(tracker_spec(args.tracker, args.image_size), checkpoint)
    tracker = SAM2Tracker(model, TrackerConfig(crop=crop))
    report = evaluate_tracker(tracker, Path(args.data), episodes, levels, seed=args.seed)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(f"{report.episodes} episodes, tracker step {report.step_ms:.1f} ms")
        print("   p    mIoU  first-10  first-box  frames  recovery  absent-on-black  id-switch")
        for lv in report.levels:
            print(
                f"{lv.occlusion:4.1f}  {lv.miou:6.3f}  {lv.early_miou:8.3f}  {lv.baseline_miou:9.3f}  {lv.frames:6d}  "
                f"{lv.recovery_frames:8.2f}  {lv.absent_on_black:15.3f}  {lv.identity_switch_rate:9.3f}"
            )
            phases = " ".join(f"{v:.3f}" for v in lv.phase_miou)
            print(
                f"      mIoU by fifth of the episode: {phases}; target less than half visible: "
                f"{lv.covered_miou:.3f} over {lv.covered_frames} frames"
            )
            if lv.blackouts:
                print(
                    f"      recovery: {lv.recovery_censored} of {lv.blackouts} blackouts cut short by the next one "
                    f"or the episode's end (counted at {RECOVERY_CAP}); the others {lv.recovery_uncensored_frames:.2f} "
                    "frames"
                )
    return 0


def _parse_episode_list(text: str, data: Path) -> list[int]:
    """ "a-b" (inclusive) or "a,b,c", each within the dataset at `data`."""
    from pipeline.dataset.reader import Dataset

    n = len(Dataset(data))
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-", 1))
        picks = list(range(lo, hi + 1))
    else:
        picks = [int(v) for v in text.split(",")]
    bad = [e for e in picks if not 0 <= e < n]
    if bad:
        raise ValueError(f"episodes {bad} are not in the dataset; valid: 0..{n - 1}")
    return picks


def _torch_device(args: argparse.Namespace) -> str:
    """The torch device `--device` names ("auto": cuda when available, else cpu), checked; sets `--threads`."""
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown --device {device!r}; valid: auto, cpu, cuda, cuda:N") from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def _cmd_cache(args: argparse.Namespace) -> int:
    return _run_cache(args, merge_only=False)


def _cmd_cache_merge(args: argparse.Namespace) -> int:
    return _run_cache(args, merge_only=True)


def _run_cache(args: argparse.Namespace, *, merge_only: bool) -> int:
    """`cache` (track and store F_t, then merge unless sharded) or `cache-merge` (verify, write the manifest)."""

    from policy.cache import Shard, build_cache, cache_dir, cache_key, load_tracker, merge_cache, parse_shard
    from policy.features import parse_feature_spec
    from policy.sam2_build import tracker_spec
    from policy.tracker import TrackerConfig

    # Every option is checked before the model is built.
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else Shard()
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"dataset {data} does not exist")
    root = Path(args.cache_root) if args.cache_root else None
    if merge_only and args.key:
        report = merge_cache(data, cache_dir(data, args.key, root))
    else:
        tracker_spec(args.tracker, args.image_size)
        features = parse_feature_spec(args.features)
        config = TrackerConfig(
            memory_frames=args.memory_frames,
            dtype=args.dtype,
            encode_batch=args.encode_batch,
            mask_source=args.mask_source,
        )
        device = _torch_device(args)
        tracker = load_tracker(
            args.tracker,
            image_size=args.image_size,
            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            allow_random=args.allow_random,
            seed=args.seed,
            config=config,
            device=device,
        )
        key = cache_key(args.tracker, tracker, features, args.occlusion)
        if merge_only:
            report = merge_cache(data, cache_dir(data, key, root))
        else:
            report = build_cache(data, tracker, key, root=root, shard=shard, progress=False if args.json else None)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        state = "complete" if report.complete else f"shard {report.shard} done: run `sam2grasp cache-merge` after all"
        print(
            f"{report.episodes} episodes, {report.frames} frames, {report.bytes / 1e6:.1f} MB in {report.path} "
            f"({state}); computed {report.computed}, reused {report.reused}, {report.frames_per_s:.1f} frames/s"
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from pipeline.train_policy import PolicyTrainConfig, check_policy_name, train_policy
    from policy.state_lag import StateLag
    from policy.train_head import HeadTrainConfig

    check_policy_name(args.policy)  # before anything is read
    if args.threads:
        torch.set_num_threads(args.threads)
    head: dict[str, object] = {"chunk_size": args.chunk}
    for key, value in (
        ("dim_model", args.dim_model),
        ("n_heads", args.heads),
        ("dim_feedforward", args.ff_dim),
        ("n_encoder_layers", args.encoder_layers),
        ("n_decoder_layers", args.decoder_layers),
        ("temporal_ensemble_coeff", args.ensemble),
        ("n_action_steps", args.action_steps),
    ):
        if value is not None:
            head[key] = value
    if args.place_source is not None and not args.place:
        raise ValueError(f"--place-source {args.place_source} needs --place (it says where the place values come from)")
    if args.place:
        head["place"] = True
        if args.place_source is not None:
            head["place_source"] = args.place_source
    if args.action_frame is not None:
        head["action_frame"] = args.action_frame
    if args.grasp_yaw:
        if not args.place:
            raise ValueError("--grasp-yaw needs --place: the estimator reads the target's table position")
        head["grasp_yaw"] = True
    if args.grasp_yaw_named:
        if not args.grasp_yaw:
            raise ValueError("--grasp-yaw-named needs --grasp-yaw: it is an option of the grasp-yaw estimator")
        head["grasp_yaw_named"] = True
    if args.grasp_yaw_mask is not None:
        if not args.grasp_yaw:
            raise ValueError("--grasp-yaw-mask needs --grasp-yaw: it is an option of the grasp-yaw estimator")
        head["grasp_yaw_mask"] = args.grasp_yaw_mask
    if args.shape_input:
        head["shape_input"] = True
    if args.wrist_anchor:
        if not args.grasp_yaw:
            raise ValueError("--wrist-anchor needs --grasp-yaw: the anchor comes from the estimated turn")
        head["wrist_anchor"] = True
    from policy.image_act_config import parse_image_size

    config = PolicyTrainConfig(
        policy=args.policy,
        features=args.features,
        cache=Path(args.cache) if args.cache else None,
        val_fraction=args.val_fraction,
        action_mode=args.action_mode,
        head=head,
        image_size=parse_image_size(args.image_size) if args.image_size else None,
        learn_undone_closes=args.learn_undone_closes,
        backbone=args.backbone,
    )
    train_cfg = HeadTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        state_lag=StateLag(args.state_lag, args.state_lag_frames),
    )
    out = Path(args.out or f"runs/{args.policy}")
    report = train_policy(Path(args.data), out, config, train_cfg, log=None if args.json else print)
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        val = "n/a" if report.final_val_l1 is None else f"{report.final_val_l1:.4f}"
        base = "n/a" if report.val_l1_mean_baseline is None else f"{report.val_l1_mean_baseline:.4f}"
        print(
            f"{report.policy} ({report.features}, {report.action_mode}) trained {report.epochs_done} epochs in "
            f"{report.seconds:.1f} s: train L1 {report.final_train_l1:.4f}, val L1 {val} (mean-action baseline "
            f"{base}); policy: {report.policy_dir}"
        )
    return 0


def _chunk_execution(ensemble: str | None, action_steps: int | None) -> tuple[float | None, int | None] | None:
    """(temporal_ensemble_coeff, n_action_steps) from `eval --ensemble M|none --action-steps N`, or None to keep
    the head's own settings (ValueError naming what is valid)."""
    if ensemble is None and action_steps is None:
        return None
    if action_steps is not None and action_steps < 1:
        raise ValueError(f"--action-steps must be >= 1 (and at most the head's chunk size), got {action_steps}")
    if ensemble is None or ensemble.strip().lower() == "none":
        return None, action_steps
    try:
        m = float(ensemble)
    except ValueError:
        raise ValueError(f"--ensemble must be a number (the coefficient m) or 'none', got {ensemble!r}") from None
    if not math.isfinite(m):
        raise ValueError(f"--ensemble must be a finite number or 'none', got {ensemble!r}")
    if action_steps is not None:
        raise ValueError("--action-steps takes effect without ensembling: give --ensemble none with it (or neither)")
    return m, None


def _cmd_eval(args: argparse.Namespace) -> int:

    from pipeline.evaluate import EvalAgent, EvalConfig, evaluate, parse_levels
    from policy.agent import load_agent
    from policy.checkpoint import PolicyCheckpointError
    from policy.image_agent import load_image_agent
    from policy.image_checkpoint import checkpoint_policy_type
    from robot.sim.scene import parse_count_range

    # Every option is checked before the models are built.
    cfg = EvalConfig(
        trials=args.trials,
        out=Path(args.out),
        objects=parse_count_range(args.objects),
        occlusion=parse_levels(args.occlusion),
        seed=args.seed,
        width=args.width,
        height=args.height,
        max_seconds=args.max_seconds,
        videos=args.videos,
        latency=args.latency,
    )
    execution = _chunk_execution(args.ensemble, args.action_steps)
    if not Path(args.policy).is_dir():
        raise FileNotFoundError(f"policy {args.policy} does not exist (a directory from `sam2grasp train`)")
    device = _torch_device(args)
    tracker_ckpt = Path(args.tracker_checkpoint) if args.tracker_checkpoint else None
    agent: EvalAgent
    try:
        kind = checkpoint_policy_type(args.policy)
        if kind == "sam2grasp":
            if tracker_ckpt is None:
                raise ValueError("a sam2grasp policy needs --tracker-checkpoint (the tracker its features came from)")
            agent = load_agent(Path(args.policy), tracker_ckpt, args.tracker, args.image_size, device=device)
            agent.coast_unseen = not args.no_coast
            if execution is not None:
                agent.head.set_inference(*execution)
        else:
            agent = load_image_agent(Path(args.policy), tracker_ckpt, args.tracker, args.image_size, device=device)
            if agent.tracker is None:
                tracker_ckpt = None  # act / act-cvae read frames alone
    except PolicyCheckpointError as exc:
        raise ValueError(str(exc)) from exc
    report = evaluate(
        agent,
        cfg,
        policy=args.policy,
        tracker_checkpoint="" if tracker_ckpt is None else str(tracker_ckpt),
        progress=None if args.json else print,
    )
    if args.json:
        print_json(dataclasses.asdict(report))
    else:
        print(
            f"{report.policy_type} ({report.feature_spec}), {report.mode}, {report.trials} trials per level, "
            f"{report.seconds:.0f} s; {report.results}"
        )
        print("   p   success  wilson 95%      empty-grasp  between-objects  failed-input  step ms  visible")
        for lv in report.levels:
            print(
                f"{lv.occlusion:4.2f}  {lv.rate:6.1%}  [{lv.wilson_low:5.1%}, {lv.wilson_high:5.1%}]  "
                f"{lv.empty_grasp_share:11.1%}  {lv.between_objects_share:15.1%}  {lv.failed_input:12d}  "
                f"{lv.mean_step_ms:7.1f}  {lv.visible_share:7.1%}"
            )
        print(f"plot: {report.plot}")
    return 0


def _add_device_args(p: argparse.ArgumentParser, default: str, device_help: str) -> None:
    """`--device` (with the subcommand's default and help) and `--threads` (torch CPU threads)."""
    p.add_argument("--device", default=default, help=device_help)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _add_cache_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `cache` and `cache-merge`: the dataset, the tracker, the feature spec, the cache root."""
    from policy.tracker_names import COMPACT, OFFICIAL_CONFIGS

    p.add_argument("--data", required=True, help="dataset directory (from `collect`)")
    p.add_argument("--tracker", default=COMPACT, choices=[COMPACT, *OFFICIAL_CONFIGS], help="default compact")
    p.add_argument("--image-size", type=int, default=None, help="tracker input pixels (default: the tracker's)")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or an official .pt)")
    p.add_argument("--allow-random", action="store_true", help="cache with random weights (tests, benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random init (with --allow-random)")
    p.add_argument(
        "--features",
        default="pooled4",
        help="feature spec: pooledN, masked or pointer; +shape adds the mask's orientation moments (default pooled4)",
    )
    p.add_argument("--memory-frames", type=int, default=15, help="tracker memory besides the prompt (default 15)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="tracker precision")
    p.add_argument("--encode-batch", type=int, default=8, help="frames per image-encoder batch (default 8)")
    p.add_argument(
        "--occlusion",
        type=float,
        default=0.0,
        help="share of frames after the first blacked out before tracking, [0, 1) (default 0): features a head "
        "learns to act on while the camera sees nothing",
    )
    p.add_argument(
        "--mask-source",
        default="tracker",
        choices=["tracker", "oracle"],
        help="tracker (default): SAM2's own masks; oracle: the dataset's true target masks replace them (an "
        "upper bound on perception; simulation only)",
    )
    _add_device_args(p, "auto", "auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--cache-root", default=None, help="directory holding cache keys (default DATA/cache)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_policy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the perception and policy subcommands to `sub`, in the order `sam2grasp --help` lists them."""
    p = sub.add_parser("train-tracker", help="train the compact SAM2 tracker on simulated episodes")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="dataset directory (from `collect`), or several trained on as one (episodes numbered in the order given)",
    )
    p.add_argument("--out", default="runs/tracker", help="run directory: checkpoints, progress (resumed)")
    p.add_argument("--image-size", type=int, default=256, help="tracker input pixels (default 256)")
    p.add_argument("--stage1-steps", type=int, default=2000)
    p.add_argument("--stage2-steps", type=int, default=2000)
    p.add_argument("--stage1-batch", type=int, default=8, help="frames per stage-1 step (default 8)")
    p.add_argument("--stage2-batch", type=int, default=2, help="clips per stage-2 step (default 2)")
    p.add_argument(
        "--first-frame-share",
        type=float,
        default=0.5,
        help="share of stage-2 clips prompted on the episode's first frame, as at run time (default 0.5)",
    )
    p.add_argument("--stage1-budget-s", type=float, default=0.0, help="seconds for stage 1 (0 = steps only)")
    p.add_argument("--stage2-budget-s", type=float, default=0.0, help="seconds for stage 2 (0 = steps only)")
    p.add_argument(
        "--flip-prob", type=float, default=0.5, help="share of samples mirrored left-right (default 0.5; 0 = off)"
    )
    p.add_argument(
        "--color-jitter",
        type=float,
        default=0.2,
        help="relative brightness, contrast and saturation change drawn per sample, within [0, 0.5] (default 0.2)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--init", default=None, help="start from these weights (.safetensors) instead of random ones")
    p.add_argument(
        "--crop",
        default="full",
        help="region of the frame the tracker sees, 'x0,y0,x1,y1' fractions of width and height (default: full); "
        "recorded in the weights, so caching and evaluation use it too",
    )
    p.add_argument("--checkpoint-every-s", type=float, default=180.0, help="seconds between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(func=_cmd_train_tracker)

    p = sub.add_parser("eval-tracker", help="track held-out episodes: mIoU per occlusion level, recovery, switches")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--episodes", required=True, help="episodes to evaluate: 'a-b' or 'a,b,c'")
    p.add_argument("--tracker", default="compact", help="compact or an official sam2.1 name")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or an official .pt)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--occlusion", default="0,0.2,0.4,0.6", help="comma-separated shares of blacked-out frames")
    p.add_argument(
        "--crop", default=None, help="'x0,y0,x1,y1' fractions or 'full' (default: the region the weights record)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval_tracker)

    p = sub.add_parser("cache", help="run the frozen tracker over every episode and store its features F_t")
    _add_cache_args(p)
    p.add_argument("--shard", default=None, help="I/N: only episodes with index %% N == I (default: all)")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("cache-merge", help="verify the shards of a feature cache and write its manifest")
    _add_cache_args(p)
    p.add_argument("--key", default=None, help="cache key (directory name); default: the one the options give")
    p.set_defaults(func=_cmd_cache_merge)

    p = sub.add_parser("train", help="train a policy (SAM2Grasp: the ACT head on cached features; or a baseline)")
    p.add_argument(
        "--policy",
        required=True,
        help="sam2grasp (ACT head on cached tracker features), or an image baseline trained from scratch on the "
        "frames: act, act-cvae, act-cvae-condition (target box drawn on every frame)",
    )
    p.add_argument("--data", required=True, help="dataset directory (from `collect`, cached with `cache`)")
    p.add_argument("--features", default=None, help="feature spec of the cache to use (default: the only one)")
    p.add_argument("--cache", default=None, help="feature-cache directory (default: found under DATA/cache)")
    p.add_argument("--out", default=None, help="run directory (resumed; default runs/POLICY)")
    p.add_argument("--image-size", default=None, help="baselines: frames downscaled to WxH pixels (default 128x96)")
    p.add_argument(
        "--backbone",
        default=None,
        help="baselines: vision backbone trained from scratch, cnn (small, for CPUs; default) or resnet18 (ACT's)",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--chunk", type=int, default=20, help="actions per predicted chunk K (default 20)")
    p.add_argument("--action-mode", default="joint", choices=["joint", "ee"], help="joint targets or TCP pose")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes held out (default 0.1)")
    p.add_argument(
        "--learn-undone-closes",
        action="store_true",
        help="also learn the close labels a demonstration opens again (missed grasps; by default not learned)",
    )
    p.add_argument(
        "--place",
        action="store_true",
        help="sam2grasp: also feed the head the target's base-frame position from each episode's recorded camera "
        "calibration (the agent then needs the camera's calibration at run time)",
    )
    p.add_argument(
        "--place-source",
        choices=["tracked", "prompt"],
        default=None,
        help="with --place: the target's position from every frame's tracked box (tracked, default) or from the "
        "box the tracker was prompted with, held for the whole pick (prompt)",
    )
    p.add_argument(
        "--action-frame",
        choices=["base", "target"],
        default=None,
        help="sam2grasp, --action-mode ee: TCP x, y in the robot's base frame (base, default) or relative to the "
        "target's table position from the prompt box (target; needs --place --place-source prompt)",
    )
    p.add_argument(
        "--grasp-yaw",
        action="store_true",
        help="sam2grasp, with --place and a '+shape' spec: fit the grasp-yaw estimator on the episodes' prompt "
        "frames (5-fold out-of-fold estimates for training) and feed the head the estimated grasp axis and the "
        "wrist turn left to reach it; the estimator is saved with the head",
    )
    p.add_argument(
        "--grasp-yaw-named",
        action="store_true",
        help="with --grasp-yaw: the estimator also reads the target's catalogue shape as the command names it "
        "('pick the red cup': cup), which settles the symmetry order; trained with a quarter of the names hidden so "
        "that a command naming no shape still gets the mask-only estimate",
    )
    p.add_argument(
        "--grasp-yaw-mask",
        choices=["tracked", "refined"],
        default=None,
        help="with --grasp-yaw: read the orientation moments from the tracker's prompt-frame mask (tracked, "
        "default) or from a full-resolution mask segmented from the prompt box on the prompt frame (refined; "
        "policy/prompt_mask.py)",
    )
    p.add_argument(
        "--shape-input",
        action="store_true",
        help="sam2grasp: feed the head the target's catalogue shape as the command names it (a one-hot; zeros when "
        "it names none), which says how tall the target is and so how low to close; a quarter of the training "
        "episodes hide it",
    )
    p.add_argument(
        "--wrist-anchor",
        action="store_true",
        help="sam2grasp, joint mode, with --grasp-yaw: predict wrist_3 relative to the angle that turns the tool "
        "by the estimated turn (the head learns corrections; the agent adds the anchor back)",
    )
    p.add_argument(
        "--state-lag",
        type=float,
        default=0.0,
        help="sam2grasp: share of training samples whose arm state comes from up to --state-lag-frames earlier, "
        "so that the head learns to reach its targets from arms that lag them (default 0: off)",
    )
    p.add_argument(
        "--state-lag-frames", type=int, default=30, help="largest state lag in frames (default 30, 1.5 s at 20 Hz)"
    )
    p.add_argument("--dim-model", type=int, default=None, help="head width (default 256)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default 8)")
    p.add_argument("--ff-dim", type=int, default=None, help="feed-forward width (default 1024)")
    p.add_argument("--encoder-layers", type=int, default=None, help="default 4")
    p.add_argument("--decoder-layers", type=int, default=None, help="default 1")
    p.add_argument("--ensemble", type=float, default=None, help="temporal ensembling m (default: none)")
    p.add_argument("--action-steps", type=int, default=None, help="actions used per chunk (default: all K)")
    p.add_argument("--seed", type=int, default=0)
    _add_device_args(p, "cpu", "cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="closed-loop success in the simulated cell per occlusion level (Wilson 95%%)")
    p.add_argument("--policy", required=True, help="policy directory (`train`'s RUN/policy or RUN/best), any type")
    p.add_argument(
        "--tracker-checkpoint",
        default=None,
        help="tracker weights: those the features were cached with (sam2grasp, required), or the tracker whose box "
        "act-cvae-condition draws (required there); unused by act and act-cvae",
    )
    p.add_argument("--tracker", default=None, help="tracker name (default: the one recorded at training)")
    p.add_argument("--image-size", type=int, default=None, help="tracker input pixels (default: as recorded)")
    p.add_argument("--trials", type=int, required=True, help="trials per occlusion level")
    p.add_argument("--objects", default="3-6", help="objects per scene, N or LO-HI (default 3-6)")
    p.add_argument("--occlusion", default="0,0.2,0.4,0.6", help="comma-separated shares of blacked-out frames")
    p.add_argument("--seed", type=int, default=0, help="test seeds are 10000000 + SEED + i (default 0)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--videos", type=int, default=0, help="trials per level written as videos (default 0)")
    p.add_argument("--out", default="runs/eval", help="directory for results.json, the plot, videos")
    p.add_argument("--max-seconds", type=float, default=15.0, help="simulated seconds per trial (default 15)")
    p.add_argument("--latency", action="store_true", help="let the sim run on during inference (else lockstep)")
    p.add_argument(
        "--ensemble",
        default=None,
        metavar="M|none",
        help="sam2grasp: chunk ensembling coefficient m at inference (weights exp(-m * i), i = 0 for the oldest "
        "prediction; negative favours newer ones), or 'none' to take --action-steps actions of each chunk "
        "(default: as trained)",
    )
    p.add_argument(
        "--action-steps",
        type=int,
        default=None,
        help="sam2grasp without ensembling: actions taken from each chunk before the next (default: the whole chunk)",
    )
    p.add_argument(
        "--no-coast",
        action="store_true",
        help="sam2grasp: ask the head on frames where the tracker does not see the target (default: coast on the "
        "chunks already predicted)",
    )
    _add_device_args(p, "cpu", "tracker and head: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval)
