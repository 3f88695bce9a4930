"""Playbooks created through the API: the current text of each, and every revision.

The rows are the truth (in the product's state database, so they follow it to PostgreSQL); the
code location reads them as files that :meth:`PlaybookStore.export` writes into one folder of
the home, beside the read-only files of `playbooks/`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)

from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.schema import ensure_schema
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tables import metadata

FORMATS = {"yaml": ".yaml", "json": ".json"}

stored_playbooks = Table(
    "stored_playbooks",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("format", String(10), nullable=False),  # yaml | json: as it was sent
    Column("text", Text, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

playbook_revisions = Table(
    "playbook_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("playbook", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("action", String(10), nullable=False),  # create | update | delete
    Column("format", String(10), nullable=False),
    Column("text", Text, nullable=False),
    Column("token_id", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("playbook", "number", name="uq_playbook_revision"),
)


@dataclass(frozen=True)
class Revision:
    playbook: str
    number: int
    action: str
    format: str
    text: str
    token_id: str | None
    created_at: datetime

    def as_dict(self, with_text: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "playbook": self.playbook,
            "number": self.number,
            "action": self.action,
            "format": self.format,
            "token_id": self.token_id,
            "created_at": self.created_at,
        }
        if with_text:
            out["text"] = self.text
        return out


class PlaybookStore:
    """The API's playbooks: create, update, delete (each a new revision) and export as files."""

    def __init__(self, state_url: str) -> None:
        self.engine = StateStore(state_url).engine
        ensure_schema(self.engine)  # its tables are in the shared metadata

    def live_ids(self) -> list[str]:
        query = select(stored_playbooks.c.id).where(stored_playbooks.c.deleted.is_(False))
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def holds(self, playbook_id: str) -> bool:
        """Is ``playbook_id`` a live (not deleted) playbook of the store?"""
        query = select(stored_playbooks.c.id).where(
            stored_playbooks.c.id == playbook_id, stored_playbooks.c.deleted.is_(False)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def version(self) -> tuple[int, int]:
        """Changes whenever any playbook changes (count and newest revision row)."""
        query = select(func.count(playbook_revisions.c.id), func.max(playbook_revisions.c.id))
        with self.engine.connect() as conn:
            count, newest = conn.execute(query).one()
        return int(count or 0), int(newest or 0)

    def save(self, playbook_id: str, text: str, fmt: str, token_id: str | None) -> Revision:
        """Store a new text for a playbook (creating it, or reviving a deleted one)."""
        return self._write(playbook_id, text, fmt, token_id, deleted=False)

    def delete(self, playbook_id: str, token_id: str | None) -> Revision:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(stored_playbooks).where(stored_playbooks.c.id == playbook_id)
            ).first()
        if row is None:
            raise KeyError(playbook_id)
        return self._write(playbook_id, row.text, row.format, token_id, deleted=True)

    def _write(
        self, playbook_id: str, text: str, fmt: str, token_id: str | None, *, deleted: bool
    ) -> Revision:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(stored_playbooks).where(stored_playbooks.c.id == playbook_id)
            ).first()
            number = (row.revision if row else 0) + 1
            action = "delete" if deleted else ("create" if row is None or row.deleted else "update")
            values = dict(revision=number, format=fmt, text=text, deleted=deleted, updated_at=now)
            if row is None:
                conn.execute(insert(stored_playbooks).values(id=playbook_id, **values))
            else:
                conn.execute(
                    update(stored_playbooks)
                    .where(stored_playbooks.c.id == playbook_id)
                    .values(**values)
                )
            conn.execute(
                insert(playbook_revisions).values(
                    playbook=playbook_id,
                    number=number,
                    action=action,
                    format=fmt,
                    text=text,
                    token_id=token_id,
                    created_at=now,
                )
            )
        return Revision(playbook_id, number, action, fmt, text, token_id, now)

    def revisions(self, playbook_id: str) -> list[Revision]:
        c = playbook_revisions.c
        query = select(playbook_revisions).where(c.playbook == playbook_id).order_by(c.number)
        with self.engine.connect() as conn:
            return [_revision(r) for r in conn.execute(query)]

    def revision(self, playbook_id: str, number: int) -> Revision | None:
        c = playbook_revisions.c
        query = select(playbook_revisions).where(c.playbook == playbook_id, c.number == number)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _revision(row) if row else None

    def export(self, folder: Path) -> None:
        """Make ``folder`` hold exactly the live playbooks, one file each (atomic writes)."""
        folder.mkdir(parents=True, exist_ok=True)
        query = select(stored_playbooks).where(stored_playbooks.c.deleted.is_(False))
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        wanted = {f"{row.id}{FORMATS[row.format]}": row.text for row in rows}
        for name, text in wanted.items():
            target = folder / name
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            _write_atomically(target, text)
        for existing in folder.iterdir():
            hidden = existing.name.startswith(".")  # another process's write in progress
            if existing.is_file() and not hidden and existing.name not in wanted:
                with contextlib.suppress(FileNotFoundError):
                    existing.unlink()


def _write_atomically(target: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, target)


def _revision(row: Any) -> Revision:
    return Revision(
        playbook=row.playbook,
        number=row.number,
        action=row.action,
        format=row.format,
        text=row.text,
        token_id=row.token_id,
        created_at=row.created_at,
    )


def playbook_sources(settings: Settings) -> list[Path]:
    """What a catalog loads: the `playbooks/` folder, then the store's playbooks as files."""
    PlaybookStore(settings.state_url).export(settings.playbook_store_dir)
    return [settings.playbooks_dir, settings.playbook_store_dir]
