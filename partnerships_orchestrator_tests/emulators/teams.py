"""A Microsoft Teams emulator: workflow (Power Automate) webhooks and legacy connector webhooks.

Follows API_CONTRACTS §6:

- ``POST /workflows/{id}/triggers/manual/paths/invoke?api-version=…&sp=…&sv=1.0&sig=…`` (also
  under ``/powerautomate/automations/direct/``): a wrong ``sig`` answers 401, an unknown workflow
  404, a body that is not JSON 400; anything else **202** with ``x-ms-workflow-run-id``, as the
  vendor does. The flow then runs: a valid Adaptive Card envelope posts to the workflow's channel
  (``posts``), an invalid one makes a failed run (``runs``) that nobody is told about.
- ``POST /webhookb2/{…}`` (legacy connector): 200 ``1``; 400 ``Summary or Text is required.``
  without text or attachments; ``fail_legacy(429, …)`` makes the next answers 200 with
  "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429…".
- Throttling: ``limit = (requests, seconds)`` or ``throttle(retry_after, …)`` answer 429 with an
  integer ``Retry-After`` (a legacy webhook says it in its 200 text instead).

``answers`` records every post's status; ``wait_for`` awaits a condition on them.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

_counter = itertools.count(1)
_CARD = "application/vnd.microsoft.card.adaptive"
_MAX_BYTES = 28 * 1024
_LEGACY_FAILURE = (
    "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error "
    "{status} with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=emulated.0.."
)


@dataclass
class FlowRun:
    """One workflow run started by an accepted request."""

    id: str
    workflow_id: str
    status: str  # "Succeeded" or "Failed"
    error: str | None
    payload: Any


@dataclass
class TeamsPost:
    """A card that reached a channel."""

    channel: str
    card: dict[str, Any]
    via: str  # "workflow" or "legacy"


@dataclass(frozen=True)
class Answer:
    via: str
    status: int
    text: str


@dataclass
class TeamsState:
    workflows: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (sig, channel)
    legacy: dict[str, str] = field(default_factory=dict)  # path -> channel
    limit: tuple[int, float] | None = None
    limiter: RateLimiter | None = None
    forced: list[int] = field(default_factory=list)  # Retry-After of the next 429s
    legacy_failures: list[int] = field(default_factory=list)
    runs: list[FlowRun] = field(default_factory=list)
    posts: list[TeamsPost] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)


class TeamsEmulator(Emulator[TeamsState]):
    name = "teams"

    def __init__(self) -> None:
        super().__init__(TeamsState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def add_workflow(self, channel: str = "Partner Ops", *, direct: bool = False) -> str:
        """A workflow webhook posting to ``channel``; its full URL, ``sig`` included."""
        workflow_id = secrets.token_hex(16)
        sig = secrets.token_urlsafe(32)
        with self.lock:
            self.state.workflows[workflow_id] = (sig, channel)
        prefix = "/powerautomate/automations/direct" if direct else ""
        return (
            f"{self.base_url}{prefix}/workflows/{workflow_id}/triggers/manual/paths/invoke"
            f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
        )

    def add_legacy_webhook(self, channel: str = "Partner Ops") -> str:
        """A legacy Office 365 connector URL for ``channel``."""
        tenant, group = secrets.token_hex(8), secrets.token_hex(8)
        path = f"/webhookb2/{group}@{tenant}/IncomingWebhook/{secrets.token_hex(16)}/{group}"
        with self.lock:
            self.state.legacy[path] = channel
        return f"{self.base_url}{path}"

    def throttle(self, *retry_after: int) -> None:
        """Answer the next posts with 429, one per ``Retry-After`` value."""
        with self.lock:
            self.state.forced.extend(retry_after)

    def fail_legacy(self, *statuses: int) -> None:
        """Make the next legacy posts answer 200 with a delivery failure naming ``statuses``."""
        with self.lock:
            self.state.legacy_failures.extend(statuses)

    @property
    def posts(self) -> list[TeamsPost]:
        with self.lock:
            return list(self.state.posts)

    @property
    def runs(self) -> list[FlowRun]:
        with self.lock:
            return list(self.state.runs)

    @property
    def answers(self) -> list[Answer]:
        with self.lock:
            return list(self.state.answers)

    def wait_for(self, predicate: Callable[[list[Answer]], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(answers)`` holds (True) or ``timeout`` passes (False)."""
        return self.wait_until(lambda state: predicate(list(state.answers)), timeout)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        invoke = "/workflows/{workflow_id}/triggers/manual/paths/invoke"
        return [
            Route(invoke, self._workflow, methods=["POST"]),
            Route(f"/powerautomate/automations/direct{invoke}", self._workflow, methods=["POST"]),
            Route("/webhookb2/{rest:path}", self._legacy, methods=["POST"]),
        ]

    async def _workflow(self, request: Request) -> Response:
        raw = await request.body()
        with self.lock:
            workflow = self.state.workflows.get(request.path_params["workflow_id"])
            if workflow is None:
                return self._answer("workflow", _error(404, "WorkflowNotFound", "not found"))
            sig, channel = workflow
            if request.query_params.get("sig") != sig:
                return self._answer(
                    "workflow",
                    _error(401, "DirectApiInvalidAuthorizationSignature", "invalid signature"),
                )
            retry_after = self._throttled()
            if retry_after is not None:
                response = _error(
                    429,
                    "TooManyRequests",
                    "rate limit exceeded",
                    {"Retry-After": str(retry_after)},
                )
                return self._answer("workflow", response)
            try:
                payload = json.loads(raw)
            except ValueError:
                return self._answer(
                    "workflow", _error(400, "InvalidRequestContent", "not valid JSON")
                )
            run_id = f"08584{next(_counter):015d}CU00"
            self._run(run_id, request.path_params["workflow_id"], channel, payload, raw)
            response = Response(status_code=202, headers={"x-ms-workflow-run-id": run_id})
            return self._answer("workflow", response)

    async def _legacy(self, request: Request) -> Response:
        raw = await request.body()
        with self.lock:
            channel = self.state.legacy.get(request.url.path)
            if channel is None:
                return self._answer("legacy", PlainTextResponse("Bad Request", 400))
            retry_after = self._throttled()
            if retry_after is not None:
                text = _LEGACY_FAILURE.format(status=429)
                response = PlainTextResponse(text, headers={"Retry-After": str(retry_after)})
                return self._answer("legacy", response)
            if self.state.legacy_failures:
                text = _LEGACY_FAILURE.format(status=self.state.legacy_failures.pop(0))
                return self._answer("legacy", PlainTextResponse(text))
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            if not isinstance(payload, dict) or not (
                payload.get("text") or payload.get("attachments")
            ):
                return self._answer(
                    "legacy", PlainTextResponse("Summary or Text is required.", 400)
                )
            error = _card_error(payload, len(raw)) if "attachments" in payload else None
            if error is not None:
                return self._answer("legacy", PlainTextResponse(error, 400))
            self.state.posts.append(TeamsPost(channel, _card(payload), "legacy"))
            return self._answer("legacy", PlainTextResponse("1"))

    # -- internals (callers hold the lock) ---------------------------------------------------

    def _run(self, run_id: str, workflow_id: str, channel: str, payload: Any, raw: bytes) -> None:
        """The flow run after a 202: post the card, or fail where nobody sees it."""
        error = _card_error(payload, len(raw))
        status = "Failed" if error else "Succeeded"
        self.state.runs.append(FlowRun(run_id, workflow_id, status, error, payload))
        if error is None:
            self.state.posts.append(TeamsPost(channel, _card(payload), "workflow"))

    def _throttled(self) -> int | None:
        state = self.state
        if state.forced:
            return state.forced.pop(0)
        if state.limit is None:
            return None
        if state.limiter is None:
            state.limiter = RateLimiter(*state.limit, self.clock)
        decision = state.limiter.hit()
        return None if decision.allowed else max(1, math.ceil(decision.retry_after))

    def _answer(self, via: str, response: Response) -> Response:
        text = bytes(response.body).decode(errors="replace")
        self.state.answers.append(Answer(via, response.status_code, text))
        self.changed.notify_all()
        return response


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _card(payload: dict[str, Any]) -> dict[str, Any]:
    attachments = payload.get("attachments") or [{}]
    content = attachments[0].get("content")
    return content if isinstance(content, dict) else {"text": payload.get("text")}


def _card_error(payload: Any, size: int) -> str | None:
    """Why the Teams flow would fail on this payload (checked independently of the connector)."""
    if size > _MAX_BYTES:
        return "MessageSizeTooBig: the message exceeds 28 KB"
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return "InvalidPayload: type must be 'message'"
    attachments = payload.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "InvalidPayload: attachments missing"
    for attachment in attachments:
        if not isinstance(attachment, dict) or attachment.get("contentType") != _CARD:
            return "InvalidPayload: contentType must be application/vnd.microsoft.card.adaptive"
        content = attachment.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            return "InvalidCard: content.type must be AdaptiveCard"
        body = content.get("body")
        if not isinstance(body, list) or not body:
            return "InvalidCard: the card has no body"
        for element in body:
            if not isinstance(element, dict) or not element.get("type"):
                return "InvalidCard: an element has no type"
            if element["type"] == "TextBlock" and not str(element.get("text") or "").strip():
                return "InvalidCard: a TextBlock has no text"
    return None
