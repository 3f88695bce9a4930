"""Who is calling: bearer tokens, their role, their teams, and their request budget."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from partnerships_orchestrator.api.problems import Problem
from partnerships_orchestrator.api.rate_limit import RateLimiter
from partnerships_orchestrator.store.tokens import ROLES, Token, TokenStore

TOUCH_EVERY = 60.0  # seconds between `last_used_at` updates of one token


class Authenticator:
    """Verifies bearer tokens (every request reads the token's row, so a revocation holds at
    once) and spends their rate budget."""

    def __init__(self, tokens: TokenStore, default_rate: int) -> None:
        self.tokens = tokens
        self.default_rate = default_rate
        self.limiter = RateLimiter()
        self._touched: dict[str, float] = {}

    def token_for(self, secret: str) -> Token | None:
        token = self.tokens.verify(secret)
        if token is None:
            return None
        now = time.monotonic()
        if now - self._touched.get(token.id, -TOUCH_EVERY) >= TOUCH_EVERY:
            self._touched[token.id] = now
            self.tokens.touch(token.id)
        return token

    def authenticate(self, request: Request) -> Token:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Problem(
                401,
                "unauthenticated",
                "send `Authorization: Bearer <token>` (`partnerships token create` makes one)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = self.token_for(secret.strip())
        if token is None:
            raise Problem(
                401,
                "unauthenticated",
                "the token is unknown or revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        request.state.token_id = token.id
        wait = self.limiter.take(token.id, token.rate_limit or self.default_rate)
        if wait is not None:
            raise Problem(
                429,
                "rate-limited",
                f"token {token.id} may make {token.rate_limit or self.default_rate} requests a minute",
                headers={"Retry-After": str(wait)},
            )
        return token


def caller(request: Request) -> Token:
    """The verified token of this request (any role); sync, so that FastAPI runs its database
    read in a worker thread, never on the event loop."""
    auth: Authenticator = request.app.state.auth
    return auth.authenticate(request)


def role(minimum: str) -> Callable[..., Awaitable[Token]]:
    """A dependency that admits tokens of ``minimum`` role or above (403 otherwise)."""
    assert minimum in ROLES  # nosec B101 # programming check at import time: a route names a known role

    async def check(token: Annotated[Token, Depends(caller)]) -> Token:
        # async: no I/O here, so no worker-thread round trip per request
        if not token.at_least(minimum):
            raise Problem(
                403,
                "forbidden",
                f"this needs the {minimum} role or above; token {token.id} is {token.role}",
            )
        return token

    return check
