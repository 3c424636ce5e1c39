"""The method's agent (tracker + head) of a cell, loaded once on first use, with what went wrong if it failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class AgentSlot:
    """Loads `policy.agent.load_agent(head, tracker)` on the first `get()` and keeps it.

    missing_hint: the end of the message when a checkpoint file is absent (where the files should come from)."""

    def __init__(self, head: Path, tracker: Path, missing_hint: str) -> None:
        self.head, self.tracker, self.missing_hint = head, tracker, missing_hint
        self._agent: Any = None
        self._error = ""

    @property
    def loaded(self) -> bool:
        """True once the agent is loaded."""
        return self._agent is not None

    def status(self) -> str:
        """ "loaded", "not loaded yet", or "error: ..." naming why the last load failed (for /health)."""
        if self._agent is not None:
            return "loaded"
        return f"error: {self._error}" if self._error else "not loaded yet"

    def get(self) -> Any:
        """The agent; FileNotFoundError naming a missing checkpoint, or the loader's own error."""
        if self._agent is None:
            from policy.agent import load_agent

            for path in (self.head, self.tracker):
                if not path.exists():
                    self._error = f"{path} is missing"
                    raise FileNotFoundError(f"{path} is missing: {self.missing_hint}")
            try:
                self._agent = load_agent(self.head, self.tracker)
            except Exception as exc:
                self._error = f"{type(exc).__name__}: {exc}"
                raise
        return self._agent
