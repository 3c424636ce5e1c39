"""Subcommands of `sam2grasp` for real-cell drivers: record, calibrate."""

from __future__ import annotations

import argparse


def add_robot_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
