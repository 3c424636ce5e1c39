"""The body of every error the API and its stop guard answer: `{"error": {"type", "message", "candidates"}}`.

Free of web-framework imports, so that the stop guard's process (`api.stop_guard`) starts small.
"""

from __future__ import annotations

from typing import Any


def error_body(type_: str, message: str, candidates: list[Any] | None = None) -> dict[str, Any]:
    """An error: a stable `type_`, a message saying what was wrong and what is valid, and candidates if any."""
    return {"error": {"type": type_, "message": message, "candidates": candidates or []}}
