"""Build the code location from the playbooks folder: cheap to load, strict when asked."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg

from partnerships_orchestrator.compiler.assets import asset_repository_data
from partnerships_orchestrator.compiler.repository import PlaybookRepositoryData
from partnerships_orchestrator.connections import broken_connections, build_resources
from partnerships_orchestrator.settings import Settings, load_settings
from partnerships_orchestrator.spec.loader import (
    Catalog,
    load_catalog,
    validate_playbook_expressions,
)
from partnerships_orchestrator.spec.models import Connections, Playbook
from partnerships_orchestrator.spec.problems import SpecError, SpecProblem
from partnerships_orchestrator.store.playbook_store import playbook_sources

REPOSITORY_NAME = "partnerships"
STRICT_ENV = ("DAGSTER_IS_DEFS_VALIDATION_CLI", "PARTNERSHIPS_STRICT")


def strict_mode() -> bool:
    """`dg check defs` (and PARTNERSHIPS_STRICT=1) refuse to load anything while a file is invalid."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in STRICT_ENV)


def connections_of(catalog: Catalog) -> Connections | None:
    docs = [d for d in catalog.by_kind("connections")]
    return docs[0] if docs else None  # type: ignore[return-value]


def build_repository(
    settings: Settings | None = None, *, strict: bool | None = None
) -> dg.RepositoryDefinition:
    """The `partnerships` repository: playbook jobs compiled on demand, triggers, resources."""
    settings = settings or load_settings()
    strict = strict_mode() if strict is None else strict
    catalog = load_catalog(
        playbook_sources(settings), templates_dir=settings.templates_dir, check_expressions=strict
    )
    if strict and catalog.problems:
        raise SpecError(catalog.problems)
    resources = build_resources(
        settings, connections_of(catalog), broken_connections(catalog.invalid_files)
    )

    def deferred_checks(playbook: Playbook) -> Sequence[SpecProblem]:
        return [] if strict else validate_playbook_expressions(playbook, catalog)

    data = PlaybookRepositoryData(
        playbooks=[(d.model, d.file) for d in catalog.documents if isinstance(d.model, Playbook)],
        invalid_files=catalog.invalid_files,
        resources=resources,
        state_url=settings.state_url,
        check=deferred_checks,
        base=asset_repository_data([d.model for d in catalog.documents], resources),
    )

    @dg.repository(name=REPOSITORY_NAME, description="Partnerships Orchestrator playbooks")  # type: ignore[arg-type]
    def partnerships() -> PlaybookRepositoryData:
        return data

    return partnerships  # type: ignore[return-value]
