"""Subcommands of `sam2grasp` for the product surface: serve, pick, sequence."""

from __future__ import annotations

import argparse


def add_product_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
