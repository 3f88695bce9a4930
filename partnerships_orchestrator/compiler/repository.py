"""The code location: a lazy Dagster repository of playbook jobs.

The run worker re-imports the code location for every run, so a job is compiled only when
Dagster asks for it by name (``get_job``) and then cached; schedules and sensors name their job
by ``job_name`` and never force a build. Invalid files still show up: each becomes a job named
after the file whose description lists its problems and which fails, with that list, if launched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import dagster as dg

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.compiler.triggers import schedules_for, sensors_for
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.spec.problems import SpecProblem


class PlaybookRepositoryData(dg.RepositoryData):
    """Jobs compiled on demand from playbooks; the rest (assets, resources) from ``base``."""

    def __init__(
        self,
        playbooks: Sequence[tuple[Playbook, str]],
        invalid_files: Mapping[str, Sequence[SpecProblem]],
        resources: Mapping[str, Any],
        state_url: str,
        check: Any = None,
        base: dg.RepositoryData | None = None,
    ) -> None:
        self._playbooks = {naming.job_name(pb.id): (pb, source) for pb, source in playbooks}
        self._invalid = {
            naming.invalid_job_name(_stem(f)): (f, list(p)) for f, p in invalid_files.items()
        }
        self._resources = dict(resources)
        self._state_url = state_url
        self._check = check  # playbook -> list[SpecProblem]: the checks deferred to compile time
        self._base = base
        self._jobs: dict[str, dg.JobDefinition] = {}

    # ------------------------------------------------------------ jobs
    def get_job_names(self) -> Sequence[str]:
        base = list(self._base.get_job_names()) if self._base else []
        return [*self._playbooks, *self._invalid, *base]

    def has_job(self, job_name: str) -> bool:
        return (
            job_name in self._playbooks
            or job_name in self._invalid
            or bool(self._base and self._base.has_job(job_name))
        )

    def get_job(self, job_name: str) -> dg.JobDefinition:
        if job_name not in self._jobs:
            self._jobs[job_name] = self._build(job_name)
        return self._jobs[job_name]

    def get_all_jobs(self) -> Sequence[dg.JobDefinition]:
        return [self.get_job(name) for name in self.get_job_names()]

    def _build(self, job_name: str) -> dg.JobDefinition:
        if job_name in self._invalid:
            source, problems = self._invalid[job_name]
            return invalid_job(job_name, source, [str(p) for p in problems])
        if job_name in self._playbooks:
            playbook, source = self._playbooks[job_name]
            problems = self._check(playbook) if self._check else []
            if problems:
                return invalid_job(job_name, source, [str(p) for p in problems])
            try:
                return build_job(playbook, self._resources, source=source)
            except PartnershipsError as exc:  # e.g. a step reads a connection nobody configured
                return invalid_job(job_name, source, [f"{source}: {exc}"])
        if self._base:
            return self._base.get_job(job_name)
        raise dg.DagsterInvariantViolationError(f"no job named {job_name}")

    # ------------------------------------------------------------ triggers
    @cached_property
    def _schedules(self) -> dict[str, dg.ScheduleDefinition]:
        own = [s for pb, _ in self._playbooks.values() for s in schedules_for(pb)]
        base = list(self._base.get_all_schedules()) if self._base else []
        return {s.name: s for s in [*own, *base]}

    @cached_property
    def _sensors(self) -> dict[str, dg.SensorDefinition]:
        own = [s for pb, _ in self._playbooks.values() for s in sensors_for(pb, self._state_url)]
        base = list(self._base.get_all_sensors()) if self._base else []
        return {s.name: s for s in [*own, *base]}

    def get_all_schedules(self) -> Sequence[dg.ScheduleDefinition]:
        return list(self._schedules.values())

    def get_schedule_names(self) -> Sequence[str]:
        return list(self._schedules)

    def get_schedule(self, schedule_name: str) -> dg.ScheduleDefinition:
        return self._schedules[schedule_name]

    def has_schedule(self, schedule_name: str) -> bool:
        return schedule_name in self._schedules

    def get_all_sensors(self) -> Sequence[dg.SensorDefinition]:
        return list(self._sensors.values())

    def get_sensor_names(self) -> Sequence[str]:
        return list(self._sensors)

    def get_sensor(self, sensor_name: str) -> dg.SensorDefinition:
        return self._sensors[sensor_name]

    def has_sensor(self, sensor_name: str) -> bool:
        return sensor_name in self._sensors

    # ------------------------------------------------------------ the rest, from base
    def get_top_level_resources(self) -> Mapping[str, dg.ResourceDefinition]:
        from dagster._core.definitions.resource_definition import ResourceDefinition

        own = {
            k: v if isinstance(v, ResourceDefinition) else v.get_resource_definition()
            for k, v in self._resources.items()
        }
        return {**own, **(self._base.get_top_level_resources() if self._base else {})}

    def get_env_vars_by_top_level_resource(self) -> Mapping[str, Any]:
        return self._base.get_env_vars_by_top_level_resource() if self._base else {}

    def get_source_assets_by_key(self) -> Mapping[dg.AssetKey, dg.SourceAsset]:
        return self._base.get_source_assets_by_key() if self._base else {}

    def get_assets_defs_by_key(self) -> Mapping[dg.AssetKey, dg.AssetsDefinition]:
        return self._base.get_assets_defs_by_key() if self._base else {}

    def get_asset_checks_defs_by_key(self) -> Mapping[Any, Any]:
        return self._base.get_asset_checks_defs_by_key() if self._base else {}


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


def invalid_job(job_name: str, source: str, problems: Sequence[str]) -> dg.JobDefinition:
    """A job standing for a file that did not validate: its description is the problem list."""
    listing = "\n".join(f"- {p}" for p in problems)

    @dg.op(name=f"{job_name}__invalid", description="Fails: the playbook did not validate.")
    def _fail() -> None:
        raise dg.Failure(f"{source} did not validate:\n{listing}", allow_retries=False)

    @dg.job(
        name=job_name,
        description=f"INVALID: {source} has {len(problems)} problem(s); fix them and reload.\n\n{listing}",
        tags={naming.SOURCE_TAG: source, "partnerships/invalid": "true"},
    )
    def _job() -> None:
        _fail()

    return _job
