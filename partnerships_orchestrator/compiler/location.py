"""Build the code location from the playbooks folder: cheap to load, strict when asked."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg

from partnerships_orchestrator.compiler.assets import asset_repository_data
from partnerships_orchestrator.compiler.naming import REPOSITORY_NAME
from partnerships_orchestrator.compiler.repository import PlaybookRepositoryData
from partnerships_orchestrator.project import Project, connections_of
from partnerships_orchestrator.settings import Settings, load_settings
from partnerships_orchestrator.spec.loader import validate_playbook_expressions
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.spec.problems import SpecError, SpecProblem

__all__ = ["REPOSITORY_NAME", "build_repository", "connections_of", "repository_of", "strict_mode"]

STRICT_ENV = ("DAGSTER_IS_DEFS_VALIDATION_CLI", "PARTNERSHIPS_STRICT")


def strict_mode() -> bool:
    """`dg check defs` (and PARTNERSHIPS_STRICT=1) refuse to load anything while a file is invalid."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in STRICT_ENV)


def build_repository(
    settings: Settings | None = None, *, strict: bool | None = None
) -> dg.RepositoryDefinition:
    """The `partnerships` repository of a playbooks folder (settings from the environment when
    not given)."""
    project = Project(settings or load_settings())
    return repository_of(project, strict=strict_mode() if strict is None else strict)


def repository_of(project: Project, *, strict: bool) -> dg.RepositoryDefinition:
    """The `partnerships` repository: playbook jobs compiled on demand, triggers, resources."""
    catalog = project.strict_catalog() if strict else project.catalog
    if strict and catalog.problems:
        raise SpecError(catalog.problems)

    def deferred_checks(playbook: Playbook) -> Sequence[SpecProblem]:
        return [] if strict else validate_playbook_expressions(playbook, catalog)

    data = PlaybookRepositoryData(
        playbooks=[(d.model, d.file) for d in catalog.documents if isinstance(d.model, Playbook)],
        invalid_files=catalog.invalid_files,
        resources=project.resources,
        state_url=project.settings.state_url,
        check=deferred_checks,
        base=asset_repository_data([d.model for d in catalog.documents], project.resources),
    )

    @dg.repository(name=REPOSITORY_NAME, description="Partnerships Orchestrator playbooks")  # type: ignore[arg-type]
    def partnerships() -> PlaybookRepositoryData:
        return data

    return partnerships  # type: ignore[return-value]
