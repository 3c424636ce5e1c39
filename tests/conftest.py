"""Shared test set-up.

`robot.sim` picks MuJoCo's headless OpenGL backend (MUJOCO_GL) when imported, but MuJoCo reads that variable
when it is first imported; test modules import `mujoco` before `robot.sim` (import order), so import it here first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import robot.sim  # noqa: F401
from pipeline.faults.bad_files import TINY_HEAD as FAULT_TINY_HEAD

if TYPE_CHECKING:
    from policy.act_config import ACTConfig

#: Chunk size K of the tiny test heads.
K = 5

#: A tiny ACT head (width 32, 2 heads, one encoder and one decoder layer, no dropout) for fast tests: the fault
#: suite's tiny head without its feature fields (feature_spec, token_dim, n_tokens), which are the caller's.
TINY_HEAD: dict[str, object] = {
    k: v for k, v in FAULT_TINY_HEAD.items() if k not in ("feature_spec", "token_dim", "n_tokens")
}
if TINY_HEAD["chunk_size"] != K:
    raise RuntimeError(f"the tiny head's chunk size {TINY_HEAD['chunk_size']} is not the tests' K = {K}")


def tiny_config(feature_spec: str, n_tokens: int, /, **kw: object) -> ACTConfig:
    """An `ACTConfig` of the tiny head on 8-channel tokens with a small CVAE (latent 4, one layer); `kw` overrides
    any field, `feature_spec` and `n_tokens` included."""
    from policy.act_config import ACTConfig

    base: dict[str, object] = {
        "feature_spec": feature_spec,
        "token_dim": 8,
        "n_tokens": n_tokens,
        **TINY_HEAD,
        "latent_dim": 4,
        "n_vae_encoder_layers": 1,
    }
    base.update(kw)
    return ACTConfig(**base)  # type: ignore[arg-type]
