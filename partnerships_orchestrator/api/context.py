"""What every route reaches: the product's catalog, state, Dagster instance and webserver."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from partnerships_orchestrator.api.auth import Authenticator
from partnerships_orchestrator.api.catalog import Entry, PlaybookCatalog
from partnerships_orchestrator.api.problems import Problem
from partnerships_orchestrator.api.response_cache import ResponseCache
from partnerships_orchestrator.api.run_events import RunEvents
from partnerships_orchestrator.api.storage_files import StorageFiles
from partnerships_orchestrator.api.webserver import Webserver
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.audit import AuditLog
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tokens import Token, TokenStore


@dataclass
class ApiContext:
    """The project (catalog, state, Dagster instance, redrive) plus what only the API has."""

    project: Project
    webserver: Webserver
    catalog: PlaybookCatalog
    tokens: TokenStore
    audit: AuditLog
    auth: Authenticator
    run_events: RunEvents
    responses: ResponseCache
    files: StorageFiles

    @property
    def settings(self) -> Settings:
        return self.project.settings

    @property
    def state(self) -> StateStore:
        return self.project.state

    @property
    def instance(self) -> dg.DagsterInstance:
        return self.project.instance

    async def snapshot(self) -> tuple[int, dict[str, Entry]]:
        """The catalog's version and entries; a due look at its sources runs in a worker
        thread, never on the event loop."""
        current = self.catalog.current()
        if current is None:
            current = await run_in_threadpool(self.catalog.snapshot)
        return current

    def visible(
        self, token: Token, playbook_id: str, entries: dict[str, Entry] | None = None
    ) -> Entry:
        """The document (of ``entries``, a snapshot, or the catalog now), if the caller's
        teams own it; 404 otherwise, so ids don't leak."""
        entry = (entries if entries is not None else self.catalog.entries()).get(playbook_id)
        if entry is None or not token.sees(entry.model.owners):
            raise Problem(404, "not-found", f"no playbook `{playbook_id}` visible to this token")
        return entry


async def context(request: Request) -> ApiContext:
    """The app's context (async: a plain attribute read needs no worker thread)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
