"""The Dagster resources every playbook op uses: where state lives and how to reach the warehouse."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import dagster as dg
from sqlalchemy.engine import Engine

from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.state import StateStore


class PartnershipsResource(dg.ConfigurableResource):
    """Local state, templates and the partner warehouse, as configured for this deployment."""

    home: str
    playbooks_dir: str
    templates_dir: str
    warehouse_url: str
    webhook_allow_hosts: list[str] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, allow_hosts: list[str] | None = None
    ) -> PartnershipsResource:
        return cls(
            home=str(settings.home),
            playbooks_dir=str(settings.playbooks_dir),
            templates_dir=str(settings.templates_dir),
            warehouse_url=settings.warehouse_url,
            webhook_allow_hosts=allow_hosts or [],
        )

    @property
    def settings(self) -> Settings:
        return Settings(
            playbooks_dir=Path(self.playbooks_dir),
            templates_dir=Path(self.templates_dir),
            home=Path(self.home),
        )

    @property
    def state(self) -> StateStore:
        return StateStore(self.settings.state_url)

    def warehouse(self) -> Engine:
        """The pooled warehouse engine, created on first use and shared by the process."""
        return _warehouse_engine(self.warehouse_url)


@cache
def _warehouse_engine(url: str) -> Engine:
    from partnerships_orchestrator.warehouse import create_engine_for

    return create_engine_for(url)
