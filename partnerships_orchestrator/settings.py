"""Where the product keeps its files: playbooks, templates and local state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".partnerships"
DEFAULT_PLAYBOOKS = "playbooks"
DEFAULT_TEMPLATES = "templates"
WEBSERVER_ENV = "PARTNERSHIPS_WEBSERVER_URL"  # where the API reaches the Dagster webserver
DATABASE_ENV = "PARTNERSHIPS_DATABASE_URL"
RATE_LIMITS_ENV = "PARTNERSHIPS_RATE_LIMITS"  # shared (default) | local: see Scale-out


@dataclass(frozen=True)
class Settings:
    """Resolved locations. Everything local lives under ``home`` so two checkouts never share state."""

    playbooks_dir: Path
    templates_dir: Path
    home: Path

    @property
    def state_db(self) -> Path:
        """SQLite file for the orchestrator's own tables (ledger, outbox, dead letters, inbox)."""
        return self.home / "state.db"

    @property
    def playbook_store_dir(self) -> Path:
        """Files of the playbooks created through the API (written from the state database)."""
        return self.home / "playbook-store"

    @property
    def warehouse_db(self) -> Path:
        """SQLite file of the embedded partner warehouse."""
        return self.home / "warehouse.db"

    @property
    def artifacts_dir(self) -> Path:
        """Rendered files (PDFs) produced by runs."""
        return self.home / "artifacts"

    @property
    def dagster_home(self) -> Path:
        """``DAGSTER_HOME`` when set, else a folder under ``home``."""
        env = os.environ.get("DAGSTER_HOME")
        return Path(env) if env else self.home / "dagster"

    @property
    def state_url(self) -> str:
        """``PARTNERSHIPS_DATABASE_URL`` when set (one PostgreSQL shared by every worker), else
        the SQLite file ``state_db``."""
        return os.environ.get(DATABASE_ENV) or f"sqlite:///{self.state_db}"

    @property
    def warehouse_url(self) -> str:
        """``PARTNER_WAREHOUSE_URL`` when set, else the embedded SQLite warehouse."""
        return os.environ.get("PARTNER_WAREHOUSE_URL") or f"sqlite:///{self.warehouse_db}"


def load_settings(
    playbooks_dir: str | Path | None = None,
    home: str | Path | None = None,
    templates_dir: str | Path | None = None,
) -> Settings:
    """Resolve settings from arguments, then environment, then defaults (relative to the cwd)."""
    pb = Path(playbooks_dir or os.environ.get("PARTNERSHIPS_PLAYBOOKS") or DEFAULT_PLAYBOOKS)
    hm = Path(home or os.environ.get("PARTNERSHIPS_HOME") or DEFAULT_HOME)
    tpl = templates_dir or os.environ.get("PARTNERSHIPS_TEMPLATES")
    if tpl is None:
        sibling = pb.resolve().parent / DEFAULT_TEMPLATES
        tpl = sibling if sibling.is_dir() else Path(DEFAULT_TEMPLATES)
    return Settings(
        playbooks_dir=pb.resolve(), templates_dir=Path(tpl).resolve(), home=hm.resolve()
    )
