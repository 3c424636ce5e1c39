"""`train_tracker` on a few simulated episodes at 64 px: both stages run and lower nothing to NaN, the weights
record the crop they were trained on, a finished run resumes as finished, a resume with another crop (or other
datasets) is refused, `load_clips` cuts the crop before resizing, several datasets load and train as one, and the
augmentation mirrors masks with their frames and recolours a clip alike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.collect import CollectConfig, collect
from pipeline.dataset.reader import Dataset
from policy.sam2_build import checkpoint_crop
from policy.tracker import crop_pixels
from policy.tracker_augment import augment_clips
from policy.tracker_data import load_clips, load_clips_from
from policy.train_tracker import TrackerTrainConfig, held_out_by_dataset, train_tracker
from robot.sim.config import CellConfig
from robot.sim.scene import SceneRequest

CROP = (0.15, 0.0333, 0.85, 0.7333)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("track") / "ds"
    cell = CellConfig(image_width=160, image_height=120, scene=SceneRequest(n_objects=(3, 3)))
    collect(CollectConfig(out=out, episodes=3, seed=7_100_000, cell=cell), progress=False)
    return out


def _cfg(**kw: object) -> TrackerTrainConfig:
    base: dict[str, object] = dict(
        image_size=64, stage1_steps=3, stage1_batch=2, stage2_steps=2, stage2_batch=1, clip_len=3, held_out=0.34
    )
    base.update(kw)
    return TrackerTrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.render
def test_load_clips_cuts_the_crop_before_resizing(episodes: Path) -> None:
    whole = load_clips(episodes, 64, [0])
    cut = load_clips(episodes, 64, [0], crop=CROP)
    assert whole.frames.shape == cut.frames.shape == (len(Dataset(episodes).load_episode(0)), 64, 64, 3)
    ep = Dataset(episodes).load_episode(0)
    x0, y0, x1, y1 = crop_pixels(CROP, 120, 160)
    # the target covers a larger share of the tracker's input once the table region is cut out
    full_share = ep.target_mask(0).mean()
    cut_share = ep.target_mask(0)[y0:y1, x0:x1].mean()
    assert cut_share > full_share
    assert abs(cut.masks[0].mean() - cut_share) < 0.5 * cut_share
    assert not np.array_equal(whole.frames[0], cut.frames[0])


@pytest.mark.slow
@pytest.mark.render
def test_both_stages_run_and_the_weights_record_the_crop(episodes: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "run"
    progress = train_tracker(episodes, out, _cfg(crop=CROP), log=lambda _line: None)
    assert progress["stage"] == 3
    losses = [h["loss"] for h in progress["history"]]
    assert losses
    assert all(math.isfinite(v) for v in losses)
    assert {h["stage"] for h in progress["history"]} == {1, 2}
    assert checkpoint_crop(out / "tracker.safetensors") == CROP
    assert json.loads((out / "progress.json").read_text())["config"]["crop"] == list(CROP)
    # finished: a rerun with the same settings does no more steps
    again = train_tracker(episodes, out, _cfg(crop=CROP), log=lambda _line: None)
    assert again["history"] == progress["history"]
    with pytest.raises(ValueError, match=r"trained with crop .* resume with the same crop"):
        train_tracker(episodes, out, _cfg(), log=lambda _line: None)


def test_clips_prompted_on_the_first_frame_follow_it_or_jump_later() -> None:
    from policy.train_tracker import _clip

    rng = np.random.default_rng(0)
    cfg = _cfg(clip_len=4, max_stride=2, first_frame_share=1.0)
    follow = jump = 0
    for _ in range(200):
        clip = _clip(100, 160, cfg, rng)
        assert clip is not None
        assert len(clip) == 4
        assert clip[0] == 100
        assert clip[-1] < 160
        steps = np.diff(clip[1:])
        assert np.all(steps == steps[0])
        assert 1 <= steps[0] <= 2
        if clip[1] - clip[0] == steps[0]:
            follow += 1
        else:
            jump += 1
    assert follow > 50
    assert jump > 50

    anywhere = [_clip(100, 160, _cfg(clip_len=4, first_frame_share=0.0), rng) for _ in range(100)]
    assert sum(int(c[0]) == 100 for c in anywhere if c is not None) < 20
    assert _clip(100, 103, cfg, rng) is None  # too short for a clip of 4 frames
    with pytest.raises(ValueError, match="first_frame_share"):
        _cfg(first_frame_share=1.5)


@pytest.mark.slow
@pytest.mark.render
def test_several_datasets_train_as_one_and_a_resume_must_name_the_same(episodes: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    both = load_clips_from([(episodes, [2]), (episodes, [0, 1])], 64)
    alone = [load_clips(episodes, 64, [e]) for e in (2, 0, 1)]
    assert both.episodes == 3
    for e, one in enumerate(alone):
        a, b = both.episode_range(e)
        assert np.array_equal(both.frames[a:b], one.frames)
        assert np.array_equal(both.masks[a:b], one.masks)
    # the same dataset twice: six episodes, two held out, each recorded in its own dataset's numbering
    out = tmp_path / "run"
    progress = train_tracker([episodes, episodes], out, _cfg(held_out=0.34), log=lambda _line: None)
    assert progress["stage"] == 3
    assert progress["data"] == [str(episodes), str(episodes)]
    held = progress["held_out_episodes"]
    assert len(held) == 2
    assert held_out_by_dataset([episodes, episodes], held) == progress["held_out_by_data"]
    with pytest.raises(ValueError, match=r"was trained on .* resume with the same datasets"):
        train_tracker([episodes], out, _cfg(held_out=0.34), log=lambda _line: None)


def test_held_out_episodes_are_renumbered_within_each_dataset() -> None:
    dirs = [Path("a"), Path("b"), Path("c")]
    assert held_out_by_dataset(dirs, [6, 1, 4, 8], sizes=[3, 4, 2]) == {"a": [1], "b": [1, 3], "c": [1]}
    assert held_out_by_dataset(dirs, [], sizes=[3, 4, 2]) == {"a": [], "b": [], "c": []}


def test_augmentation_mirrors_mask_and_frame_together_and_recolours_a_clip_alike() -> None:
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (4, 3, 8, 8, 3), dtype=np.uint8))
    frames[:, 1] = frames[:, 0]  # two equal frames in every clip
    frames[:, 2] = 0  # a black frame
    masks = torch.zeros(4, 3, 8, 8, dtype=torch.bool)
    masks[:, :, 2:5, 0:3] = True  # left side of the image
    same_f, same_m = augment_clips(frames, masks, 0.0, 0.0, rng)
    assert torch.equal(same_f, frames)
    assert torch.equal(same_m, masks)
    flipped_f, flipped_m = augment_clips(frames, masks, 1.0, 0.0, rng)
    assert torch.equal(flipped_f, frames.flip(3))
    assert bool(flipped_m[:, :, 2:5, 5:8].all())
    assert not bool(flipped_m[:, :, :, 0:3].any())
    out_f, out_m = augment_clips(frames, masks, 0.0, 0.3, rng)
    assert torch.equal(out_m, masks)
    assert not torch.equal(out_f, frames)
    assert torch.equal(out_f[:, 0], out_f[:, 1])  # one draw per clip
    assert not bool(out_f[:, 2].any())  # black stays black
    assert torch.equal(frames[:, 1], frames[:, 0])  # the inputs are left as they were
    with pytest.raises(ValueError, match=r"color_jitter must be .* within"):
        augment_clips(frames, masks, 0.5, 0.9, rng)
    with pytest.raises(ValueError, match="flip_prob must be a probability"):
        _cfg(flip_prob=1.5)
    with pytest.raises(ValueError, match="masks"):
        augment_clips(frames, masks[:, :2], 0.5, 0.1, rng)
