"""`POST /webhooks/{playbook_id}`: a signed call (Standard Webhooks) stored once in the durable
inbox and answered 202 before any work runs. The API then launches its run through the
webserver at once; the playbook's inbox sensor starts any call the API could not (run key = the
webhook id), so a retried delivery, a second sensor tick or a dead API never runs it twice and
never loses it (see :mod:`partnerships_orchestrator.store.webhook_launches`)."""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import dagster as dg
from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from partnerships_orchestrator.api.body_limits import StrictJSONError, strict_json
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import Problem, responses
from partnerships_orchestrator.api.schemas import WebhookAccepted
from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.ops import webhook_secret
from partnerships_orchestrator.compiler.triggers import WEBHOOK_TAG, webhook_run_request
from partnerships_orchestrator.errors import InputError, PartnershipsError
from partnerships_orchestrator.spec.models import Playbook, WebhookTrigger
from partnerships_orchestrator.store.webhook_launches import WebhookLaunches

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
Ctx = Annotated[ApiContext, Depends(context)]

MAX_WAIT = 60.0
log = logging.getLogger("partnerships.api")
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

SIGNED_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The event, signed per Standard Webhooks (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature` headers). Keys naming the playbook's inputs "
        "fill them.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "parameters": [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ],
}


def _verifier(ctx: ApiContext, playbook_id: str) -> tuple[Playbook, Webhook]:
    entry = ctx.catalog.entry(playbook_id)
    playbook = entry.model if entry else None
    if not isinstance(playbook, Playbook) or not any(
        isinstance(t, WebhookTrigger) for t in playbook.triggers
    ):
        raise Problem(404, "not-found", f"no playbook `{playbook_id}` with a webhook trigger")
    try:
        return playbook, Webhook(webhook_secret(playbook, ctx.state))
    except (PartnershipsError, binascii.Error, ValueError, RuntimeError) as exc:
        raise Problem(
            503,
            "not-ready",
            f"the webhook key of `{playbook_id}` is unusable: {type(exc).__name__}",
        ) from None


def _payload(raw: bytes) -> Any:
    try:
        value = strict_json(raw)
    except StrictJSONError:
        return {"body": raw.decode("utf-8", errors="replace")}
    return value if isinstance(value, dict) else {"body": value}


@router.post(
    "/{playbook_id}",
    status_code=202,
    response_model=WebhookAccepted,
    openapi_extra=SIGNED_BODY,
    responses={
        200: {"model": WebhookAccepted, "description": "A duplicate, or finished within `wait`."},
        **responses(401, 404, 413, 422, 503),
    },
)
async def receive_webhook(
    request: Request,
    response: Response,
    background: BackgroundTasks,
    ctx: Ctx,
    playbook_id: str,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the run to finish (at most 60)."),
    ] = 0,
) -> dict[str, Any]:
    """Verify, store once, answer 202 with the event id, then start the run."""
    request.state.playbook = playbook_id
    raw = await request.body()
    playbook, verifier = await run_in_threadpool(_verifier, ctx, playbook_id)
    try:
        verifier.verify(raw, dict(request.headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise Problem(401, "invalid-signature", str(exc)) from None
    webhook_id = request.headers["webhook-id"]
    request.state.detail = f"webhook-id {webhook_id}"
    payload = _payload(raw)
    launches = WebhookLaunches(ctx.settings.state_url)
    claimed = await run_in_threadpool(launches.claim, playbook.id, webhook_id)
    event_id = (
        await run_in_threadpool(ctx.state.add_to_inbox, playbook.id, webhook_id, payload)
        if claimed
        else None
    )
    answer: dict[str, Any] = {
        "event_id": event_id,
        "webhook_id": webhook_id,
        "playbook": playbook.id,
        "duplicate": event_id is None,
    }
    if event_id is None:
        response.status_code = 200
        return answer
    entry = {"webhook_id": webhook_id, "payload": payload, "received_at": datetime.now(UTC)}
    if wait <= 0:
        background.add_task(_launch, ctx, launches, playbook, entry)
        return answer
    await run_in_threadpool(_launch, ctx, launches, playbook, entry)
    run = await _await_run(ctx, webhook_id, time.monotonic() + wait)
    if run is not None:
        answer.update(execution_id=run.run_id, status=run.status.value)
        request.state.execution = run.run_id
        if run.status.value in FINISHED:
            response.status_code = 200
    return answer


def _launch(
    ctx: ApiContext, launches: WebhookLaunches, playbook: Playbook, entry: dict[str, Any]
) -> None:
    """Start the call's run now; on any failure leave it to the inbox sensor."""
    try:
        run = webhook_run_request(playbook, entry)
        run_id = ctx.webserver.launch(
            naming.job_name(playbook.id), dict(run.run_config or {}), dict(run.tags)
        )
    except (InputError, Problem) as exc:  # the sensor refuses or retries it, as without the API
        log.warning("webhook %s left to the inbox sensor: %s", entry["webhook_id"], exc)
        launches.release(playbook.id, entry["webhook_id"])
        return
    launches.launched(playbook.id, entry["webhook_id"], run_id)


async def _await_run(ctx: ApiContext, webhook_id: str, deadline: float) -> dg.DagsterRun | None:
    """The run the inbox sensor started for this call, once finished (or as it is at the
    deadline)."""
    run: dg.DagsterRun | None = None
    filters = dg.RunsFilter(tags={WEBHOOK_TAG: webhook_id})
    while True:
        runs = await run_in_threadpool(ctx.instance.get_runs, filters, None, 1)
        run = runs[0] if runs else None
        if (run is not None and run.status.value in FINISHED) or time.monotonic() >= deadline:
            return run
        await asyncio.sleep(0.2)
