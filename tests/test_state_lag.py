"""State lag: samples take an earlier frame's arm state (and state-dependent place values) within their episode,
draws repeat per (seed, epoch), and a lagged training run resumes exactly and only into the same settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_head import max_diff, reach_episode, tiny, weights

from pipeline.train_policy import PolicyTrainConfig, train_policy
from policy.chunks import ChunkDataset, EpisodeArrays
from policy.state_lag import StateLag, draw_lags
from policy.train_head import HeadTrainConfig, train_head

torch.set_num_threads(1)


def counting_episode(first: int, length: int) -> EpisodeArrays:
    """Frame t of this episode holds the number first + t in every state and extras column and in its action."""
    values = np.arange(first, first + length, dtype=np.float32)
    return EpisodeArrays(
        tokens=np.repeat(values[:, None, None], 8, axis=2).astype(np.float16),
        extras=np.repeat(values[:, None], 7, axis=1),
        state=np.repeat(values[:, None], 7, axis=1),
        action=np.repeat(values[:, None], 7, axis=1),
    )


@pytest.mark.parametrize(
    ("prob", "frames", "message"),
    [
        (-0.1, 30, "within \\[0, 1\\]"),
        (1.5, 30, "within \\[0, 1\\]"),
        (float("nan"), 30, "within"),
        (0.5, 0, "integer >= 1"),
        (0.5, 2.5, "integer >= 1"),
        (0.5, True, "integer >= 1"),
    ],
)
def test_bad_settings_name_the_valid_range(prob: float, frames: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StateLag(prob, frames)


def test_draws_repeat_per_seed_and_epoch() -> None:
    lag = StateLag(0.5, 30)
    a = draw_lags(lag, 20_000, seed=3, epoch=2)
    assert np.array_equal(a, draw_lags(lag, 20_000, seed=3, epoch=2))
    assert not np.array_equal(a, draw_lags(lag, 20_000, seed=3, epoch=3))
    assert not np.array_equal(a, draw_lags(lag, 20_000, seed=4, epoch=2))
    assert a.min() == 0
    assert a.max() == 30
    assert 0.48 < (a > 0).mean() < 0.52
    assert set(np.unique(a[a > 0])) == set(range(1, 31))  # uniform over 1..max_frames
    assert not draw_lags(StateLag(), 100, 0, 0).any()
    assert (draw_lags(StateLag(1.0, 1), 100, 0, 0) == 1).all()
    with pytest.raises(ValueError, match=">= 0"):
        draw_lags(lag, 10, seed=0, epoch=-1)


def test_lagged_batch_takes_state_and_place_columns_from_earlier_in_its_episode() -> None:
    episodes = [counting_episode(0, 5), counting_episode(100, 6)]
    data = ChunkDataset(episodes, chunk_size=3, state_extras_from=5)
    lags = np.zeros(len(data), np.int64)
    lags[[1, 4, 7, 9]] = [1, 2, 4, 30]  # episode 0: t=1, t=4; episode 1: t=2 (flat 7), t=4 (flat 9)
    inp, tgt = data.batch([1, 4, 7, 9, 3], lags)
    state = inp.state[:, 0].numpy()
    assert state.tolist() == [0, 2, 100, 100, 3]  # lag clipped at each episode's first frame; flat 3 not lagged
    extras = inp.extras.numpy()
    assert extras[:, :5].tolist() == [[1] * 5, [4] * 5, [102] * 5, [104] * 5, [3] * 5]  # tracker extras: own frame
    assert extras[:, 5:].tolist() == [[0, 0], [2, 2], [100, 100], [100, 100], [3, 3]]  # state-dependent: lagged
    assert inp.tokens[:, 0, 0].tolist() == [1, 4, 102, 104, 3]
    assert tgt.actions[:, 0, 0].tolist() == [1, 4, 102, 104, 3]  # labels are the frame's own
    plain, _ = data.batch([1, 4, 7, 9, 3])
    assert plain.state[:, 0].tolist() == [1, 4, 102, 104, 3]
    no_place = ChunkDataset(episodes, chunk_size=3)
    inp, _ = no_place.batch([4], lags)
    assert inp.state[0, 0] == 2
    assert inp.extras[0].tolist() == [4] * 7
    with pytest.raises(ValueError, match="non-negative frame counts"):
        data.batch([1], lags[:-1])
    with pytest.raises(ValueError, match=r"within 0\.\.7"):
        ChunkDataset(episodes, chunk_size=3, state_extras_from=8)


def test_lagged_run_resumes_exactly_and_only_with_the_same_lag(tmp_path: Path) -> None:
    train = [reach_episode(s, length=10 + s) for s in range(4)]
    val = [reach_episode(50)]
    act = tiny(dropout=0.1)
    cfg = HeadTrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_steps=3, state_lag=StateLag(0.5, 4))
    full = train_head(train, val, act, cfg, tmp_path / "full", log=None)
    part = train_head(train, val, act, cfg, tmp_path / "split", log=None, stop_after_steps=full.total_steps // 2 + 1)
    assert part.stopped_early
    rest = train_head(train, val, act, cfg, tmp_path / "split", log=None)
    assert rest.steps == full.total_steps
    assert max_diff(weights(full.policy_dir), weights(rest.policy_dir)) < 1e-6
    plain = train_head(
        train, val, act, HeadTrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_steps=3), tmp_path / "plain", log=None
    )
    assert max_diff(weights(full.policy_dir), weights(plain.policy_dir)) > 1e-4  # the lag changed what was learned
    for other in (StateLag(0.25, 4), StateLag(0.5, 8), StateLag()):
        with pytest.raises(ValueError, match="another configuration"):
            train_head(
                train,
                val,
                act,
                HeadTrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_steps=3, state_lag=other),
                tmp_path / "split",
                log=None,
            )


def test_image_baselines_refuse_state_lag(tmp_path: Path) -> None:
    cfg = HeadTrainConfig(epochs=1, state_lag=StateLag(0.5, 4))
    with pytest.raises(ValueError, match="sam2grasp head only"):
        train_policy(tmp_path, tmp_path / "out", PolicyTrainConfig(policy="act"), cfg, log=None)
