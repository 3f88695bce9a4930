"""A HashiCorp Vault emulator: KV v2, token auth, AppRole login, lookup/renew-self, quotas.

Speaks Vault's HTTP API closely enough for the official ``hvac`` client (API_CONTRACTS §8):
tokens in ``X-Vault-Token`` or ``Authorization: Bearer``; every error is ``{"errors": [...]}``;
an unknown, expired or unauthorised token gets 403 ``permission denied``; a missing secret 404
``{"errors": []}``; a sealed Vault 503; an exceeded quota 429 (``Retry-After`` and
``X-Ratelimit-*`` only when ``rate_limit_headers``). Token TTLs follow the emulator's fake clock.
Policies are simplified to path globs (``secret/data/partnerships/*``) granting every capability.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

_counter = itertools.count(1)
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class VaultToken:
    id: str
    policies: list[str]
    ttl: int  # default TTL granted at creation and by a renewal without increment
    expires_at: float | None  # None: never expires (root tokens)
    max_expires_at: float | None
    renewable: bool
    created_at: float
    accessor: str = field(default_factory=lambda: uuid.uuid4().hex[:24])


@dataclass
class AppRole:
    secret_id: str
    policies: list[str]


@dataclass
class KvVersion:
    data: dict[str, Any] | None
    created_time: str
    deletion_time: str = ""


@dataclass
class VaultState:
    """Tokens, roles, policies and KV v2 data; knobs for TTLs, sealing and quotas."""

    token_ttl: int = 1200
    token_max_ttl: int = 3600
    sealed: bool = False
    quota: tuple[int, float] | None = None  # (requests, per_seconds)
    rate_limit_headers: bool = False
    tokens: dict[str, VaultToken] = field(default_factory=dict)
    approles: dict[str, AppRole] = field(default_factory=dict)
    policies: dict[str, list[str]] = field(default_factory=lambda: {"root": ["*"]})
    mounts: set[str] = field(default_factory=lambda: {"secret"})
    kv: dict[tuple[str, str], list[KvVersion]] = field(default_factory=dict)
    limiter: RateLimiter | None = None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _seconds(value: Any, default: int) -> int:
    """A Vault duration (``3600``, ``"1h"``, ``"30m"``) in seconds."""
    if value in (None, ""):
        return default
    if isinstance(value, int | float):
        return int(value)
    match = _DURATION.match(str(value).strip())
    return int(match[1]) * _UNITS[match[2]] if match else default


def _envelope(
    data: Any = None, auth: Any = None, warnings: list[str] | None = None
) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": auth,
    }


def _errors(status: int, *errors: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"errors": list(errors)}, status_code=status, headers=headers)


class VaultEmulator(Emulator[VaultState]):
    name = "vault"

    def __init__(self) -> None:
        super().__init__(VaultState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def create_token(
        self,
        policies: list[str] | None = None,
        *,
        ttl: int | None = None,
        max_ttl: int | None = None,
        renewable: bool = True,
    ) -> str:
        """A new token; ``policies=None`` makes a root token that never expires."""
        with self.lock:
            return self._mint(policies, ttl, max_ttl, renewable).id

    def add_approle(self, role_id: str, secret_id: str, policies: list[str]) -> None:
        with self.lock:
            self.state.approles[role_id] = AppRole(secret_id, policies)

    def add_policy(self, name: str, paths: list[str]) -> None:
        """A policy granting every capability on ``paths`` (globs like ``secret/data/x/*``)."""
        with self.lock:
            self.state.policies[name] = paths

    def put_secret(self, mount: str, path: str, data: dict[str, Any]) -> int:
        """Store a new version; returns its number."""
        with self.lock:
            return self._write(mount, path.strip("/"), data)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/auth/{mount}/login", self._login, methods=["POST", "PUT"]),
            Route("/v1/auth/token/lookup-self", self._lookup_self, methods=["GET"]),
            Route("/v1/auth/token/renew-self", self._renew_self, methods=["POST", "PUT"]),
            Route("/v1/{mount}/data/{path:path}", self._kv_read, methods=["GET"]),
            Route("/v1/{mount}/data/{path:path}", self._kv_write, methods=["POST", "PUT"]),
            Route("/v1/{mount}/data/{path:path}", self._kv_delete, methods=["DELETE"]),
        ]

    async def _login(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = await _json(request)
        with self.lock:
            role = self.state.approles.get(str(body.get("role_id", "")))
            if request.path_params["mount"] != "approle" or role is None:
                return _errors(400, "invalid role or secret ID")
            if role.secret_id != body.get("secret_id"):
                return _errors(400, "invalid role or secret ID")
            token = self._mint(role.policies, None, None, True)
            return JSONResponse(_envelope(auth=self._auth_block(token)))

    async def _lookup_self(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        with self.lock:
            token = self._token(request)
            if token is None:
                return _errors(403, "permission denied")
            return JSONResponse(_envelope(data=self._lookup_data(token)))

    async def _renew_self(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = await _json(request)
        with self.lock:
            token = self._token(request)
            if token is None:
                return _errors(403, "permission denied")
            if not token.renewable or token.expires_at is None:
                return _errors(400, "lease is not renewable")
            now = self.clock.now()
            wanted = _seconds(body.get("increment"), token.ttl)
            granted, warnings = wanted, None
            if token.max_expires_at is not None and now + wanted > token.max_expires_at:
                granted = max(0, math.floor(token.max_expires_at - now))
                warnings = [
                    f'TTL of "{wanted}s" exceeded the effective max_ttl of "{granted}s"; '
                    "TTL value is capped accordingly"
                ]
            token.expires_at = now + granted
            auth = self._auth_block(token) | {"lease_duration": granted}
            return JSONResponse(_envelope(auth=auth, warnings=warnings))

    async def _kv_read(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"].strip("/")
        if (refused := self._authorize(request, mount, path)) is not None:
            return refused
        with self.lock:
            versions = self.state.kv.get((mount, path))
            if not versions:
                return _errors(404)
            number = int(request.query_params.get("version") or 0) or len(versions)
            if number > len(versions):
                return _errors(404)
            version = versions[number - 1]
            metadata = _metadata(version, number)
            if version.data is None:
                return JSONResponse(_envelope(data={"data": None, "metadata": metadata}), 404)
            return JSONResponse(_envelope(data={"data": version.data, "metadata": metadata}))

    async def _kv_write(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"].strip("/")
        if (refused := self._authorize(request, mount, path)) is not None:
            return refused
        body = await _json(request)
        data = body.get("data")
        if not isinstance(data, dict):
            return _errors(400, "no data provided")
        with self.lock:
            current = len(self.state.kv.get((mount, path), []))
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and int(cas) != current:
                return _errors(400, "check-and-set parameter did not match the current version")
            number = self._write(mount, path, data)
            version = self.state.kv[(mount, path)][number - 1]
            return JSONResponse(_envelope(data=_metadata(version, number)))

    async def _kv_delete(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"].strip("/")
        if (refused := self._authorize(request, mount, path)) is not None:
            return refused
        with self.lock:
            versions = self.state.kv.get((mount, path))
            if versions:
                versions[-1].data = None
                versions[-1].deletion_time = _iso(self.clock.now())
        return Response(status_code=204)

    # -- internals (callers hold the lock where state is touched) ----------------------------

    def _gate(self, request: Request) -> Response | None:
        """Sealed and quota checks that come before authentication."""
        with self.lock:
            if self.state.sealed:
                return _errors(503, "Vault is sealed")
            if self.state.quota is None:
                return None
            if self.state.limiter is None:
                self.state.limiter = RateLimiter(*self.state.quota, self.clock)
            decision = self.state.limiter.hit()
            if decision.allowed:
                return None
            headers = None
            if self.state.rate_limit_headers:
                headers = {
                    "Retry-After": str(max(1, math.ceil(decision.retry_after))),
                    "X-Ratelimit-Limit": str(decision.limit),
                    "X-Ratelimit-Remaining": "0",
                    "X-Ratelimit-Reset": str(math.ceil(decision.reset_after)),
                }
            path = request.url.path.removeprefix("/v1/")
            return _errors(
                429, f'request path "{path}": rate limit quota exceeded', headers=headers
            )

    def _authorize(self, request: Request, mount: str, path: str) -> Response | None:
        if (refused := self._gate(request)) is not None:
            return refused
        with self.lock:
            token = self._token(request)
            if token is None or not self._allowed(token, f"{mount}/data/{path}"):
                return _errors(403, "permission denied")
            if mount not in self.state.mounts:
                return _errors(404, f"no handler for route '{mount}/data/{path}'")
        return None

    def _token(self, request: Request) -> VaultToken | None:
        """The request's live token, if any."""
        value = request.headers.get("x-vault-token") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        token = self.state.tokens.get(value)
        if token is None:
            return None
        if token.expires_at is not None and self.clock.now() >= token.expires_at:
            return None
        return token

    def _allowed(self, token: VaultToken, path: str) -> bool:
        for policy in token.policies:
            if any(fnmatch.fnmatchcase(path, glob) for glob in self.state.policies.get(policy, [])):
                return True
        return False

    def _mint(
        self, policies: list[str] | None, ttl: int | None, max_ttl: int | None, renewable: bool
    ) -> VaultToken:
        now = self.clock.now()
        root = policies is None
        ttl = ttl if ttl is not None else self.state.token_ttl
        max_ttl = max_ttl if max_ttl is not None else self.state.token_max_ttl
        token = VaultToken(
            id=f"hvs.emulated{next(_counter)}{uuid.uuid4().hex[:12]}",
            policies=["root"] if policies is None else ["default", *policies],
            ttl=0 if root else ttl,
            expires_at=None if root else now + ttl,
            max_expires_at=None if root else now + max_ttl,
            renewable=not root and renewable,
            created_at=now,
        )
        self.state.tokens[token.id] = token
        return token

    def _auth_block(self, token: VaultToken) -> dict[str, Any]:
        return {
            "client_token": token.id,
            "accessor": token.accessor,
            "policies": token.policies,
            "token_policies": token.policies,
            "metadata": None,
            "lease_duration": token.ttl,
            "renewable": token.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
        }

    def _lookup_data(self, token: VaultToken) -> dict[str, Any]:
        now = self.clock.now()
        remaining = 0 if token.expires_at is None else max(0, int(token.expires_at - now))
        return {
            "accessor": token.accessor,
            "creation_time": int(token.created_at),
            "creation_ttl": token.ttl,
            "display_name": "token",
            "entity_id": "",
            "expire_time": None if token.expires_at is None else _iso(token.expires_at),
            "explicit_max_ttl": 0,
            "id": token.id,
            "issue_time": _iso(token.created_at),
            "meta": None,
            "num_uses": 0,
            "orphan": True,
            "path": "auth/token/create",
            "policies": token.policies,
            "renewable": token.renewable,
            "ttl": remaining,
            "type": "service",
        }

    def _write(self, mount: str, path: str, data: dict[str, Any]) -> int:
        versions = self.state.kv.setdefault((mount, path), [])
        versions.append(KvVersion(dict(data), _iso(self.clock.now())))
        return len(versions)


def _metadata(version: KvVersion, number: int) -> dict[str, Any]:
    return {
        "created_time": version.created_time,
        "custom_metadata": None,
        "deletion_time": version.deletion_time,
        "destroyed": False,
        "version": number,
    }


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        payload = await request.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
