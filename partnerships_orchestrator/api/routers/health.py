"""`/health/live` (the API answers) and `/health/ready` (webserver, daemon heartbeat, storage)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from partnerships_orchestrator.api.context import ApiContext, context
from partnerships_orchestrator.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])
HEARTBEAT_TOLERANCE = 120.0  # seconds: a daemon quieter than this counts as down


@router.get("/live", response_model=Health)
async def live() -> dict[str, Any]:
    return {"status": "ok", "checks": {}}


@router.get(
    "/ready",
    response_model=Health,
    responses={503: {"model": Health, "description": "A part is not ready (see `checks`)."}},
)
def ready(ctx: Annotated[ApiContext, Depends(context)]) -> Any:
    checks = {
        "webserver": _check(
            lambda: None if ctx.webserver.alive() else "no answer from /server_info"
        ),
        "daemon": _check(lambda: _daemon(ctx)),
        "dagster_storage": _check(lambda: _dagster_storage(ctx)),
        "state_storage": _check(lambda: _state_storage(ctx)),
    }
    ok = all(c["ok"] for c in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return body if ok else JSONResponse(body, status_code=503)


def _check(probe: Any) -> dict[str, Any]:
    try:
        problem = probe()
    except Exception as exc:  # any failure of a dependency is "not ready", never a 500
        problem = f"{type(exc).__name__}"
    return {"ok": problem is None, "detail": problem}


def _daemon(ctx: ApiContext) -> str | None:
    beats = ctx.instance.get_daemon_heartbeats()
    if not beats:
        return "no daemon heartbeat yet"
    newest = max(b.timestamp for b in beats.values())
    age = time.time() - newest
    return None if age < HEARTBEAT_TOLERANCE else f"last heartbeat {age:.0f} s ago"


def _dagster_storage(ctx: ApiContext) -> str | None:
    ctx.instance.get_runs(limit=1)
    return None


def _state_storage(ctx: ApiContext) -> str | None:
    with ctx.state.engine.connect() as conn:
        conn.execute(text("select 1"))
    return None
