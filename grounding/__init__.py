"""Language grounding: text command to a box prompt (not yet implemented; see the grounding issue)."""
