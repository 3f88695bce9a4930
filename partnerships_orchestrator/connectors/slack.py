"""Slack: ``chat.postMessage`` with a bot token, or an incoming webhook (API_CONTRACTS §5).

:class:`SlackChat` is the ``slack`` channel's provider. With ``token`` (``xoxb-…``, usually a secret
reference such as ``${env:SLACK_BOT_TOKEN}``, resolved at first use) it posts JSON to
``{base_url}/api/chat.postMessage`` with ``channel`` = the recipient (``#partner-ops`` or a
channel id); with ``webhook_url`` it posts to an incoming webhook, which is bound to one channel
(the recipient then only names it for the ledger). The subject becomes a header block, the
Markdown body sections of Slack mrkdwn (bold, italics, links, bullets) of at most 3,000
characters each, plus a ``text`` fallback for notifications; link unfurling is off.

Slack answers HTTP 200 even for errors: ``{"ok": false, "error": "<code>"}`` is read here, the
code kept in the error. Credential codes (``invalid_auth``, ``token_expired``…) are authentication
errors, ``ratelimited`` and HTTP 429 are throttling (``Retry-After`` honoured for that channel
only), 5xx and ``service_unavailable`` are retried, every other code is final. Webhooks answer
plain text: ``ok``, or an error string with 400/403/404/410.

Pacing follows Slack's documented limit of about one message per second per channel (one lane
per recipient as written, so ``#partner-ops`` and its id ``C…`` are paced apart; a webhook is one
lane), under a workspace-wide cap Slack does not publish: 100 messages per minute (the floor of
its busiest tier) unless configured otherwise. A retry re-enters its channel's lane. Token rotation (``token_expired`` →
``oauth.v2.access``) is not done: Slack revokes the old refresh token at every refresh, so the
rotated one must be stored, and the product has no token store yet; an expired token is reported
with that hint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.delivery import (
    OUTCOME_UNKNOWN,
    ChannelResource,
    HttpClient,
    check_failure,
    delivery_outcome,
)
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ResourceNotFound,
    VendorError,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import BearerAuth, ResponsePolicy, Verdict
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter
from partnerships_orchestrator.connectors.shared_ratelimit import limiter_for
from partnerships_orchestrator.errors import DeliveryError, SecretError

SECTION_LIMIT = 3000  # characters of a section block's text
HEADER_LIMIT = 150  # characters of a header block's text
MAX_BLOCKS = 50  # blocks per message
FALLBACK_LIMIT = 3000  # the notification text needs no more
WEBHOOK_LANE = "webhook"
_UNKNOWN_HINT = "the message may have been posted: check the channel before sending it again"

_AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "not_allowed_token_type",
        "no_permission",
        "invalid_token",
        "action_prohibited",
    }
)
_TOKEN_HINT = "check the slack connection's token (a bot token, xoxb-…)"  # nosec B105 # a hint for users, not a password
_ERRORS: dict[str, tuple[str, str]] = {
    "channel_not_found": (
        "no such channel, or it is private and the app is not in it",
        "check `to:` (a #name or a channel id) and invite the app to private channels",
    ),
    "not_in_channel": (
        "the app is not a member of the channel",
        "invite the app to the channel (/invite @the-app)",
    ),
    "is_archived": ("the channel is archived", "unarchive it or send to another channel"),
    "channel_is_archived": (
        "the webhook's channel is archived",
        "unarchive the channel or create a webhook for a live one",
    ),
    "msg_too_long": ("the message is too long", "shorten the body"),
    "no_text": ("the message has no text", "give the step a body"),
    "invalid_blocks": ("Slack refused the message's blocks", "simplify the body's Markdown"),
    "invalid_payload": ("Slack could not read the payload", "report this as a bug"),
    "posting_to_general_channel_denied": (
        "only admins may post in this channel",
        "post to another channel or ask a workspace admin",
    ),
    "restricted_action": (
        "the workspace does not let the app post here",
        "ask a workspace admin, or post to another channel",
    ),
    "no_service": (
        "the webhook no longer exists (the app was removed or the webhook revoked)",
        "create a new incoming webhook and update the connection",
    ),
    "team_disabled": ("the workspace is disabled", "use a webhook of a live workspace"),
    "invalid_auth": ("Slack refused the token", _TOKEN_HINT),
    "not_authed": ("no token reached Slack", _TOKEN_HINT),
    "account_inactive": ("the token's app or user was deactivated", _TOKEN_HINT),
    "token_revoked": ("the token was revoked", _TOKEN_HINT),
    "token_expired": (
        "the token expired (token rotation is on for this Slack app)",
        "give the connection a fresh token: automatic rotation needs a token store, not built yet",
    ),
    "missing_scope": (
        "the token lacks the chat:write scope",
        "add chat:write to the Slack app and reinstall it",
    ),
    "invalid_token": ("the webhook's token is invalid", "check the slack connection's webhook_url"),
    "action_prohibited": (
        "a workspace admin restricted this webhook",
        "ask a workspace admin, or use another webhook",
    ),
}


class SlackChat(ChannelResource):
    """Posts a channel's messages to Slack with a bot token or an incoming webhook."""

    # a refused configuration must not echo its values: they may be secrets
    model_config = ConfigDict(hide_input_in_errors=True)

    token: str | None = Field(
        default=None,
        description="Bot token (xoxb-…) or a secret reference, e.g. ${env:SLACK_BOT_TOKEN}.",
    )
    webhook_url: str | None = Field(
        default=None,
        description="Incoming webhook URL (a secret: use a reference such as ${env:SLACK_WEBHOOK}).",
    )
    base_url: str = Field(default="https://slack.com", description="Web API host (token mode).")
    per_channel_interval_seconds: float = Field(
        default=1.0, ge=0, description="Seconds between two messages to one channel; 0: no pacing."
    )
    workspace_messages_per_minute: int = Field(
        default=100, ge=0, description="Messages per minute across the workspace; 0: no cap."
    )

    _webhook: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_credential(self) -> SlackChat:
        if (self.token is None) == (self.webhook_url is None):
            raise ValueError("configure exactly one of `token` (bot token) or `webhook_url`")
        return self

    @property
    def provider_name(self) -> str:
        return "slack"

    def send(self, message: Message) -> Receipt:
        """Post ``message`` to the channel ``message.to``, at most once (see ``delivery``)."""
        payload = message_payload(message)
        with delivery_outcome(self.provider_name):
            http = self.http()
            if self._webhook is not None:
                http.request("POST", self._webhook, limit_key=WEBHOOK_LANE, **_json(payload))
                return Receipt(self.provider_name, message.channel, message.to, status="sent")
            body = {"channel": message.to, **payload}
            response = http.request(
                "POST", "/api/chat.postMessage", limit_key=message.to, **_json(body)
            )
        answer = response.json()
        return Receipt(
            self.provider_name,
            message.channel,
            message.to,
            message_id=answer.get("ts"),
            detail={"channel_id": answer.get("channel")},
        )

    def check(self) -> dict[str, Any]:
        """Whether the credentials work (``auth.test``); never contains a secret."""
        if self.webhook_url is not None:
            return {
                "ok": None,
                "provider": self.provider_name,
                "mode": "webhook",
                "detail": "an incoming webhook cannot be checked without posting a message",
            }
        try:
            answer = self.http().request("POST", "/api/auth.test").json()
        except (VendorError, SecretError) as exc:
            return check_failure(self.provider_name, exc) | {"mode": "token"}
        identity = ("team", "team_id", "user", "user_id", "bot_id", "url")
        return {
            "ok": True,
            "provider": self.provider_name,
            "mode": "token",
            **{k: answer[k] for k in identity if k in answer},
        }

    def _build_client(self) -> HttpClient:
        if self.webhook_url is not None:
            url = self._secret(self.webhook_url)
            http = self._client_for(
                "", auth=None, policy=SlackWebhookPolicy(), rate_limit=self._limiter()
            )
            http.redactor.add(*_webhook_secrets(url))
            self._webhook = url
            return http
        auth = BearerAuth(self._secret(self.token or ""))
        return self._client_for(
            self.base_url, auth=auth, policy=SlackApiPolicy(), rate_limit=self._limiter()
        )

    def _limiter(self) -> RateLimiter:
        """The workspace cap, plus one lane per channel."""
        workspace = self.workspace_messages_per_minute
        interval = self.per_channel_interval_seconds
        return limiter_for(
            self.label,
            RateLimit(requests=workspace, per_seconds=60) if workspace else None,
            per_key=RateLimit(requests=1, per_seconds=interval) if interval else None,
        )


class SlackApiPolicy(ResponsePolicy):
    """Web API answers: ``ok: false`` is an error whatever the HTTP status."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status == 429:
            return self._throttled(response)
        if status != 200:
            return super().classify(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # 200 without a readable answer: the message may well have been posted
            message = "answered 200 without a JSON body"
            return Verdict.fail(
                VendorUnavailable, message, code=OUTCOME_UNKNOWN, hint=_UNKNOWN_HINT
            )
        if answer.get("ok") is True:
            return Verdict.ok()
        return self._error(str(answer.get("error") or "unknown_error"), response)

    def _error(self, code: str, response: httpx.Response) -> Verdict:
        if code == "ratelimited":
            return self._throttled(response)
        if code == "service_unavailable":
            return Verdict.retry(code, code=code)
        if code in ("fatal_error", "internal_error"):
            # Slack: "it's possible some aspect of the operation succeeded"
            return Verdict.fail(VendorUnavailable, code, code=OUTCOME_UNKNOWN, hint=_UNKNOWN_HINT)
        return _refusal(code, AuthenticationError if code in _AUTH_ERRORS else None)

    def _throttled(self, response: httpx.Response) -> Verdict:
        return Verdict.rate_limited(
            "ratelimited",
            retry_after=self.retry_after(response),
            code="ratelimited",
            key_scoped=True,
        )


class SlackWebhookPolicy(ResponsePolicy):
    """Incoming-webhook answers: plain-text ``ok`` or an error string."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status < 300:
            return Verdict.ok()
        code = response.text.strip()[:100] or response.reason_phrase
        if status == 429:
            return Verdict.rate_limited(code, retry_after=self.retry_after(response), code=code)
        if status >= 500 or status in self.retry_statuses:
            return Verdict.retry(code, retry_after=self.retry_after(response), code=code)
        if code in _AUTH_ERRORS or status == 401:
            return _refusal(code, AuthenticationError)
        return _refusal(code, ResourceNotFound if status == 404 else None)


def _refusal(code: str, error: type[VendorError] | None) -> Verdict:
    """A final verdict naming Slack's code, what it means and what would fix it."""
    meaning, hint = _ERRORS.get(code, (code, "see Slack's documentation of this error code"))
    return Verdict.fail(error or VendorValidationError, meaning, code=code, hint=hint)


def _webhook_secrets(url: str) -> list[str]:
    """A webhook URL is a credential: the URL and its path (which the client logs)."""
    path = urlsplit(url).path
    return [url, *([path] if len(path) > 1 else [])]


def _json(payload: dict[str, Any]) -> dict[str, Any]:
    """httpx keywords for a JSON body in UTF-8, declared as Slack asks (else ``missing_charset``)."""
    return {
        "content": json.dumps(payload, ensure_ascii=False).encode(),
        "headers": {"Content-Type": "application/json; charset=utf-8"},
    }


# -- message rendering ------------------------------------------------------------------------


def message_payload(message: Message) -> dict[str, Any]:
    """``text``, ``blocks`` and ``unfurl_links`` for ``message``; refuses what Slack would."""
    subject = " ".join((message.subject or "").split())
    body = to_mrkdwn(message.body).strip()
    blocks: list[dict[str, Any]] = []
    if subject:
        header = _truncate(subject, HEADER_LIMIT)
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": header}})
    for section in split_sections(body):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": section}})
    if not blocks:
        raise DeliveryError(
            f"slack did not deliver to {message.to}: the message is empty",
            "give the step a subject or a body",
            retryable=False,
        )
    if len(blocks) > MAX_BLOCKS:
        raise DeliveryError(
            f"slack did not deliver to {message.to}: the body needs {len(blocks)} blocks "
            f"of {SECTION_LIMIT} characters; Slack takes {MAX_BLOCKS}",
            "shorten the body, or link to the full report instead",
            retryable=False,
        )
    fallback = "\n".join(p for p in (_escape(subject), body) if p)
    return {"text": _truncate(fallback, FALLBACK_LIMIT), "blocks": blocks, "unfurl_links": False}


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<text>.*?)[\s#]*$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(?P<text>.*)$")
_BULLET = re.compile(r"^(?P<indent>\s*)[-*+]\s+(?P<text>.*)$")
_TOKENS = re.compile(
    r"(?P<code>`[^`\n]+`)"
    r"|!?\[(?P<label>[^\]\n]+)\]\((?P<url>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"


def to_mrkdwn(markdown: str) -> str:
    """Markdown as Slack mrkdwn: bold, italics, strikethrough, links, bullets, headings, quotes."""
    lines, in_code = [], False
    for line in markdown.replace("\x00", "").replace(_BOLD_MARK, "").splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            lines.append("```")
        else:
            lines.append(_escape(line) if in_code else _mrkdwn_line(line))
    return "\n".join(lines)


def _mrkdwn_line(line: str) -> str:
    if heading := _HEADING.match(line):
        text = _inline(heading["text"]).replace("*", "")
        return f"*{text}*" if text else ""
    if quote := _QUOTE.match(line):
        return f">{_inline(quote['text'])}"
    if bullet := _BULLET.match(line):
        return f"{bullet['indent']}• {_inline(bullet['text'])}"
    return _inline(line)


def _inline(text: str) -> str:
    """Inline Markdown as mrkdwn; code spans and links are set aside while emphasis converts."""
    kept: list[str] = []
    text = _escape(_TOKENS.sub(_keeper(kept), text))
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m[2]}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text).replace(_BOLD_MARK, "*")
    return _PLACEHOLDER.sub(lambda m: kept[int(m[1])], text)


def _keeper(kept: list[str]) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` callback storing each code span or link as mrkdwn behind a placeholder."""

    def keep(match: re.Match[str]) -> str:
        if match["code"]:
            token = _escape(match["code"])
        elif match["auto"]:
            token = f"<{_escape(match['auto'])}>"
        else:
            label = _escape(match["label"]).replace("|", "¦")
            token = f"<{_escape(match['url'])}|{label}>"
        kept.append(token)
        return f"\x00{len(kept) - 1}\x00"

    return keep


def _escape(text: str) -> str:
    """The three characters Slack wants as entities in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_sections(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """``text`` in chunks of at most ``limit`` characters, cut at paragraphs, lines, then words."""
    paragraphs = [p.strip("\n").rstrip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    return _pack(
        paragraphs, "\n\n", limit, lambda p: _pack(p.split("\n"), "\n", limit, _cut(limit))
    )


def _pack(
    parts: list[str], separator: str, limit: int, split: Callable[[str], list[str]]
) -> list[str]:
    """Join ``parts`` greedily into chunks of at most ``limit``; ``split`` breaks oversized ones."""
    chunks: list[str] = []
    current = ""
    for part in parts:
        for piece in [part] if len(part) <= limit else split(part):
            candidate = f"{current}{separator}{piece}" if current else piece
            if len(candidate) <= limit:
                current = candidate
            else:
                chunks.append(current)
                current = piece
    if current:
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def _cut(limit: int) -> Callable[[str], list[str]]:
    """Split one long line at spaces where possible, else hard, into pieces of ``limit``."""

    def cut(line: str) -> list[str]:
        pieces = []
        while len(line) > limit:
            at = line.rfind(" ", limit // 2, limit)
            at = at if at > 0 else limit
            pieces.append(line[:at])
            line = line[at:].lstrip(" ")
        return [*pieces, line] if line else pieces

    return cut
