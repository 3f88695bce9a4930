"""`/outbox`: what the sandbox outbox delivered (no real provider configured)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import responses
from partnerships_orchestrator.api.schemas import OutboxMessage, Page
from partnerships_orchestrator.store.tokens import Token

router = APIRouter(prefix="/outbox", tags=["outbox"])


@router.get("", response_model=Page[OutboxMessage], responses=responses(401, 422, 429))
def list_outbox(
    ctx: Annotated[ApiContext, Depends(context)],
    token: Annotated[Token, Depends(role("viewer"))],
    execution: Annotated[str | None, Query(description="Only this execution's messages.")] = None,
    channel: Literal["email", "sms", "slack", "teams"] | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Messages of the playbooks the caller's teams own, oldest first."""
    entries = ctx.catalog.entries()
    messages = [
        m
        for m in ctx.state.outbox(run_id=execution, channel=channel)
        if m["playbook"] in entries and token.sees(entries[m["playbook"]].model.owners)
    ]
    page = messages[offset : offset + limit]
    more = offset + limit < len(messages)
    return {
        "items": page,
        "total": len(messages),
        "next_cursor": str(offset + limit) if more else None,
    }
