"""Who is calling: bearer tokens, their role, their teams, and their request budget."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from partnerships_orchestrator.api.data_versions import DataVersions, sqlite_path
from partnerships_orchestrator.api.data_versions import Token as VersionToken
from partnerships_orchestrator.api.problems import Problem
from partnerships_orchestrator.api.rate_limit import RateLimiter
from partnerships_orchestrator.store.tokens import ROLES, Token, TokenStore

log = logging.getLogger("partnerships.api")
TOUCH_EVERY = 60.0  # seconds between `last_used_at` updates of one token
VERIFIED_HELD = 1024  # tokens whose verification is kept (least recently used dropped first)


class Authenticator:
    """Verifies bearer tokens against the state as it is at each request (a revocation holds
    from the next request) and spends their rate budget."""

    def __init__(self, tokens: TokenStore, default_rate: int, limiter: RateLimiter) -> None:
        self.tokens = tokens
        self.default_rate = default_rate
        self.limiter = limiter
        self.state_db = sqlite_path(tokens.engine.url.render_as_string())
        self.reads_inline = self.state_db is not None
        self._versions = DataVersions(held=1)
        self._verified: OrderedDict[bytes, tuple[VersionToken, Token]] = OrderedDict()
        self._lock = threading.Lock()
        self.verified_hits = 0  # verifications answered from memory
        self._touched: dict[str, float] = {}
        # `last_used_at` is written off the request's path: a write may wait for a lock
        self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-touch")

    def verify(self, secret: str) -> Token | None:
        """:meth:`TokenStore.verify`; on SQLite its answer is kept while the state file has had
        no commit since it was read (a revocation is a commit), keyed by the secret's digest."""
        if self.state_db is None:
            return self.tokens.verify(secret)
        digest = hashlib.sha256(secret.encode()).digest()
        try:
            version = self._versions.version(self.state_db)  # before reading, as ResponseCache
        except sqlite3.Error:
            return self.tokens.verify(secret)
        with self._lock:
            held = self._verified.get(digest)
            if held is not None and held[0] == version:
                self._verified.move_to_end(digest)
                self.verified_hits += 1
                return held[1]
        token = self.tokens.verify(secret)
        if token is not None:
            with self._lock:
                self._verified[digest] = (version, token)
                self._verified.move_to_end(digest)
                while len(self._verified) > VERIFIED_HELD:
                    self._verified.popitem(last=False)
        return token

    def token_for(self, secret: str) -> Token | None:
        token = self.verify(secret)
        if token is None:
            return None
        now = time.monotonic()
        if now - self._touched.get(token.id, -TOUCH_EVERY) >= TOUCH_EVERY:
            self._touched[token.id] = now
            self._toucher.submit(self._touch, token.id)
        return token

    def _touch(self, token_id: str) -> None:
        try:
            self.tokens.touch(token_id)
        except SQLAlchemyError:  # a missed `last_used_at` update is worth a line, not a failure
            log.warning("could not record the use of token %s", token_id, exc_info=True)

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


async def caller(request: Request) -> Token:
    """The verified token of this request (any role). Its row is read on the event loop when
    the state is a SQLite file (WAL: a read waits for no writer, and costs less than a round
    trip to a worker thread), in a worker thread when it is a database server."""
    auth: Authenticator = request.app.state.auth
    if auth.reads_inline:
        return auth.authenticate(request)
    return await run_in_threadpool(auth.authenticate, request)


def role(minimum: str) -> Callable[..., Awaitable[Token]]:
    """A dependency that admits tokens of ``minimum`` role or above (403 otherwise)."""
    assert minimum in ROLES  # nosec B101 # programming check at import time: a route names a known role

    async def check(request: Request) -> Token:
        token = await caller(request)  # called, not a sub-dependency: one less to resolve
        if not token.at_least(minimum):
            raise Problem(
                403,
                "forbidden",
                f"this needs the {minimum} role or above; token {token.id} is {token.role}",
            )
        return token

    return check
