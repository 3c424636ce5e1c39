"""Helpers shared by the modules of the `sam2grasp` command line."""

from __future__ import annotations

import json


def print_json(obj: object) -> None:
    """Print `obj` as one indented JSON object (non-JSON values as their `str`)."""
    print(json.dumps(obj, indent=2, default=str))
