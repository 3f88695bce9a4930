"""Who starts the run of an inbound webhook call: the API at once, or the inbox sensor.

The API claims a call before storing it in the inbox, answers 202, then launches its run
through the webserver and records the run id. The inbox sensor leaves a call alone while the
API's claim is fresh and unfinished, skips it once the API launched it, and starts it itself
when the API gave up (released the claim) or went quiet for longer than :data:`GRACE`. So a
call runs once, without waiting for a sensor tick, and is not lost if the API dies mid-way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Column, DateTime, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from partnerships_orchestrator.store.schema import ensure_schema
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tables import metadata

GRACE = timedelta(seconds=30)
LaunchState = Literal["unclaimed", "pending", "launched", "abandoned"]

webhook_launches = Table(
    "webhook_launches",
    metadata,
    Column("playbook", String(200), primary_key=True),
    Column("webhook_id", String(200), primary_key=True),
    Column("run_id", String(64)),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)


class WebhookLaunches:
    def __init__(self, state_url: str) -> None:
        self.engine = StateStore(state_url).engine
        ensure_schema(self.engine)  # its table is in the shared metadata

    def claim(self, playbook: str, webhook_id: str) -> bool:
        """Take the launch of this call; ``False`` when it was claimed before (a duplicate)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(webhook_launches).values(
                        playbook=playbook, webhook_id=webhook_id, claimed_at=datetime.now(UTC)
                    )
                )
        except IntegrityError:
            return False
        return True

    def launched(self, playbook: str, webhook_id: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_launches)
                .where(*self._match(playbook, webhook_id))
                .values(run_id=run_id)
            )

    def release(self, playbook: str, webhook_id: str) -> None:
        """The API could not launch it: the inbox sensor will."""
        with self.engine.begin() as conn:
            conn.execute(delete(webhook_launches).where(*self._match(playbook, webhook_id)))

    def state(self, playbook: str, webhook_id: str) -> LaunchState:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(webhook_launches).where(*self._match(playbook, webhook_id))
            ).first()
        if row is None:
            return "unclaimed"
        if row.run_id:
            return "launched"
        claimed = row.claimed_at if row.claimed_at.tzinfo else row.claimed_at.replace(tzinfo=UTC)
        return "pending" if datetime.now(UTC) - claimed < GRACE else "abandoned"

    @staticmethod
    def _match(playbook: str, webhook_id: str) -> tuple[Any, ...]:
        c = webhook_launches.c
        return (c.playbook == playbook, c.webhook_id == webhook_id)
