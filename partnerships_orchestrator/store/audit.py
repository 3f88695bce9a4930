"""The audit log: who (token id) did what to which playbook or execution, when, from where,
and how it ended. Every mutating API call and every execution request writes one row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    select,
)

from partnerships_orchestrator.store.schema import ensure_schema
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tables import metadata

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("token_id", String(32)),  # none: unauthenticated (e.g. a signed webhook)
    Column("action", String(100), nullable=False),  # e.g. `POST /playbooks/{playbook_id}`
    Column("playbook", String(200)),
    Column("execution", String(64)),
    Column("address", String(100)),
    Column("status", Integer, nullable=False),  # the HTTP status answered
    Column("outcome", String(20), nullable=False),  # ok | denied | refused | failed
    Column("detail", Text),
    Index("ix_audit_at", "at"),
    Index("ix_audit_token", "token_id"),
)


@dataclass(frozen=True)
class AuditEntry:
    token_id: str | None
    action: str
    address: str | None
    status: int
    playbook: str | None = None
    execution: str | None = None
    detail: str | None = None

    @property
    def outcome(self) -> str:
        if self.status < 400:
            return "ok"
        if self.status in (401, 403, 404, 429):
            return "denied"
        if self.status < 500:
            return "refused"
        return "failed"


class AuditLog:
    """Append-only rows in the product's state database."""

    def __init__(self, state_url: str) -> None:
        self.engine = StateStore(state_url).engine
        ensure_schema(self.engine)  # its tables are in the shared metadata

    def record(self, entry: AuditEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(audit_log).values(
                    at=datetime.now(UTC),
                    token_id=entry.token_id,
                    action=entry.action,
                    playbook=entry.playbook,
                    execution=entry.execution,
                    address=entry.address,
                    status=entry.status,
                    outcome=entry.outcome,
                    detail=(entry.detail or "")[:2000] or None,
                )
            )

    def query(
        self,
        *,
        token_id: str | None = None,
        playbook: str | None = None,
        execution: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        c = audit_log.c
        query = select(audit_log).where(c.id > after_id).order_by(c.id).limit(limit)
        for column, value in (
            (c.token_id, token_id),
            (c.playbook, playbook),
            (c.execution, execution),
            (c.outcome, outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(c.at >= since)
        if until is not None:
            query = query.where(c.at < until)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
