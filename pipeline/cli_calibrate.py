"""Subcommands of `sam2grasp` for camera-to-base calibration."""

from __future__ import annotations

import argparse


def add_calibrate_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
