"""The Dagster resource every playbook op uses: where state lives and how to reach the warehouse."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import dagster as dg
from sqlalchemy.engine import Engine

from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.state import StateStore

_LONE_ENV = re.compile(r"^\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")


class PartnershipsResource(dg.ConfigurableResource):
    """Local state, templates and the partner warehouse, as configured for this deployment."""

    home: str
    playbooks_dir: str
    templates_dir: str
    warehouse_url: str  # may be a secret reference, resolved on first use
    default_warehouse_url: str = ""
    webhook_allow_hosts: list[str] = []

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        allow_hosts: list[str] | None = None,
        *,
        warehouse_url: str | None = None,
    ) -> PartnershipsResource:
        return cls(
            home=str(settings.home),
            playbooks_dir=str(settings.playbooks_dir),
            templates_dir=str(settings.templates_dir),
            warehouse_url=warehouse_url or settings.warehouse_url,
            default_warehouse_url=settings.warehouse_url,
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
        return _warehouse_engine(
            resolve_warehouse_url(self.warehouse_url, self.default_warehouse_url)
        )


def resolve_warehouse_url(url: str, default: str) -> str:
    """The warehouse URL with secrets resolved; a lone `${env:NAME}` that is unset means the
    embedded SQLite warehouse (as the connections document's `warehouse` entry promises)."""
    import os

    from partnerships_orchestrator.connectors.secrets import SecretResolver, has_references

    lone = _LONE_ENV.match(url)
    if lone and not os.environ.get(lone.group("name")):
        return default or url
    return SecretResolver.from_env().resolve(url) if has_references(url) else url


@cache
def _warehouse_engine(url: str) -> Engine:
    from partnerships_orchestrator.warehouse import create_engine_for

    return create_engine_for(url)
