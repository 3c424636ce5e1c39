"""Subcommands of `sam2grasp` for language grounding: ground, train-grounder, eval-grounding."""

from __future__ import annotations

import argparse


def add_grounding_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
