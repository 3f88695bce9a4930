"""A generic vendor for the shared connector tests: echo, validation, OAuth, rate limits.

Routes (besides the control plane from ``core``):

- ``ANY /echo``: answers 200 with what it received (method, path, query, headers, body)
- ``POST /validate``: 400 ``{"message": "name is required", ...}`` unless the JSON has ``name``
- ``GET /protected``: 200 with a valid unexpired bearer token from ``/oauth/token``, else 401
- ``POST /oauth/token``: ``client_credentials`` and ``refresh_token`` grants, form-encoded,
  client credentials in the body or HTTP Basic; ``expires_in`` and refresh-token rotation are
  configurable; refused grants answer 400 ``{"error": "invalid_grant", ...}``
- ``GET /basic``: 200 when HTTP Basic matches ``state.basic_user``/``basic_password``
- ``GET /limited``: a token bucket of ``limit`` per ``window`` s holding ``burst`` tokens; no quota
  headers (like HubSpot search); 429 + ``Retry-After`` when exceeded
"""

from __future__ import annotations

import base64
import itertools
import math
from dataclasses import dataclass, field

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

_counter = itertools.count(1)


@dataclass
class GenericState:
    """Clients, tokens and knobs of the generic vendor."""

    clients: dict[str, str] = field(default_factory=lambda: {"client-1": "client-secret-1"})
    access_tokens: dict[str, float | None] = field(default_factory=dict)  # token -> expires at
    refresh_tokens: set[str] = field(default_factory=set)
    expires_in: int | None = 3600
    rotate_refresh_tokens: bool = False
    basic_user: str = "api"
    basic_password: str = "basic-password-1"
    limit: int = 20
    window: float = 1.0
    burst: int | None = None
    limiter: RateLimiter | None = None


class GenericEmulator(Emulator[GenericState]):
    name = "generic"

    def __init__(self) -> None:
        super().__init__(GenericState)

    def issue_refresh_token(self) -> str:
        """A new valid refresh token."""
        token = f"refresh-{next(_counter)}-secret"
        with self.lock:
            self.state.refresh_tokens.add(token)
        return token

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.state.refresh_tokens.clear()

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far is refused from now on (a session timeout)."""
        with self.lock:
            self.state.access_tokens.clear()

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/echo", self._echo, methods=methods),
            Route("/validate", self._validate, methods=["POST"]),
            Route("/protected", self._protected, methods=["GET"]),
            Route("/oauth/token", self._token, methods=["POST"]),
            Route("/basic", self._basic, methods=["GET"]),
            Route("/limited", self._limited, methods=["GET"]),
        ]

    async def _echo(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": body,
            }
        )

    async def _validate(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not payload.get("name"):
            return JSONResponse(
                {
                    "status": "error",
                    "message": "name is required",
                    "category": "VALIDATION_ERROR",
                    "echo": payload,
                },
                status_code=400,
            )
        return JSONResponse({"id": "1", "name": payload["name"]}, status_code=201)

    async def _protected(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            known = token in self.state.access_tokens
            expires_at = self.state.access_tokens.get(token)
        if not known:
            return _unauthorized("INVALID_AUTHENTICATION", "The access token is not valid.")
        if expires_at is not None and self.clock.now() >= expires_at:
            return _unauthorized("EXPIRED_AUTHENTICATION", "The access token expired.")
        return JSONResponse({"ok": True})

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        client_id, client_secret = _client_credentials(request, form)
        with self.lock:
            if self.state.clients.get(client_id or "") != client_secret:
                return _oauth_error(401, "invalid_client", "client authentication failed")
            grant = form.get("grant_type")
            if grant == "client_credentials":
                return JSONResponse(self._issue(request, refresh=None))
            if grant != "refresh_token":
                return _oauth_error(400, "unsupported_grant_type", f"grant {grant!r}")
            refresh = str(form.get("refresh_token", ""))
            if refresh not in self.state.refresh_tokens:
                return _oauth_error(
                    400, "invalid_grant", "refresh token is invalid, expired or revoked"
                )
            if self.state.rotate_refresh_tokens:
                self.state.refresh_tokens.discard(refresh)
                refresh = f"refresh-{next(_counter)}-secret"
                self.state.refresh_tokens.add(refresh)
            return JSONResponse(self._issue(request, refresh=refresh))

    def _issue(self, request: Request, refresh: str | None) -> dict[str, object]:
        """Mint an access token (caller holds the lock)."""
        token = f"access-{next(_counter)}-secret"
        expires_in = self.state.expires_in
        expires_at = None if expires_in is None else self.clock.now() + expires_in
        self.state.access_tokens[token] = expires_at
        answer: dict[str, object] = {
            "access_token": token,
            "token_type": "bearer",
            "instance_url": str(request.base_url).rstrip("/"),
            "scope": "api",
        }
        if expires_in is not None:
            answer["expires_in"] = expires_in
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer

    async def _basic(self, request: Request) -> Response:
        expected = f"{self.state.basic_user}:{self.state.basic_password}".encode()
        header = request.headers.get("authorization", "")
        if header != f"Basic {base64.b64encode(expected).decode()}":
            return Response("Forbidden", status_code=401, media_type="text/plain")
        return JSONResponse({"ok": True})

    async def _limited(self, request: Request) -> Response:
        with self.lock:
            if self.state.limiter is None:
                self.state.limiter = RateLimiter(
                    self.state.limit,
                    self.state.window,
                    self.clock,
                    kind="token_bucket",
                    burst=self.state.burst,
                )
            decision = self.state.limiter.hit()
        if not decision.allowed:
            headers = {"Retry-After": str(max(1, math.ceil(decision.retry_after)))}
            return JSONResponse({"message": "too many requests"}, 429, headers=headers)
        return JSONResponse({"ok": True})


def _client_credentials(request: Request, form: FormData) -> tuple[str | None, str | None]:
    """From HTTP Basic if present, else from the form."""
    header = request.headers.get("authorization", "")
    if header.startswith("Basic "):
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    return (
        client_id if isinstance(client_id, str) else None,
        client_secret if isinstance(client_secret, str) else None,
    )


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _unauthorized(category: str, message: str) -> Response:
    return JSONResponse(
        {"status": "error", "message": message, "category": category}, status_code=401
    )
