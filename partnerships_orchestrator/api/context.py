"""What every route reaches: the product's catalog, state, Dagster instance and webserver."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import dagster as dg
from fastapi import Request

from partnerships_orchestrator.api.auth import Authenticator
from partnerships_orchestrator.api.catalog import Entry, PlaybookCatalog
from partnerships_orchestrator.api.problems import Problem
from partnerships_orchestrator.api.webserver import Webserver
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.audit import AuditLog
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tokens import Token, TokenStore


@dataclass
class ApiContext:
    settings: Settings
    webserver: Webserver
    catalog: PlaybookCatalog
    tokens: TokenStore
    audit: AuditLog
    state: StateStore
    auth: Authenticator

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.settings.dagster_home))

    def visible(self, token: Token, playbook_id: str) -> Entry:
        """The document, if the caller's teams own it; 404 otherwise, so ids don't leak."""
        entry = self.catalog.entry(playbook_id)
        if entry is None or not token.sees(entry.model.owners):
            raise Problem(404, "not-found", f"no playbook `{playbook_id}` visible to this token")
        return entry


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
