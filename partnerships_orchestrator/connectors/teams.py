"""Microsoft Teams: an Adaptive Card posted to a workflow or legacy webhook (API_CONTRACTS §6).

:class:`TeamsChat` is the ``teams`` channel's provider. ``webhook_url`` is a Power Automate
workflow webhook ("Post to a channel when a webhook request is received"; authorised by the
``sig=`` in its query) or a legacy Office 365 connector URL; either is a credential, so use a
secret reference. A webhook is bound to one channel: ``message.to`` only names that channel for
the run's logs and the delivery ledger, it does not route the message.

Workflows answer **202 Accepted** to anything and run the flow later, so a bad card would only
surface as a failed flow run nobody sees. The card is therefore built here (a title TextBlock
for the subject, one wrapping TextBlock per paragraph of the body) and validated before sending:
an invalid or oversized card (over about 28 KB) is our clear, non-retryable error and no request
goes out. A 202 gives a receipt with status ``accepted`` (the flow may still fail); a legacy
connector's 200 ``1`` gives ``sent``; a legacy 200 whose text says delivery failed ("…Microsoft
Teams endpoint returned HTTP error 429…") is read as the failure it reports. 429 is retried
after ``Retry-After``, 5xx retried, other 4xx final. Posts are paced at ``interval_seconds``
(default 0.5 s: the legacy connector's 60 per 30 s; its hourly caps are not paced).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import ConfigDict, Field, PrivateAttr

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.delivery import (
    ChannelResource,
    HttpClient,
    check_failure,
    delivery_outcome,
)
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ResourceNotFound,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import ResponsePolicy, Verdict
from partnerships_orchestrator.connectors.ratelimit import RateLimit
from partnerships_orchestrator.errors import DeliveryError, SecretError

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
MAX_CARD_BYTES = 28 * 1024
_VERSION = re.compile(r"^1\.[0-5]$")
_LEGACY_FAILURE = re.compile(r"HTTP error (?P<status>\d{3})")
_WEBHOOK_HINT = "check the teams connection's webhook_url"


class TeamsChat(ChannelResource):
    """Posts a channel's messages to Microsoft Teams through one channel's webhook."""

    # a refused configuration must not echo its values: they may be secrets
    model_config = ConfigDict(hide_input_in_errors=True)

    webhook_url: str = Field(
        description="Workflow or legacy webhook URL, a credential: use a secret reference, "
        "e.g. ${env:TEAMS_WEBHOOK_URL}."
    )
    interval_seconds: float = Field(
        default=0.5, ge=0, description="Seconds between two posts; 0: no pacing."
    )

    _url: str | None = PrivateAttr(default=None)

    @property
    def provider_name(self) -> str:
        return "teams"

    def send(self, message: Message) -> Receipt:
        """Validate the card, then post it once; ``message.to`` is recorded, not routed on."""
        envelope = adaptive_card(message.subject, message.body)
        problems = card_problems(envelope)
        if problems:
            raise DeliveryError(
                f"teams did not deliver to {message.to}: the Adaptive Card is invalid: "
                + "; ".join(problems),
                "fix the message: Teams would answer 202 and drop this card later",
                retryable=False,
            )
        with delivery_outcome(self.provider_name):
            response = self.http().request(
                "POST",
                self._url or "",
                content=json.dumps(envelope, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
            )
        return Receipt(
            self.provider_name,
            message.channel,
            message.to,
            message_id=response.headers.get("x-ms-workflow-run-id"),
            status="accepted" if response.status_code == 202 else "sent",
            detail={"http_status": response.status_code},
        )

    def check(self) -> dict[str, Any]:
        """What is known without posting: the secret resolves, the webhook's kind; no URL."""
        try:
            self.http()
        except SecretError as exc:
            return check_failure(self.provider_name, exc)
        return {
            "ok": None,
            "provider": self.provider_name,
            "kind": webhook_kind(self._url or ""),
            "detail": "a Teams webhook cannot be checked without posting a message",
        }

    def _build_client(self) -> HttpClient:
        url = self._secret(self.webhook_url)
        interval = self.interval_seconds
        pace = RateLimit(requests=1, per_seconds=interval) if interval else None
        http = self._client_for("", auth=None, policy=TeamsPolicy(), rate_limit=pace)
        http.redactor.add(*_webhook_secrets(url))
        self._url = url
        return http


def _webhook_secrets(url: str) -> list[str]:
    """A webhook URL is a credential: the URL, its path (which the client logs), its ``sig``."""
    parts = urlsplit(url)
    found = [url, parts.query, *parse_qs(parts.query).get("sig", [])]
    return [s for s in (*found, parts.path if len(parts.path) > 1 else "") if s]


def webhook_kind(url: str) -> str:
    """``legacy`` for an Office 365 connector URL, else ``workflow``."""
    return "legacy" if "/webhookb2/" in url or "/IncomingWebhook/" in url else "workflow"


class TeamsPolicy(ResponsePolicy):
    """Workflow 202s, legacy 200s (with failures reported in the text), 429s and 4xx."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status == 200:
            return self._legacy(response)
        if status < 300:
            return Verdict.ok()
        message = self.error_message(response)
        if status in (401, 403):
            return Verdict.fail(AuthenticationError, message, hint=_WEBHOOK_HINT)
        if status == 404:
            hint = "the workflow or connector was deleted or turned off: " + _WEBHOOK_HINT
            return Verdict.fail(ResourceNotFound, message, hint=hint)
        if status == 413:
            return Verdict.fail(VendorValidationError, message, hint="shorten the body")
        return super().classify(response)

    def _legacy(self, response: httpx.Response) -> Verdict:
        """A legacy connector says 200 even when Teams refused the message; read its text."""
        text = response.text.strip()
        failed = _LEGACY_FAILURE.search(text)
        if failed is None and "failed" not in text.lower():
            return Verdict.ok()
        status = int(failed["status"]) if failed else None
        summary = text[:300]
        if status == 429:
            return Verdict.rate_limited(summary, retry_after=self.retry_after(response))
        if status is None or status >= 500:
            return Verdict.retry(summary)
        return Verdict.fail(VendorValidationError, summary, code=f"teams_{status}")


def adaptive_card(subject: str | None, body: str) -> dict[str, Any]:
    """The message envelope Teams webhooks take: one Adaptive Card of wrapping TextBlocks."""
    blocks: list[dict[str, Any]] = []
    title = " ".join((subject or "").split())
    if title:
        blocks.append(
            {"type": "TextBlock", "text": title, "size": "Large", "weight": "Bolder", "wrap": True}
        )
    for paragraph in re.split(r"\n[ \t]*\n", to_card_markdown(body)):
        if paragraph.strip():
            blocks.append({"type": "TextBlock", "text": paragraph.strip("\n"), "wrap": True})
    content = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": blocks,
        "msteams": {"width": "Full"},
    }
    attachment = {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": content}
    return {"type": "message", "attachments": [attachment]}


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<text>.*?)[\s#]*$")
_STAR_BULLET = re.compile(r"^(?P<indent>\s*)[*+]\s+")


def to_card_markdown(markdown: str) -> str:
    """Markdown within what a TextBlock renders: headings become bold, ``*``/``+`` bullets ``-``."""
    lines = []
    for line in markdown.splitlines():
        if heading := _HEADING.match(line):
            line = f"**{heading['text']}**" if heading["text"] else ""
        lines.append(_STAR_BULLET.sub(r"\g<indent>- ", line))
    return "\n".join(lines)


def card_problems(envelope: Any) -> list[str]:
    """Why Teams would fail this envelope after its 202; empty when it is valid."""
    if not isinstance(envelope, dict):
        return ["the payload must be a JSON object"]
    problems = []
    if envelope.get("type") != "message":
        problems.append('`type` must be "message"')
    attachments = envelope.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*problems, "`attachments` must be a non-empty list"]
    for index, attachment in enumerate(attachments):
        problems += _attachment_problems(f"attachments[{index}]", attachment)
    size = len(json.dumps(envelope, ensure_ascii=False).encode())
    if size > MAX_CARD_BYTES:
        problems.append(f"the card is {size / 1024:.1f} KB; Teams takes about 28 KB")
    return problems


def _attachment_problems(where: str, attachment: Any) -> list[str]:
    if not isinstance(attachment, dict):
        return [f"{where} must be an object"]
    problems = []
    if attachment.get("contentType") != CARD_CONTENT_TYPE:
        problems.append(f"{where}.contentType must be {CARD_CONTENT_TYPE}")
    content = attachment.get("content")
    if not isinstance(content, dict):
        return [*problems, f"{where}.content must be an Adaptive Card object"]
    if content.get("type") != "AdaptiveCard":
        problems.append(f'{where}.content.type must be "AdaptiveCard"')
    if not _VERSION.match(str(content.get("version", ""))):
        problems.append(f"{where}.content.version must be 1.0 to 1.5 (Teams' range)")
    body = content.get("body")
    if not isinstance(body, list) or not body:
        return [*problems, f"{where}.content.body must be a non-empty list (nothing to show)"]
    for index, element in enumerate(body):
        problems += _element_problems(f"{where}.content.body[{index}]", element)
    return problems


def _element_problems(where: str, element: Any) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"{where} needs a `type`"]
    if element["type"] != "TextBlock":
        return []
    problems = []
    text = element.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where} (TextBlock) needs a non-empty `text`")
    if not isinstance(element.get("wrap", False), bool):
        problems.append(f"{where}.wrap must be true or false")
    return problems
