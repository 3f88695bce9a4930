"""The project: one home, one playbooks folder, and everything the product does with them.

The CLI, the code location and the HTTP API all go through :class:`Project`, so loading the
catalog, building the connections' resources, setting up the Dagster instance and running,
resuming or redriving a playbook each exist once::

    project = Project.open(playbooks_dir="playbooks", home=".partnerships")
    summary = project.execute("partner-onboarding", {"since_days": "7"}, on_progress=print)
    project.runs(limit=10)
    project.resume(summary.run_id)

A project reads its folder when first asked and keeps what it read; :meth:`reload` forgets it
(after a playbook file changed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partnerships_orchestrator.connections import (
    CHANNELS,
    CRMS,
    broken_connections,
    build_resources,
    configured,
)
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.settings import Settings, load_settings
from partnerships_orchestrator.spec.loader import (
    Catalog,
    load_catalog,
    validate_playbook_expressions,
)
from partnerships_orchestrator.spec.models import Connections, Playbook
from partnerships_orchestrator.spec.problems import SpecError
from partnerships_orchestrator.store.state import StateStore

if TYPE_CHECKING:
    import dagster as dg

    from partnerships_orchestrator.redrive import Redriven
    from partnerships_orchestrator.run_local import ProgressEvent, RunSummary
    from partnerships_orchestrator.runs import RunInfo


def connections_of(catalog: Catalog) -> Connections | None:
    """The catalog's `kind: connections` document, if it has one."""
    docs = catalog.by_kind("connections")
    return docs[0] if docs else None  # type: ignore[return-value]


@dataclass(frozen=True)
class PlaybookSource:
    """A valid playbook and the file it was read from."""

    model: Playbook
    file: str


class Project:
    """Settings, catalog, connections, resources, state store and Dagster instance of one home."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._prepared: tuple[list[str], Path] | None = None

    @classmethod
    def open(
        cls,
        playbooks_dir: str | Path | None = None,
        home: str | Path | None = None,
        templates_dir: str | Path | None = None,
    ) -> Project:
        """A project from arguments, then environment, then defaults (see `settings.py`)."""
        return cls(load_settings(playbooks_dir, home, templates_dir))

    def reload(self) -> None:
        """Forget the catalog and what was built from it (the folder is read again)."""
        for name in ("catalog", "resources"):
            self.__dict__.pop(name, None)

    # ------------------------------------------------------------------ what the folder holds
    @cached_property
    def catalog(self) -> Catalog:
        """Every document of the playbooks folder (expressions are checked per playbook, when
        one is used)."""
        return load_catalog(
            self.sources(), templates_dir=self.settings.templates_dir, check_expressions=False
        )

    def strict_catalog(self) -> Catalog:
        """The folder read with every expression checked (what `partnerships validate` does)."""
        return load_catalog(
            self.sources(), templates_dir=self.settings.templates_dir, check_expressions=True
        )

    def sources(self) -> list[Path]:
        """What the catalog reads: the playbooks folder, then the playbook store's documents."""
        from partnerships_orchestrator.store.playbook_store import playbook_sources

        return playbook_sources(self.settings)

    @property
    def connections(self) -> Connections | None:
        return connections_of(self.catalog)

    @cached_property
    def resources(self) -> dict[str, Any]:
        """The Dagster resources of the configured connections (secrets stay references)."""
        return build_resources(
            self.settings, self.connections, broken_connections(self.catalog.invalid_files)
        )

    @property
    def pools(self) -> list[str]:
        """The Dagster concurrency pools steps may claim: every channel, the configured CRMs."""
        crms = [name for name in configured(self.connections) if name in CRMS]
        return sorted({*CHANNELS, *crms})

    def playbook(self, playbook_id: str) -> PlaybookSource:
        """A valid playbook by id; a clear error when it is unknown or invalid."""
        doc = self.catalog.document(playbook_id)
        if doc is not None and isinstance(doc.model, Playbook):
            problems = validate_playbook_expressions(doc.model, self.catalog)
            if problems:
                raise SpecError(problems)
            return PlaybookSource(doc.model, doc.file)
        known = ", ".join(sorted(p.id for p in self.catalog.playbooks())) or "none"
        broken = [str(p) for p in self.catalog.problems if playbook_id in p.file]
        raise PartnershipsError(
            f"no valid playbook `{playbook_id}` in {self.settings.playbooks_dir}",
            hint=f"known playbooks: {known}"
            + (f"; {broken[0]}" if broken else "; `partnerships validate` lists problems"),
        )

    # ------------------------------------------------------------------ state
    @cached_property
    def state(self) -> StateStore:
        """The delivery ledger, outbox, dead letters and inbox."""
        self.prepare()
        return StateStore(self.settings.state_url)

    def prepare(self) -> Path:
        """Set up the home once (Dagster storage, state tables, pools); returns DAGSTER_HOME.

        Done again only when the pools change (a connection added to the folder): the set-up
        takes a file lock and reads the storage, which a project serving many calls need not
        repeat."""
        from partnerships_orchestrator.instance import prepare_instance

        pools = self.pools
        if self._prepared is None or self._prepared[0] != pools:
            self._prepared = (pools, prepare_instance(self.settings, pools))
        return self._prepared[1]

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        """The product's Dagster instance (CLI runs show up in the UI too)."""
        from partnerships_orchestrator.instance import open_instance

        return open_instance(self.prepare())

    def seed(self, *, reset: bool = False) -> dict[str, int]:
        """Create the partner warehouse schema and seed the demo data (if empty, or ``reset``);
        returns the rows per table."""
        from partnerships_orchestrator.demo import seed_demo_data
        from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema

        engine = create_engine_for(self.settings.warehouse_url)
        ensure_schema(engine)
        return seed_demo_data(engine, reset=reset)

    # ------------------------------------------------------------------ running
    def execute(
        self,
        playbook_id: str,
        inputs: Mapping[str, Any],
        *,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunSummary:
        """Run a playbook in this process (inputs are checked before anything starts)."""
        from partnerships_orchestrator.run_local import execute_playbook

        self.mark_dead_runs()
        return execute_playbook(self, self.playbook(playbook_id), inputs, on_progress, tags)

    def resume(
        self, run_id: str, *, on_progress: Callable[[ProgressEvent], None] | None = None
    ) -> RunSummary:
        """Re-execute a failed (or dead) run from failure in this process, as a new run of the
        same root run: succeeded steps don't run again, delivered messages aren't sent again."""
        from partnerships_orchestrator.run_local import resume_run

        self.mark_dead_runs()
        return resume_run(self, run_id, on_progress)

    def runs(self, limit: int = 20, playbook_id: str | None = None) -> list[RunInfo]:
        """Recent runs, newest first (dead CLI runs are marked failed first)."""
        from partnerships_orchestrator.runs import recent_runs

        self.mark_dead_runs()
        return recent_runs(self.instance, limit=limit, playbook_id=playbook_id)

    def mark_dead_runs(self) -> list[str]:
        """Fail the STARTED runs whose process on this host is gone; returns their ids."""
        from partnerships_orchestrator.runs import mark_dead_runs

        return mark_dead_runs(self.instance)

    def redrive(self, letter_id: int) -> Redriven:
        """Run a dead letter's step again with the scope it failed with."""
        from partnerships_orchestrator.redrive import redrive

        return redrive(self, letter_id)

    def check(self) -> list[dict[str, Any]]:
        """Does each configured connection authenticate (and at what pace)?"""
        from partnerships_orchestrator.connection_check import check_connections

        return check_connections(self)

    # ------------------------------------------------------------------ Dagster
    def repository(self, *, strict: bool = False) -> dg.RepositoryDefinition:
        """The `partnerships` code location's repository (jobs compiled on demand)."""
        from partnerships_orchestrator.compiler.location import repository_of

        return repository_of(self, strict=strict)
