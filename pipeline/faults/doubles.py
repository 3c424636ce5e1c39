"""Access to the project's test doubles in tests/ (named MOCK / test double there): the ur_rtde boundary mock
(tests/fake_rtde.py) and the Robotiq URCap server stand-in (tests/robotiq_server.py). No UR controller or gripper
can run here, so the driver fault scenarios run the real drivers against these."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[2] / "tests"


def test_double(name: str) -> ModuleType:
    """Import tests/<name>.py ("fake_rtde" or "robotiq_server"); a clear error where tests/ is not shipped."""
    if name not in ("fake_rtde", "robotiq_server"):
        raise ValueError(f"unknown test double {name!r}; valid: fake_rtde, robotiq_server")
    if not (TESTS / f"{name}.py").is_file():
        raise FileNotFoundError(f"{TESTS / (name + '.py')} is missing: the driver fault scenarios need the repository")
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    return importlib.import_module(name)
