"""`/audit`: the audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import responses
from partnerships_orchestrator.api.schemas import AuditRow, Page
from partnerships_orchestrator.store.tokens import Token

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=Page[AuditRow], responses=responses(401, 403, 422, 429))
def list_audit(
    ctx: Annotated[ApiContext, Depends(context)],
    token: Annotated[Token, Depends(role("admin"))],
    token_id: str | None = None,
    playbook: str | None = None,
    execution: str | None = None,
    outcome: Literal["ok", "denied", "refused", "failed"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[
        int, Query(ge=0, le=2**53, description="`next_cursor` of the previous page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Every mutating call and execution request, oldest first: who, what, when, from where,
    and how it ended."""
    rows = ctx.audit.query(
        token_id=token_id,
        playbook=playbook,
        execution=execution,
        outcome=outcome,
        since=since,
        until=until,
        after_id=cursor,
        limit=limit,
    )
    more = len(rows) == limit
    return {"items": rows, "total": None, "next_cursor": str(rows[-1]["id"]) if more else None}
