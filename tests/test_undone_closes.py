"""Close labels a demonstration opens again: found from the gripper column, kept out of the head's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from policy.act import ACTPolicy, PolicyInput, PolicyTarget
from policy.chunks import ChunkDataset, EpisodeArrays, collate
from policy.undone_closes import GRIPPER_COLUMN, label_ignore, undone_closes

torch.set_num_threads(1)

OPEN, SHUT = 0.085, 0.0


def test_a_missed_close_is_undone_and_the_final_grasp_is_not() -> None:
    # open, missed close, open again (the recovery), then the real close that lifts the object
    g = [OPEN] * 3 + [SHUT] * 4 + [OPEN] * 3 + [SHUT] * 5
    got = undone_closes(g)
    assert got.tolist() == [False] * 3 + [True] * 4 + [False] * 3 + [False] * 5


def test_an_episode_that_closes_once_ignores_nothing() -> None:
    assert not undone_closes([OPEN] * 5 + [SHUT] * 5).any()
    assert not undone_closes([OPEN] * 5).any()
    assert not undone_closes([]).any()


def test_threshold_is_relative_to_the_widest_label() -> None:
    # millimetres or metres, a half-closed label counts the same way
    metres = [0.08, 0.01, 0.08, 0.01]
    assert (
        undone_closes(metres).tolist()
        == undone_closes([v * 1000 for v in metres]).tolist()
        == [
            False,
            True,
            False,
            False,
        ]
    )
    # 0.05 of 0.08 is above half: not a close
    assert not undone_closes([0.08, 0.05, 0.08, 0.01]).any()


@pytest.mark.parametrize(
    ("gripper", "share", "words"),
    [(np.zeros((3, 2)), 0.5, "1-D"), ([0.1, 0.0], 0.0, "closed_share"), ([0.1, 0.0], 1.0, "closed_share")],
)
def test_bad_input_names_what_is_valid(gripper: object, share: float, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        undone_closes(gripper, share)  # type: ignore[arg-type]


def test_label_ignore_marks_only_the_gripper_column() -> None:
    action = np.ones((6, 7), np.float32)
    action[:, GRIPPER_COLUMN] = [OPEN, SHUT, SHUT, OPEN, SHUT, SHUT]
    mask = label_ignore(action)
    assert mask.shape == action.shape
    assert mask.dtype == np.bool_
    assert not mask[:, :GRIPPER_COLUMN].any()
    assert mask[:, GRIPPER_COLUMN].tolist() == [False, True, True, False, False, False]
    with pytest.raises(ValueError, match="column 6"):
        label_ignore(np.ones((4, 3)))


def _episode(t: int, ignore: np.ndarray | None) -> EpisodeArrays:
    rng = np.random.default_rng(0)
    return EpisodeArrays(
        tokens=rng.normal(size=(t, 3, 8)).astype(np.float16),
        extras=rng.random((t, 7)).astype(np.float32),
        state=rng.normal(size=(t, 7)).astype(np.float32),
        action=np.arange(t * 7, dtype=np.float32).reshape(t, 7),
        ignore=ignore,
    )


def test_chunks_carry_the_ignore_mask_of_the_frames_they_reach() -> None:
    ignore = np.zeros((6, 7), bool)
    ignore[4, GRIPPER_COLUMN] = True
    data = ChunkDataset([_episode(6, ignore), _episode(4, None)], chunk_size=3)
    _, target = data.batch([2, 3, 6])
    assert target.ignore is not None
    # sample at t=2 reaches frame 4 at its step 2; t=3 at step 1; the second episode ignores nothing
    assert target.ignore[0, 2, GRIPPER_COLUMN]
    assert target.ignore[1, 1, GRIPPER_COLUMN]
    assert int(target.ignore.sum()) == 2
    assert target.valid().shape == (3, 3, 7)
    # one-sample access and collate keep the mask
    stacked = collate([data[2], data[6]])[1]
    assert stacked.ignore is not None
    assert int(stacked.ignore.sum()) == 1
    with pytest.raises(ValueError, match="ignore"):
        _episode(6, np.zeros((6, 6), bool))


def test_ignored_labels_do_not_change_the_loss() -> None:
    torch.manual_seed(0)
    cfg = tiny_config("masked", 3)
    policy = ACTPolicy(cfg).eval()
    g = torch.Generator().manual_seed(1)
    b = 2
    inp = PolicyInput(
        torch.randn(b, cfg.n_tokens, cfg.token_dim, generator=g), torch.rand(b, 7, generator=g), torch.randn(b, 7)
    )
    actions = torch.randn(b, cfg.chunk_size, 7, generator=g)
    pad = torch.zeros(b, cfg.chunk_size, dtype=torch.bool)
    ignore = torch.zeros(b, cfg.chunk_size, 7, dtype=torch.bool)
    ignore[0, 1:, GRIPPER_COLUMN] = True
    loss, info = policy(inp, PolicyTarget(actions, pad, ignore))
    changed = actions.clone()
    changed[0, 1:, GRIPPER_COLUMN] += 100.0  # only ignored labels change
    loss2, _ = policy(inp, PolicyTarget(changed, pad, ignore))
    torch.testing.assert_close(loss, loss2)
    _, info3 = policy(inp, PolicyTarget(changed, pad))  # counted, the change shows
    assert info3.loss > info.loss + 1.0
    # the mean runs over the counted elements only
    norm = policy.normalizer
    with torch.no_grad():
        pred = policy.model(norm.tokens(inp.tokens), norm.extras(inp.extras), norm.state(inp.state), torch.zeros(b, 4))
    err = (pred - norm.action(actions)).abs()
    torch.testing.assert_close(torch.tensor(info.l1), err[~ignore].mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ignore"):
        policy(inp, PolicyTarget(actions, pad, torch.zeros(b, cfg.chunk_size, 6, dtype=torch.bool)))
