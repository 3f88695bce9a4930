"""Playbooks as a Dagster component, for teams already on Dagster Components (`dg`).

Drop a `defs.yaml` with `type: partnerships_orchestrator.component.PlaybooksComponent` and
`attributes: {path: playbooks}` into a `defs/` folder. The component is eager (Dagster builds
every job when it loads the folder), so the product's own code location
(`partnerships_orchestrator.definitions`) stays the default; both share the same compiler.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.compiler.repository import invalid_job
from partnerships_orchestrator.compiler.triggers import schedules_for, sensors_for
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.spec.problems import SpecError


class PlaybooksComponent(dg.Component, dg.Resolvable, dg.Model):
    """Every playbook in a folder as Dagster jobs, schedules and sensors."""

    path: str = "playbooks"
    """The playbooks folder, relative to the component's own folder."""
    templates: str | None = None
    """The templates folder (default: `templates/` beside the playbooks folder)."""
    strict: bool = True
    """Refuse to load while any document has a problem (else invalid files become failing jobs)."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = (Path(context.path) / self.path).resolve()
        templates = (Path(context.path) / self.templates).resolve() if self.templates else None
        project = Project.open(playbooks_dir=folder, templates_dir=templates)
        settings = project.settings
        catalog = project.strict_catalog()
        if self.strict and catalog.problems:
            raise SpecError(catalog.problems)
        resources = project.resources
        playbooks = [d for d in catalog.documents if isinstance(d.model, Playbook)]
        jobs = [build_job(d.model, resources, source=d.file) for d in playbooks]  # type: ignore[arg-type]
        jobs += [
            invalid_job(naming.invalid_job_name(Path(f).stem), f, [str(p) for p in problems])
            for f, problems in catalog.invalid_files.items()
        ]
        models = [d.model for d in playbooks]
        return dg.Definitions(
            jobs=jobs,
            schedules=[s for pb in models for s in schedules_for(pb)],  # type: ignore[arg-type]
            sensors=[s for pb in models for s in sensors_for(pb, settings.state_url)],  # type: ignore[arg-type]
        )
