"""`/executions`: Dagster runs of playbooks, read from the Dagster instance and driven through
the webserver (cancel, retry from failure). No copy of run state is kept here."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.catalog import Entry
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import Problem, responses
from partnerships_orchestrator.api.response_cache import Rendered
from partnerships_orchestrator.api.schemas import (
    ExecutionAccepted,
    ExecutionDetail,
    ExecutionSummary,
    Page,
    as_json,
)
from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.tokens import Token

router = APIRouter(prefix="/executions", tags=["executions"])
Ctx = Annotated[ApiContext, Depends(context)]
Viewer = Annotated[Token, Depends(role("viewer"))]
Operator = Annotated[Token, Depends(role("operator"))]

REQUESTED_BY_TAG = "partnerships/requested_by"
STATUSES = [s.value for s in dg.DagsterRunStatus]
CANCELLABLE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}
RETRYABLE = {"FAILURE", "CANCELED"}


def _time(value: float | datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)


def _summary(record: RunRecord) -> dict[str, Any]:
    run = record.dagster_run
    trigger = run.tags.get(naming.TRIGGER_TAG)
    try:
        parsed = json.loads(trigger) if trigger else None
    except ValueError:
        parsed = {"raw": trigger}
    return {
        "id": run.run_id,
        "playbook": run.tags.get(naming.PLAYBOOK_TAG),
        "job": run.job_name,
        "status": run.status.value,
        "created_at": _time(record.create_timestamp),
        "started_at": _time(record.start_time),
        "ended_at": _time(record.end_time),
        "trigger": parsed if isinstance(parsed, dict) else {"value": parsed},
        "parent_execution_id": run.parent_run_id,
        "root_execution_id": run.root_run_id,
    }


def _visible_ids(entries: dict[str, Entry], token: Token) -> list[str]:
    return sorted(
        doc_id
        for doc_id, entry in entries.items()
        if entry.model.kind == "playbook" and token.sees(entry.model.owners)
    )


IfNoneMatch = Annotated[
    str | None,
    Header(description="`ETag`s of answers the caller holds: 304 (no body) if it is still one."),
]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the answer is still the one of the `ETag` sent."}
}


def _answer(answer: Rendered, if_none_match: str | None) -> Response:
    headers = {"ETag": answer.etag, "Cache-Control": "private, no-cache"}
    if if_none_match is not None:
        held = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        if answer.etag in held or "*" in held:
            return Response(status_code=304, headers=headers)
    return Response(content=answer.body, media_type="application/json", headers=headers)


def visible_run(
    ctx: ApiContext, token: Token, run_id: str, entries: dict[str, Entry] | None = None
) -> RunRecord:
    """The run, if it is a playbook run the caller's teams own; 404 otherwise."""
    records = (
        ctx.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1) if run_id else []
    )
    missing = Problem(404, "not-found", f"no execution `{run_id}` visible to this token")
    if not records:
        raise missing
    run = records[0].dagster_run
    playbook = run.tags.get(naming.PLAYBOOK_TAG)
    if playbook is None:
        raise missing
    entry = (entries if entries is not None else ctx.catalog.entries()).get(playbook)
    owners = (
        list(entry.model.owners)
        if entry is not None
        else [o for o in run.tags.get(naming.OWNERS_TAG, "").split(",") if o]
    )
    if not token.sees(owners):
        raise missing
    return records[0]


@router.get(
    "",
    response_model=Page[ExecutionSummary],
    responses={**NOT_MODIFIED, **responses(401, 404, 422, 429)},
)
async def list_executions(
    ctx: Ctx,
    token: Viewer,
    playbook: Annotated[str | None, Query(description="Only this playbook's runs.")] = None,
    status: Annotated[
        list[str] | None, Query(description=f"Run statuses: {', '.join(STATUSES)}.")
    ] = None,
    created_after: Annotated[datetime | None, Query()] = None,
    created_before: Annotated[datetime | None, Query()] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Runs of the playbooks the caller's teams own, newest first."""
    for value in status or []:
        if value not in STATUSES:
            raise Problem(
                422, "invalid-request", f"unknown status {value!r}; one of {', '.join(STATUSES)}"
            )
    version, entries = await ctx.snapshot()
    ids = _visible_ids(entries, token)
    if playbook is not None:
        if playbook not in ids:
            raise Problem(404, "not-found", f"no playbook `{playbook}` visible to this token")
        ids = [playbook]
    statuses = sorted(set(status or []))
    key = (
        "list",
        version,
        tuple(ids),
        tuple(statuses),
        created_after,
        created_before,
        cursor,
        limit,
    )
    answer = await ctx.responses.served(
        key,
        ctx.files.for_runs(),
        lambda: as_json(
            Page[ExecutionSummary],
            _list(ctx, ids, statuses, created_after, created_before, cursor, limit),
        ),
    )
    return _answer(answer, if_none_match)


def _list(
    ctx: ApiContext,
    ids: list[str],
    statuses: list[str],
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    if not ids:
        return {"items": [], "total": 0, "next_cursor": None}
    filters = dg.RunsFilter(
        tags={naming.PLAYBOOK_TAG: ids},
        statuses=[dg.DagsterRunStatus(s) for s in statuses],
        created_after=created_after,
        created_before=created_before,
    )
    records = ctx.instance.get_run_records(filters, limit=limit, cursor=cursor)
    # an unknown cursor reads as an empty page; only then is it worth a second query
    if (
        not records
        and cursor is not None
        and not ctx.instance.get_run_records(dg.RunsFilter(run_ids=[cursor]), limit=1)
    ):
        raise Problem(422, "invalid-request", f"unknown cursor {cursor!r}")
    more = len(records) == limit
    return {
        "items": [_summary(r) for r in records],
        "total": None,
        "next_cursor": records[-1].dagster_run.run_id if more else None,
    }


@router.get(
    "/{run_id}",
    response_model=ExecutionDetail,
    responses={**NOT_MODIFIED, **responses(401, 404, 429)},
)
async def get_execution(
    ctx: Ctx,
    token: Viewer,
    run_id: str,
    logs: Annotated[
        int, Query(ge=0, le=5000, description="At most this many log lines (newest).")
    ] = 200,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A run: status, timing, each step's status and attempts, log lines, messages sent and
    dead letters."""
    version, entries = await ctx.snapshot()
    key = ("get", version, frozenset(token.teams), run_id, logs)
    answer = await ctx.responses.served(
        key,
        ctx.files.for_run(run_id),
        lambda: as_json(ExecutionDetail, _detail(ctx, token, run_id, logs, entries)),
        ctx.files.run_witness(run_id),
    )
    return _answer(answer, if_none_match)


def _detail(
    ctx: ApiContext, token: Token, run_id: str, logs: int, entries: dict[str, Entry]
) -> dict[str, Any]:
    record = visible_run(ctx, token, run_id, entries)
    run = record.dagster_run
    log = ctx.run_events.log(run, logs)
    steps = [
        {
            "key": s.step_key,
            "status": s.status.value if s.status else None,
            "attempts": s.attempts or 1,
            "started_at": _time(s.start_time),
            "ended_at": _time(s.end_time),
        }
        for s in log.steps
    ]
    lines = [_log_line(record.event_log_entry) for record in log.newest(logs)]
    root = run.root_run_id or run.run_id
    sent = [
        jsonable({k: v for k, v in d.items() if k != "receipt"})
        for d in ctx.state.sent_by(run_id, root)
    ]
    letters = [jsonable(d) for d in ctx.state.dead_letters(run_id=run_id)]
    return {
        **_summary(record),
        "steps": steps,
        "logs": lines,
        "messages_sent": sent,
        "dead_letters": letters,
    }


def _log_line(event: Any) -> dict[str, Any]:
    dagster_event = event.dagster_event
    message = event.user_message or (dagster_event.message if dagster_event else "") or ""
    error = getattr(getattr(dagster_event, "event_specific_data", None), "error", None)
    if error is not None and getattr(error, "message", None):
        message = f"{message}\n{error.message.strip()}"
    return {
        "at": _time(event.timestamp),
        "level": logging.getLevelName(event.level),
        "step": event.step_key,
        "event": dagster_event.event_type.name if dagster_event else None,
        "message": message,
    }


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=ExecutionAccepted,
    responses=responses(401, 403, 404, 409, 429),
)
def cancel_execution(request: Request, ctx: Ctx, token: Operator, run_id: str) -> dict[str, Any]:
    """Cancel a queued or running execution."""
    run = visible_run(ctx, token, run_id).dagster_run
    request.state.playbook = run.tags.get(naming.PLAYBOOK_TAG)
    if run.status.value not in CANCELLABLE:
        raise Problem(
            409,
            "conflict",
            f"execution `{run_id}` is {run.status.value}; only queued or running ones can be cancelled",
        )
    ctx.webserver.terminate(run_id)
    return {
        "execution_id": run_id,
        "playbook": run.tags.get(naming.PLAYBOOK_TAG, ""),
        "status": "CANCELING",
    }


@router.post(
    "/{run_id}/retry",
    status_code=202,
    response_model=ExecutionAccepted,
    responses=responses(401, 403, 404, 409, 429),
)
def retry_execution(request: Request, ctx: Ctx, token: Operator, run_id: str) -> dict[str, Any]:
    """Re-execute from failure: steps that succeeded don't run again, and messages already
    delivered are not sent again."""
    run = visible_run(ctx, token, run_id).dagster_run
    playbook = run.tags.get(naming.PLAYBOOK_TAG, "")
    request.state.playbook = playbook
    if run.status.value not in RETRYABLE:
        raise Problem(
            409,
            "conflict",
            f"execution `{run_id}` is {run.status.value}; only failed or cancelled ones can be retried",
        )
    new_id = ctx.webserver.reexecute_from_failure(run_id, {REQUESTED_BY_TAG: token.id})
    request.state.execution = new_id
    return {"execution_id": new_id, "playbook": playbook, "status": "QUEUED"}
