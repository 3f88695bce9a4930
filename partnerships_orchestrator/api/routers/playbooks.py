"""`/playbooks`: list, read, create, update, delete (each change a revision), execute."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from partnerships_orchestrator.api.auth import role
from partnerships_orchestrator.api.body_limits import YAML_TYPES
from partnerships_orchestrator.api.catalog import Entry, document_id
from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.problems import Problem, responses
from partnerships_orchestrator.api.schemas import (
    ExecuteRequest,
    ExecutionAccepted,
    Page,
    PlaybookDetail,
    PlaybookSummary,
    Revision,
    as_json,
)
from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.inputs import check_inputs
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.tokens import ALL_TEAMS, Token

router = APIRouter(prefix="/playbooks", tags=["playbooks"])
Ctx = Annotated[ApiContext, Depends(context)]
Viewer = Annotated[Token, Depends(role("viewer"))]
Operator = Annotated[Token, Depends(role("operator"))]
Editor = Annotated[Token, Depends(role("editor"))]

# Answers read from the catalog alone (its documents, the store's revisions) change only with
# the catalog's version, part of their keys: no file to ask
CATALOG_ONLY: tuple[str, ...] = ()

DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One playbook document, exactly as it would stand in a file.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PlaybookDocument"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _summary(ctx: ApiContext, entry: Entry) -> dict[str, Any]:
    model = entry.model
    revision = None
    if entry.origin == "store":
        revisions = ctx.catalog.store.revisions(model.id)
        revision = revisions[-1].number if revisions else None
    triggers = [t.type for t in getattr(model, "triggers", [])]
    steps = getattr(model, "steps", None)
    return {
        "id": model.id,
        "kind": model.kind,
        "name": model.name,
        "description": model.description,
        "owners": list(model.owners),
        "tags": dict(model.tags),
        "triggers": triggers or (["manual"] if model.kind == "playbook" else []),
        "steps": len(steps) if steps is not None else None,
        "origin": entry.origin,
        "file": _relative(ctx, entry),
        "revision": revision,
    }


def _relative(ctx: ApiContext, entry: Entry) -> str:
    base = (
        ctx.settings.playbook_store_dir if entry.origin == "store" else ctx.settings.playbooks_dir
    )
    name = entry.file.removeprefix(str(base)).lstrip("/")
    return f"store/{name}" if entry.origin == "store" else f"playbooks/{name}"


def _detail(ctx: ApiContext, entry: Entry) -> dict[str, Any]:
    out = _summary(ctx, entry)
    out["document"] = jsonable(entry.model.model_dump(mode="json", exclude_none=True))
    out["inputs"] = jsonable(
        {
            k: v.model_dump(mode="json", exclude_none=True)
            for k, v in getattr(entry.model, "inputs", {}).items()
        }
    )
    if entry.origin == "store":
        revisions = ctx.catalog.store.revisions(entry.model.id)
        out["text"] = revisions[-1].text if revisions else None
    return out


@router.get("", response_model=Page[PlaybookSummary], responses=responses(401, 422, 429))
async def list_playbooks(
    ctx: Ctx,
    token: Viewer,
    kind: Annotated[
        str | None, Query(description="Document kind, e.g. `playbook`, `dataset`.")
    ] = None,
    owner: Annotated[str | None, Query(description="Only documents this team owns.")] = None,
    text: Annotated[str | None, Query(description="Text in the id, name or description.")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Documents the caller's teams own, sorted by id."""
    version, entries = await ctx.snapshot()
    key = ("playbooks", version, frozenset(token.teams), kind, owner, text, offset, limit)
    answer = await ctx.responses.served(
        key,
        CATALOG_ONLY,
        lambda: as_json(
            Page[PlaybookSummary], _list(ctx, token, entries, kind, owner, text, offset, limit)
        ),
    )
    return Response(content=answer.body, media_type="application/json")


def _list(
    ctx: ApiContext,
    token: Token,
    entries: dict[str, Entry],
    kind: str | None,
    owner: str | None,
    text: str | None,
    offset: int,
    limit: int,
) -> dict[str, Any]:
    found = []
    needle = text.lower() if text else None
    for doc_id, entry in sorted(entries.items()):
        model = entry.model
        if not token.sees(model.owners):
            continue
        if kind and model.kind != kind:
            continue
        if owner and owner not in model.owners:
            continue
        if needle and not any(
            needle in (value or "").lower() for value in (doc_id, model.name, model.description)
        ):
            continue
        found.append(entry)
    page = found[offset : offset + limit]
    more = offset + limit < len(found)
    return {
        "items": [_summary(ctx, e) for e in page],
        "total": len(found),
        "next_cursor": str(offset + limit) if more else None,
    }


@router.get("/{playbook_id}", response_model=PlaybookDetail, responses=responses(401, 404, 429))
async def get_playbook(ctx: Ctx, token: Viewer, playbook_id: str) -> Response:
    version, entries = await ctx.snapshot()
    key = ("playbook", version, frozenset(token.teams), playbook_id)
    answer = await ctx.responses.served(
        key,
        CATALOG_ONLY,
        lambda: as_json(PlaybookDetail, _detail(ctx, ctx.visible(token, playbook_id, entries))),
    )
    return Response(content=answer.body, media_type="application/json")


async def _document(request: Request) -> tuple[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = "yaml" if media in YAML_TYPES else "json"
    raw = await request.body()
    if not raw.strip():
        raise Problem(400, "bad-request", "the body is empty; send the playbook document")
    try:
        return raw.decode("utf-8"), fmt
    except UnicodeDecodeError:
        raise Problem(400, "bad-request", "the body is not UTF-8") from None


def _check_owners(token: Token, playbook: Playbook) -> None:
    if not token.sees(playbook.owners):
        raise Problem(
            422,
            "invalid-playbook",
            f"`owners` must include one of the token's teams ({', '.join(token.teams)})",
            problems=[
                {
                    "file": "<request body>",
                    "line": 1,
                    "column": 1,
                    "path": "owners",
                    "message": f"owners {playbook.owners} include none of {list(token.teams)}",
                    "hint": f"add `{token.teams[0]}` to `owners`",
                }
            ],
        )


def _refuse_file_backed(ctx: ApiContext, playbook_id: str, verb: str) -> None:
    file = ctx.catalog.file_backed(playbook_id)
    if file is not None:
        raise Problem(
            409,
            "conflict",
            f"`{playbook_id}` is defined by the file {file}: files in playbooks/ are read-only "
            f"sources from git and cannot be {verb} through the API; change the file instead",
        )


def _saved(ctx: ApiContext, request: Request, playbook_id: str) -> None:
    request.state.playbook = playbook_id
    ctx.catalog.invalidate()
    ctx.webserver.reload() if ctx.webserver.url else None


@router.post(
    "",
    status_code=201,
    response_model=PlaybookDetail,
    openapi_extra=DOCUMENT_BODY,
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429),
)
async def create_playbook(
    request: Request, ctx: Ctx, token: Editor, response: Response
) -> dict[str, Any]:
    """Add a playbook to the playbook store (JSON, or YAML with `Content-Type: application/yaml`)."""
    text, fmt = await _document(request)
    return await run_in_threadpool(_create, ctx, token, request, response, text, fmt)


def _create(
    ctx: ApiContext, token: Token, request: Request, response: Response, text: str, fmt: str
) -> dict[str, Any]:
    claimed = document_id(text, fmt)
    if claimed is not None:
        request.state.playbook = claimed
        _refuse_file_backed(ctx, claimed, "replaced")
        if ctx.catalog.store.holds(claimed):
            raise Problem(
                409, "conflict", f"playbook `{claimed}` exists; PUT /playbooks/{claimed} changes it"
            )
    playbook = _validated(ctx, text, fmt, None)
    request.state.playbook = playbook.id
    _check_owners(token, playbook)
    ctx.catalog.store.save(playbook.id, text, fmt, token.id)
    _saved(ctx, request, playbook.id)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{playbook.id}"
    return _detail(ctx, ctx.visible(token, playbook.id))


def _validated(ctx: ApiContext, text: str, fmt: str, expected: str | None) -> Playbook:
    return ctx.catalog.check(text, fmt, expected)


@router.put(
    "/{playbook_id}",
    response_model=PlaybookDetail,
    openapi_extra=DOCUMENT_BODY,
    responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
)
async def update_playbook(
    request: Request, ctx: Ctx, token: Editor, playbook_id: str
) -> dict[str, Any]:
    """Replace a store playbook with a new revision (files in playbooks/ answer 409)."""
    text, fmt = await _document(request)
    return await run_in_threadpool(_update, ctx, token, request, playbook_id, text, fmt)


def _update(
    ctx: ApiContext, token: Token, request: Request, playbook_id: str, text: str, fmt: str
) -> dict[str, Any]:
    _refuse_file_backed(ctx, playbook_id, "changed")
    entry = ctx.catalog.entry(playbook_id)
    hidden = entry is not None and not token.sees(entry.model.owners)
    unowned = entry is None and ALL_TEAMS not in token.teams  # stored, but invalid right now
    if not ctx.catalog.store.holds(playbook_id) or hidden or unowned:
        raise Problem(404, "not-found", f"no playbook `{playbook_id}` visible to this token")
    playbook = _validated(ctx, text, fmt, playbook_id)
    _check_owners(token, playbook)
    ctx.catalog.store.save(playbook_id, text, fmt, token.id)
    _saved(ctx, request, playbook_id)
    return _detail(ctx, ctx.visible(token, playbook_id))


@router.delete(
    "/{playbook_id}", response_model=Revision, responses=responses(401, 403, 404, 409, 429)
)
def delete_playbook(request: Request, ctx: Ctx, token: Editor, playbook_id: str) -> dict[str, Any]:
    """Remove a store playbook (its revisions stay); files in playbooks/ answer 409."""
    _refuse_file_backed(ctx, playbook_id, "deleted")
    entry = ctx.catalog.entry(playbook_id)
    if entry is None or entry.origin != "store" or not token.sees(entry.model.owners):
        raise Problem(404, "not-found", f"no playbook `{playbook_id}` visible to this token")
    revision = ctx.catalog.store.delete(playbook_id, token.id)
    _saved(ctx, request, playbook_id)
    return revision.as_dict(with_text=False)


@router.get(
    "/{playbook_id}/revisions",
    response_model=list[Revision],
    responses=responses(401, 404, 429),
)
def list_revisions(ctx: Ctx, token: Viewer, playbook_id: str) -> list[dict[str, Any]]:
    """Every revision of a store playbook, oldest first (a file's history is in git)."""
    ctx.visible(token, playbook_id)
    return [r.as_dict(with_text=False) for r in ctx.catalog.store.revisions(playbook_id)]


@router.get(
    "/{playbook_id}/revisions/{number}",
    response_model=Revision,
    responses=responses(401, 404, 422, 429),
)
def get_revision(
    ctx: Ctx, token: Viewer, playbook_id: str, number: Annotated[int, Path(ge=1, le=2**53)]
) -> dict[str, Any]:
    ctx.visible(token, playbook_id)
    revision = ctx.catalog.store.revision(playbook_id, number)
    if revision is None:
        raise Problem(404, "not-found", f"playbook `{playbook_id}` has no revision {number}")
    return revision.as_dict()


@router.post(
    "/{playbook_id}/execute",
    status_code=202,
    response_model=ExecutionAccepted,
    responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
)
def execute_playbook(
    request: Request,
    ctx: Ctx,
    token: Operator,
    playbook_id: str,
    body: ExecuteRequest | None = None,
) -> dict[str, Any]:
    """Start a run through Dagster; inputs are checked first (422 names each bad one)."""
    request.state.playbook = playbook_id
    entry = ctx.visible(token, playbook_id)
    if not isinstance(entry.model, Playbook):
        raise Problem(409, "conflict", f"`{playbook_id}` is a {entry.model.kind}, not a playbook")
    inputs = check_inputs(entry.model, (body or ExecuteRequest()).inputs)
    trigger = {"type": "manual", "via": "api", "token": token.id}
    run_id = ctx.webserver.launch(
        naming.job_name(playbook_id),
        {k: v for k, v in inputs.items() if v is not None},
        {naming.TRIGGER_TAG: json.dumps(trigger)},
    )
    request.state.execution = run_id
    return {"execution_id": run_id, "playbook": playbook_id, "status": "QUEUED"}
