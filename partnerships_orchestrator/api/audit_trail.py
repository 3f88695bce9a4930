"""One audit row per mutating call (and per execution request), whatever its outcome."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from partnerships_orchestrator.api.body_limits import ASGIApp, Message, Receive, Scope, Send
from partnerships_orchestrator.store.audit import AuditEntry, AuditLog

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
log = logging.getLogger("partnerships.api")


class AuditTrail:
    """Pure ASGI: records after the response is sent, from what the route left in
    ``request.state`` (token id, playbook, execution) and the status it answered."""

    def __init__(self, app: ASGIApp, audit: AuditLog, prefix: str) -> None:
        self.app = app
        self.audit = audit
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await run_in_threadpool(self._record, scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        state: dict[str, Any] = scope.get("state", {})
        params: dict[str, Any] = scope.get("path_params", {})
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"].removeprefix(self.prefix)
        client = scope.get("client")
        entry = AuditEntry(
            token_id=state.get("token_id"),
            action=f"{scope['method']} {template.removeprefix(self.prefix)}",
            address=client[0] if client else None,
            status=status,
            playbook=state.get("playbook") or params.get("playbook_id"),
            execution=state.get("execution") or params.get("run_id"),
            detail=state.get("detail") or state.get("problem"),
        )
        try:
            self.audit.record(entry)
        except SQLAlchemyError:  # the call itself is done; losing the row must be loud
            log.exception("could not write the audit row for %s", entry.action)
