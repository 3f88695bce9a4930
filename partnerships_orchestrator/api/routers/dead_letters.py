"""`/dead-letters`: failures that ended in skip, abort or exhausted retries; redrive one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import Problem, responses
from partnerships_orchestrator.api.schemas import DeadLetter, Page, Redriven
from partnerships_orchestrator.store.tokens import Token

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])
Ctx = Annotated[ApiContext, Depends(context)]
Viewer = Annotated[Token, Depends(role("viewer"))]
Operator = Annotated[Token, Depends(role("operator"))]
LetterId = Annotated[int, Path(ge=1, le=2**53, description="The dead letter's number.")]


def _visible_letter(ctx: ApiContext, token: Token, letter_id: LetterId) -> dict[str, Any]:
    letter = ctx.state.dead_letter(letter_id)
    entry = ctx.catalog.entry(letter["playbook"]) if letter else None
    if letter is None or entry is None or not token.sees(entry.model.owners):
        raise Problem(404, "not-found", f"no dead letter {letter_id} visible to this token")
    return {k: v for k, v in letter.items() if k != "scope"}


@router.get("", response_model=Page[DeadLetter], responses=responses(401, 422, 429))
def list_dead_letters(
    ctx: Ctx,
    token: Viewer,
    playbook: str | None = None,
    execution: Annotated[str | None, Query(description="Only this execution's.")] = None,
    status: Annotated[str | None, Query(pattern="^(open|redriven)$")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    entries = ctx.catalog.entries()
    letters = [
        d
        for d in ctx.state.dead_letters(playbook=playbook, run_id=execution, status=status)
        if d["playbook"] in entries and token.sees(entries[d["playbook"]].model.owners)
    ]
    page = letters[offset : offset + limit]
    more = offset + limit < len(letters)
    return {
        "items": page,
        "total": len(letters),
        "next_cursor": str(offset + limit) if more else None,
    }


@router.get("/{letter_id}", response_model=DeadLetter, responses=responses(401, 404, 422, 429))
def get_dead_letter(ctx: Ctx, token: Viewer, letter_id: LetterId) -> dict[str, Any]:
    return _visible_letter(ctx, token, letter_id)


@router.post(
    "/{letter_id}/redrive",
    response_model=Redriven,
    responses=responses(401, 403, 404, 409, 422, 429),
)
def redrive_dead_letter(
    request: Request, ctx: Ctx, token: Operator, letter_id: LetterId
) -> dict[str, Any]:
    """Run the dead letter's step again with the scope it failed with (messages already
    delivered are not sent again)."""
    letter = _visible_letter(ctx, token, letter_id)
    request.state.playbook = letter["playbook"]
    request.state.execution = letter["run_id"] or None
    done = ctx.project.redrive(letter_id)
    return {
        "id": done.letter_id,
        "playbook": done.playbook,
        "step": done.step,
        "output": done.output,
    }
