"""Bearer-token authentication of the state-changing endpoints.

The token comes from SAM2GRASP_TOKEN, else the configuration, else a file written at the first start (mode 0600)
with a freshly generated token that is printed once. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

#: Environment variable that overrides every other token source.
TOKEN_ENV = "SAM2GRASP_TOKEN"
_bearer = HTTPBearer(auto_error=False, description="the API token (SAM2GRASP_TOKEN, or printed at first start)")


def resolve_token(configured: str | None, token_file: Path | None) -> tuple[str, bool]:
    """(token, generated): from the environment, `configured`, or `token_file`; else a new token, written to
    `token_file` when one is given. `generated` is True only when a new token was made (print it once)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        if len(env) < 16:
            raise ValueError(f"{TOKEN_ENV} must be at least 16 characters")
        return env, False
    if configured:
        return configured, False
    if token_file is not None and token_file.is_file():
        stored = token_file.read_text().strip()
        if len(stored) >= 16:
            return stored, False
    token = secrets.token_urlsafe(32)
    if token_file is not None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return token, True


class BearerAuth:
    """FastAPI dependency: passes requests carrying `Authorization: Bearer <token>`, else 401."""

    def __init__(self, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the API token must be at least 16 characters")
        self._token = token.encode()

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
    ) -> None:
        given = b"" if credentials is None else credentials.credentials.encode()
        if credentials is None or not hmac.compare_digest(given, self._token):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
