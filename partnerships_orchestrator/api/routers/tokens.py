"""`/tokens`: API tokens, for admins (the same store as `partnerships token`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import Problem, responses
from partnerships_orchestrator.api.schemas import Strict, Timestamp
from partnerships_orchestrator.store.tokens import ROLES, Token, TokenError

router = APIRouter(prefix="/tokens", tags=["tokens"])
Ctx = Annotated[ApiContext, Depends(context)]
Admin = Annotated[Token, Depends(role("admin"))]


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    teams: list[str]
    rate_limit: int | None
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret: shown this once, only its hash is kept.")


class TokenRequest(Strict):
    role: str = Field(description=f"One of {', '.join(ROLES)}.")
    teams: list[str] = Field(min_length=1, max_length=50)
    name: str = Field("", max_length=200)
    rate_limit: int | None = Field(None, ge=1, le=1_000_000, description="Requests a minute.")


@router.get("", response_model=list[TokenOut], responses=responses(401, 403, 429))
def list_tokens(ctx: Ctx, token: Admin) -> list[dict[str, Any]]:
    return [t.as_dict() for t in ctx.tokens.list()]


@router.post(
    "",
    status_code=201,
    response_model=TokenCreated,
    responses=responses(400, 401, 403, 413, 415, 422, 429),
)
def create_token(ctx: Ctx, token: Admin, body: TokenRequest) -> dict[str, Any]:
    try:
        made, secret = ctx.tokens.create(
            role=body.role, teams=body.teams, name=body.name, rate_limit=body.rate_limit
        )
    except TokenError as exc:
        raise Problem(422, "invalid-request", str(exc)) from None
    return {**made.as_dict(), "token": secret}


@router.delete("/{token_id}", response_model=TokenOut, responses=responses(401, 403, 404, 429))
def revoke_token(request: Request, ctx: Ctx, token: Admin, token_id: str) -> dict[str, Any]:
    if ctx.tokens.get(token_id) is None:
        raise Problem(404, "not-found", f"no token `{token_id}`")
    try:
        revoked = ctx.tokens.revoke(token_id)
        return revoked.as_dict()
    except TokenError as exc:
        raise Problem(409, "conflict", str(exc)) from None
