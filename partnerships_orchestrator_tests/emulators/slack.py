"""A Slack emulator: Web API (chat.postMessage, auth.test, oauth.v2.access) and incoming webhooks.

Follows API_CONTRACTS §5 closely enough for the official ``slack_sdk`` (``WebClient(base_url=
url + "/api/")``, ``WebhookClient(url=…)``):

- ``POST /api/chat.postMessage`` (JSON or form): bot token in ``Authorization: Bearer`` (or a
  ``token`` field); logical errors are HTTP 200 ``{"ok": false, "error": …}`` (``not_authed``,
  ``invalid_auth``, ``token_expired``, ``channel_not_found``, ``is_archived``, ``not_in_channel``,
  ``no_text``, ``invalid_blocks``, ``msg_too_long``); ``warning: missing_charset`` for JSON
  without a charset; success ``{"ok": true, "channel", "ts", "message"}``.
- Per-channel limit (``per_channel_limit`` per ``per_channel_window`` s, a token bucket holding
  ``per_channel_burst``, default 2: Slack tolerates short bursts) and an optional ``workspace_limit``: HTTP
  429, an integer ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``. ``throttle()``
  forces 429s for one channel.
- ``POST /api/auth.test``; ``POST /api/oauth.v2.access`` (``refresh_token`` grant, client
  credentials as form fields or HTTP Basic; the old refresh token is revoked; tokens then expire
  after ``token_ttl`` s of the fake clock).
- ``POST /services/T…/B…/<secret>``: plain-text ``ok``, or an error string with its status
  (400 ``invalid_payload``/``no_text``, 403 ``invalid_token``, 404 ``no_service``/
  ``channel_not_found``, 410 ``channel_is_archived`` when its channel is archived (``archive()``,
  the state chat.postMessage answers ``is_archived`` for), 429 with ``Retry-After``).

``messages`` lists what was delivered; ``answers`` every post's outcome (status and error), and
``wait_for`` blocks until the answers satisfy a predicate, so tests await events without sleeping.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

_counter = itertools.count(1)
_WEBHOOK_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "too_many_attachments": 400,
    "action_prohibited": 403,
    "invalid_token": 403,
    "posting_to_general_channel_denied": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "team_disabled": 404,
    "channel_is_archived": 410,
}


@dataclass
class SlackChannel:
    id: str
    name: str
    archived: bool = False
    bot_is_member: bool = True


@dataclass
class SlackToken:
    value: str
    expires_at: float | None = None  # on the emulator's clock; None: never
    revoked: bool = False


@dataclass
class SlackWebhook:
    channel_id: str
    error: str | None = None  # answer this error string instead of posting


@dataclass
class PostedMessage:
    """One message Slack accepted."""

    channel_id: str
    channel_name: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    ts: str
    via: str  # "api" or "webhook"
    payload: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """The outcome of one post: which channel, which status, which error code."""

    via: str
    channel: str
    status: int
    error: str | None


@dataclass
class SlackState:
    """Workspace, credentials, channels and limits of the emulated Slack."""

    team_id: str = "T0EMULATED"
    team: str = "Emulated Workspace"
    bot_user_id: str = "U0BOT"
    bot_id: str = "B0BOT"
    channels: dict[str, SlackChannel] = field(
        default_factory=lambda: {
            "C0GENERAL": SlackChannel("C0GENERAL", "general"),
            "C0PARTNER": SlackChannel("C0PARTNER", "partner-ops"),
        }
    )
    tokens: dict[str, SlackToken] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    clients: dict[str, str] = field(default_factory=lambda: {"1111.2222": "slack-client-secret"})
    token_ttl: int = 43_200
    webhooks: dict[str, SlackWebhook] = field(default_factory=dict)
    per_channel_limit: int = 1
    per_channel_window: float = 1.0
    per_channel_burst: int = 2  # Slack tolerates short bursts
    workspace_limit: tuple[int, float] | None = None
    forced: dict[str, list[int]] = field(default_factory=dict)  # channel id -> Retry-After queue
    messages: list[PostedMessage] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    channel_limiter: RateLimiter | None = None
    workspace_limiter: RateLimiter | None = None


class SlackEmulator(Emulator[SlackState]):
    name = "slack"

    def __init__(self) -> None:
        super().__init__(SlackState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def issue_token(self, *, ttl: float | None = None) -> str:
        """A new bot token, expiring after ``ttl`` s of the fake clock (None: never)."""
        token = f"xoxb-{next(_counter)}-{secrets.token_hex(12)}"
        with self.lock:
            expires = None if ttl is None else self.clock.now() + ttl
            self.state.tokens[token] = SlackToken(token, expires)
        return token

    def issue_refresh_token(self) -> str:
        token = f"xoxe-1-{secrets.token_hex(16)}"
        with self.lock:
            self.state.refresh_tokens.add(token)
        return token

    def expire_token(self, token: str) -> None:
        with self.lock:
            self.state.tokens[token].expires_at = self.clock.now()

    def add_channel(self, name: str, *, archived: bool = False, bot_is_member: bool = True) -> str:
        """A new channel; returns its id."""
        with self.lock:
            channel_id = f"C{next(_counter):08d}"
            self.state.channels[channel_id] = SlackChannel(
                channel_id, name, archived, bot_is_member
            )
            return channel_id

    def archive(self, channel: str) -> None:
        """Archive ``channel``: chat.postMessage and its incoming webhooks refuse posts to it."""
        with self.lock:
            found = self._channel(channel)
            if found is None:
                raise KeyError(channel)
            found.archived = True

    def add_webhook(self, channel: str = "partner-ops", *, error: str | None = None) -> str:
        """A new incoming webhook posting to ``channel``; returns its full URL."""
        with self.lock:
            found = self._channel(channel)
            if found is None:
                raise KeyError(channel)
            path = f"/services/{self.state.team_id}/B{next(_counter):08d}/{secrets.token_hex(12)}"
            self.state.webhooks[path] = SlackWebhook(found.id, error)
        return f"{self.base_url}{path}"

    def throttle(self, channel: str, *retry_after: int) -> None:
        """Answer the next posts to ``channel`` with 429, one per ``Retry-After`` value given."""
        with self.lock:
            found = self._channel(channel)
            if found is None:
                raise KeyError(channel)
            self.state.forced.setdefault(found.id, []).extend(retry_after)

    @property
    def messages(self) -> list[PostedMessage]:
        with self.lock:
            return list(self.state.messages)

    @property
    def answers(self) -> list[Answer]:
        with self.lock:
            return list(self.state.answers)

    def wait_for(self, predicate: Callable[[list[Answer]], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(answers)`` holds (True) or ``timeout`` passes (False)."""
        return self.wait_until(lambda state: predicate(list(state.answers)), timeout)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
            Route("/api/auth.test", self._auth_test, methods=["POST", "GET"]),
            Route("/api/oauth.v2.access", self._oauth_access, methods=["POST"]),
            Route("/services/{team}/{bot}/{secret}", self._webhook, methods=["POST"]),
        ]

    async def _post_message(self, request: Request) -> Response:
        args, warning = await _arguments(request)
        with self.lock:
            refused = self._authenticate(request, args)
            if refused is not None:
                return self._answer("api", str(args.get("channel", "")), refused)
            error, channel = self._postable(args)
            if error is not None:
                return self._answer("api", str(args.get("channel", "")), _ok_false(error))
            assert channel is not None
            throttled = self._rate_limit(channel.id)
            if throttled is not None:
                response = _ok_false("ratelimited", 429, {"Retry-After": str(throttled)})
                return self._answer("api", channel.name, response)
            posted = self._deliver(channel, args, "api")
            body: dict[str, Any] = {
                "ok": True,
                "channel": channel.id,
                "ts": posted.ts,
                "message": self._message_json(posted),
            }
            if warning:
                body |= {"warning": warning, "response_metadata": {"warnings": [warning]}}
            return self._answer("api", channel.name, JSONResponse(body))

    async def _auth_test(self, request: Request) -> Response:
        args, _ = await _arguments(request)
        with self.lock:
            refused = self._authenticate(request, args)
            if refused is not None:
                return refused
            state = self.state
            return JSONResponse(
                {
                    "ok": True,
                    "url": "https://emulated.slack.com/",
                    "team": state.team,
                    "user": "partnerships-bot",
                    "team_id": state.team_id,
                    "user_id": state.bot_user_id,
                    "bot_id": state.bot_id,
                    "is_enterprise_install": False,
                }
            )

    async def _oauth_access(self, request: Request) -> Response:
        args, _ = await _arguments(request)
        client_id, client_secret = _basic(request) or (
            str(args.get("client_id", "")),
            str(args.get("client_secret", "")),
        )
        with self.lock:
            if client_id not in self.state.clients:
                return _ok_false("invalid_client_id")
            if self.state.clients[client_id] != client_secret:
                return _ok_false("bad_client_secret")
            if args.get("grant_type") != "refresh_token":
                return _ok_false("invalid_grant_type")
            refresh = str(args.get("refresh_token", ""))
            if refresh not in self.state.refresh_tokens:
                return _ok_false("invalid_refresh_token")
            self.state.refresh_tokens.discard(refresh)
        access = self.issue_token(ttl=self.state.token_ttl)
        return JSONResponse(
            {
                "ok": True,
                "app_id": "A0EMULATED",
                "access_token": access,
                "token_type": "bot",
                "scope": "chat:write",
                "bot_user_id": self.state.bot_user_id,
                "team": {"id": self.state.team_id, "name": self.state.team},
                "refresh_token": self.issue_refresh_token(),
                "expires_in": self.state.token_ttl,
            }
        )

    async def _webhook(self, request: Request) -> Response:
        raw = await request.body()
        with self.lock:
            hook = self.state.webhooks.get(request.url.path)
            if hook is None:
                known_bot = any(
                    path.startswith(f"/services/{request.path_params['team']}/")
                    for path in self.state.webhooks
                )
                return self._answer(
                    "webhook", "", _text("invalid_token" if known_bot else "no_service")
                )
            channel = self.state.channels[hook.channel_id]
            if hook.error is not None:
                return self._answer("webhook", channel.name, _text(hook.error))
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return self._answer("webhook", channel.name, _text("invalid_payload"))
            if not (payload.get("text") or payload.get("blocks") or payload.get("attachments")):
                return self._answer("webhook", channel.name, _text("no_text"))
            if _block_errors(payload.get("blocks")):
                return self._answer("webhook", channel.name, _text("invalid_payload"))
            if channel.archived:  # the same state chat.postMessage answers `is_archived` for
                return self._answer("webhook", channel.name, _text("channel_is_archived"))
            throttled = self._rate_limit(channel.id)
            if throttled is not None:
                response = PlainTextResponse(
                    "rate_limited", 429, headers={"Retry-After": str(throttled)}
                )
                return self._answer("webhook", channel.name, response)
            self._deliver(channel, payload, "webhook")
            return self._answer("webhook", channel.name, PlainTextResponse("ok"))

    # -- internals (callers hold the lock) ---------------------------------------------------

    def _answer(self, via: str, channel: str, response: Response) -> Response:
        """Record the outcome of a post, wake waiters, and return ``response``."""
        error = None
        if response.status_code != 200 or response.media_type == "application/json":
            error = _error_of(response)
        self.state.answers.append(Answer(via, channel, response.status_code, error))
        self.changed.notify_all()
        return response

    def _authenticate(self, request: Request, args: dict[str, Any]) -> Response | None:
        header = request.headers.get("authorization", "")
        value = header.removeprefix("Bearer ").strip() if header else str(args.get("token", ""))
        if not value:
            return _ok_false("not_authed")
        token = self.state.tokens.get(value)
        if token is None or token.revoked:
            return _ok_false("invalid_auth")
        if token.expires_at is not None and self.clock.now() >= token.expires_at:
            return _ok_false("token_expired")
        return None

    def _postable(self, args: dict[str, Any]) -> tuple[str | None, SlackChannel | None]:
        """The error code refusing a chat.postMessage, or the channel it posts to."""
        channel = self._channel(str(args.get("channel") or ""))
        if channel is None:
            return "channel_not_found", None
        text, blocks = args.get("text"), args.get("blocks")
        if not (text or blocks or args.get("attachments")):
            return "no_text", None
        if isinstance(text, str) and len(text) > 40_000:
            return "msg_too_long", None
        if blocks is not None and _block_errors(blocks):
            return "invalid_blocks", None
        if channel.archived:
            return "is_archived", None
        if not channel.bot_is_member:
            return "not_in_channel", None
        return None, channel

    def _channel(self, reference: str) -> SlackChannel | None:
        """A channel by id, ``#name`` or bare name."""
        found = self.state.channels.get(reference)
        if found is not None:
            return found
        name = reference.removeprefix("#")
        return next((c for c in self.state.channels.values() if c.name == name), None)

    def _rate_limit(self, channel_id: str) -> int | None:
        """The ``Retry-After`` seconds if this post is over a limit, else None (and counted)."""
        state = self.state
        forced = state.forced.get(channel_id)
        if forced:
            return forced.pop(0)
        if state.workspace_limit is not None:
            if state.workspace_limiter is None:
                state.workspace_limiter = RateLimiter(*state.workspace_limit, self.clock)
            decision = state.workspace_limiter.hit()
            if not decision.allowed:
                return max(1, math.ceil(decision.retry_after))
        if state.channel_limiter is None:
            state.channel_limiter = RateLimiter(
                state.per_channel_limit,
                state.per_channel_window,
                self.clock,
                kind="token_bucket",
                burst=state.per_channel_burst,
            )
        decision = state.channel_limiter.hit(channel_id)
        return None if decision.allowed else max(1, math.ceil(decision.retry_after))

    def _deliver(self, channel: SlackChannel, args: dict[str, Any], via: str) -> PostedMessage:
        now = self.clock.now()
        posted = PostedMessage(
            channel_id=channel.id,
            channel_name=channel.name,
            text=args.get("text"),
            blocks=args.get("blocks"),
            ts=f"{int(now)}.{next(_counter):06d}",
            via=via,
            payload=dict(args),
        )
        self.state.messages.append(posted)
        return posted

    def _message_json(self, posted: PostedMessage) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": self.state.bot_user_id,
            "bot_id": self.state.bot_id,
            "text": posted.text or "",
            "ts": posted.ts,
            "team": self.state.team_id,
        }
        if posted.blocks:
            message["blocks"] = posted.blocks
        return message


def _ok_false(error: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)


def _text(error: str) -> Response:
    """An incoming webhook's plain-text error with its status."""
    return PlainTextResponse(error, status_code=_WEBHOOK_STATUS.get(error, 400))


def _error_of(response: Response) -> str | None:
    body = bytes(response.body)
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode(errors="replace") or None
    return payload.get("error") if isinstance(payload, dict) else None


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


async def _arguments(request: Request) -> tuple[dict[str, Any], str | None]:
    """The method's arguments from a JSON or form body (and a ``missing_charset`` warning)."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            payload = {}
        warning = None if "charset" in content_type else "missing_charset"
        return (payload if isinstance(payload, dict) else {}), warning
    args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    args |= dict(request.query_params)
    for key in ("blocks", "attachments"):
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError:
                args[key] = {"invalid": args[key]}
    return args, None


def _block_errors(blocks: Any) -> list[str]:
    """What Slack's block validation would refuse (types, counts and text lengths)."""
    if blocks is None:
        return []
    if not isinstance(blocks, list) or len(blocks) > 50:
        return ["blocks must be a list of at most 50 blocks"]
    problems = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"block {index}: a block needs a type")
            continue
        text = block.get("text")
        if block["type"] == "header":
            if not (isinstance(text, dict) and text.get("type") == "plain_text"):
                problems.append(f"block {index}: a header needs plain_text")
            elif not 0 < len(str(text.get("text", ""))) <= 150:
                problems.append(f"block {index}: header text must be 1-150 characters")
        elif block["type"] == "section" and not block.get("fields"):
            if not (isinstance(text, dict) and text.get("type") in ("mrkdwn", "plain_text")):
                problems.append(f"block {index}: a section needs a text object")
            elif not 0 < len(str(text.get("text", ""))) <= 3000:
                problems.append(f"block {index}: section text must be 1-3000 characters")
    return problems
