"""Gripper labels that a demonstration takes back, kept out of the training loss.

A demonstration that closes the gripper and opens it again before the episode ends has closed where no grasp
was: the recovery demonstrations (`collect --miss-prob`) close beside the target on purpose so that the data
shows what follows an empty close. Their arm labels still point at the target, but their close labels sit at
arm states 3-7 cm beside it; learned as they are, they teach the head to close beside objects. `undone_closes`
finds those labels from the gripper column alone (no scene knowledge needed), and `label_ignore` turns them
into the per-element mask `EpisodeArrays.ignore` takes: the arm columns and every other gripper label are
still learned, including the open that follows the empty close.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: A gripper label below this share of the episode's widest label counts as closed.
CLOSED_SHARE = 0.5
#: Column of the gripper opening (metres) in a 7-value action of either action mode.
GRIPPER_COLUMN = 6


def undone_closes(gripper: npt.ArrayLike, closed_share: float = CLOSED_SHARE) -> npt.NDArray[np.bool_]:
    """(T,) True at every label of a closed run that a later open label ends.

    gripper: (T,) commanded openings, metres; closed_share: the share of the episode's widest opening below
    which a label counts as closed (within (0, 1)). The last closed run is kept when nothing opens after it.
    """
    g = np.asarray(gripper, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(f"gripper labels must be a 1-D array (T,), got shape {g.shape}")
    if not 0.0 < closed_share < 1.0:
        raise ValueError(f"closed_share must be within (0, 1), got {closed_share}")
    if g.size == 0 or not np.isfinite(g).all() or g.max() <= 0.0:
        return np.zeros(g.shape, dtype=bool)
    closed = g < closed_share * g.max()
    opens_at_or_after = np.flip(np.logical_or.accumulate(np.flip(~closed)))
    opens_after = np.append(opens_at_or_after[1:], False)  # an open label strictly after t
    undone: npt.NDArray[np.bool_] = closed & opens_after
    return undone


def label_ignore(action: npt.ArrayLike, closed_share: float = CLOSED_SHARE) -> npt.NDArray[np.bool_]:
    """(T, A) True where a label stays out of the loss: the gripper column at `undone_closes`."""
    a = np.asarray(action)
    if a.ndim != 2 or a.shape[1] <= GRIPPER_COLUMN:
        raise ValueError(f"actions must be (T, A >= {GRIPPER_COLUMN + 1}) with the gripper in column 6, got {a.shape}")
    mask = np.zeros(a.shape, dtype=bool)
    mask[:, GRIPPER_COLUMN] = undone_closes(a[:, GRIPPER_COLUMN], closed_share)
    return mask
