"""The HTTP API (FastAPI), its web control page and the stop guard."""
