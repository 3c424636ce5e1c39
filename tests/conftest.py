"""Shared test set-up.

`robot.sim` picks MuJoCo's headless OpenGL backend (MUJOCO_GL) when imported, but MuJoCo reads that variable
when it is first imported; test modules import `mujoco` before `robot.sim` (import order), so import it here first.
"""

from __future__ import annotations

import robot.sim  # noqa: F401
