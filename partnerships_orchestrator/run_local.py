"""Run a playbook (or resume a failed run) in this process, follow its steps, summarise it.

A run started here is an ordinary run of the instance: it names the `partnerships` code location
as its origin (so the UI can re-execute it), its process id and host are in its tags (so a run
whose process died is found and failed, see `runs.py`), and step outputs are kept by Dagster's
filesystem IO manager (so it can be resumed from failure, here or from the UI). Progress is
reported as :class:`ProgressEvent` values to a callback; showing them is the caller's business.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, RESUME_RETRY_TAG, ROOT_RUN_ID_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.fanout import item_statuses
from partnerships_orchestrator.compiler.inputs import check_inputs
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.compiler.location import REPOSITORY_NAME
from partnerships_orchestrator.compiler.naming import LOCATION_NAME
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.instance import PACKAGE_ROOT
from partnerships_orchestrator.run_launcher import HOST_TAG, PID_TAG, process_tags
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.store.jsonable import jsonable

if TYPE_CHECKING:
    from partnerships_orchestrator.project import PlaybookSource, Project

DEFINITIONS_MODULE = "partnerships_orchestrator.definitions"
_STATUS = {
    "STEP_START": "running",
    "STEP_SUCCESS": "succeeded",
    "STEP_FAILURE": "failed",
    "STEP_SKIPPED": "skipped",
    "STEP_UP_FOR_RETRY": "retrying",
    "STEP_RESTARTED": "running",
}


@dataclass(frozen=True)
class ProgressEvent:
    """A step changed status; ``steps`` is every step's status at that moment."""

    run_id: str
    step: str
    status: str
    steps: Mapping[str, str]


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class RunSummary:
    """What a finished run did."""

    run_id: str
    playbook: str
    success: bool
    steps: dict[str, str] = field(default_factory=dict)
    messages_sent: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    dead_letters: int = 0
    seconds: float = 0.0
    root_run_id: str | None = None
    parent_run_id: str | None = None

    def counts(self) -> dict[str, int]:
        result = {"succeeded": 0, "skipped": 0, "failed": 0}
        for status in self.steps.values():
            if status in result:
                result[status] += 1
        return result

    @property
    def resume_command(self) -> str | None:
        """How to finish this run when it failed."""
        return None if self.success else f"partnerships resume {self.run_id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "playbook": self.playbook,
            "success": self.success,
            "steps": self.steps,
            "counts": self.counts(),
            "messages_sent": self.messages_sent,
            "outputs": jsonable(self.outputs),
            "errors": self.errors,
            "dead_letters": self.dead_letters,
            "seconds": round(self.seconds, 3),
            "root_run_id": self.root_run_id or self.run_id,
            "parent_run_id": self.parent_run_id,
            "resume": self.resume_command,
        }


@dg.logger(
    config_schema=None,
    description="Silent: `partnerships run` shows its own progress; full logs are in the UI.",
)
def _quiet_logger(_init_context: Any) -> logging.Logger:
    logger = logging.Logger("partnerships.run", level=logging.CRITICAL)
    logger.addHandler(logging.NullHandler())
    return logger


def location_origin(job_name: str) -> RemoteJobOrigin:
    """The job in the `partnerships` code location: what the UI needs to re-execute a run."""
    target = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=DEFINITIONS_MODULE,
        working_directory=str(PACKAGE_ROOT),
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=target, location_name=LOCATION_NAME
    )
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=REPOSITORY_NAME
        ),
        job_name=job_name,
    )


def _job(project: Project, playbook: Playbook, source: str) -> dg.JobDefinition:
    """The playbook's job for this process: its own progress instead of Dagster's console lines,
    always in process."""
    job = build_job(
        playbook, project.resources, source=source, logger_defs={"console": _quiet_logger}
    )
    return (
        job
        if playbook.executor != "multiprocess"
        else job.with_executor_def(dg.in_process_executor)
    )


def execute_playbook(
    project: Project,
    source: PlaybookSource,
    given: Mapping[str, Any],
    on_progress: ProgressCallback | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunSummary:
    """A new run of the playbook; inputs are checked before anything starts."""
    playbook = source.model
    inputs = check_inputs(playbook, dict(given))
    run_config = {k: v for k, v in inputs.items() if v is not None}
    job = _job(project, playbook, source.file)
    instance = project.instance
    plan = create_execution_plan(
        InMemoryJob(job), run_config=run_config, instance_ref=instance.get_ref()
    )
    run = instance.create_run_for_job(
        job_def=job,
        execution_plan=plan,
        run_config=run_config,
        tags={
            **job.run_tags,
            naming.TRIGGER_TAG: json.dumps({"type": "manual", "via": "cli"}),
            **(tags or {}),
            **process_tags(),
        },
        remote_job_origin=location_origin(job.name),
    )
    return _execute(project, playbook, job, run, on_progress)


def resume_run(
    project: Project, run_id: str, on_progress: ProgressCallback | None = None
) -> RunSummary:
    """Re-execute a failed run from failure, as a new run of the same root run."""
    instance = project.instance
    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise PartnershipsError(f"no run `{run_id}`", hint="`partnerships runs` lists recent runs")
    _check_resumable(parent)
    _check_not_resumed(instance, parent)
    playbook_id = parent.tags.get(naming.PLAYBOOK_TAG)
    if not playbook_id:
        raise PartnershipsError(f"run {run_id} is not a playbook run (job `{parent.job_name}`)")
    source = project.playbook(playbook_id)
    job = _job(project, source.model, source.file)
    step_keys, known_state = KnownExecutionState.build_resume_retry_reexecution(
        instance=instance, parent_run=parent
    )
    try:
        plan = create_execution_plan(
            InMemoryJob(job),
            run_config=parent.run_config,
            step_keys_to_execute=step_keys,
            known_state=known_state,
            tags=parent.tags,
            instance_ref=instance.get_ref(),
        )
    except (dg.DagsterInvalidConfigError, dg.DagsterInvariantViolationError) as exc:
        raise PartnershipsError(
            f"run {run_id} cannot be resumed with `{playbook_id}` as it is defined now: "
            f"{' '.join(str(exc).split())[:500]}",
            hint=f"its inputs or steps changed since; `partnerships run {playbook_id}` starts anew",
        ) from exc
    root = parent.root_run_id or parent.run_id
    inherited = {k: v for k, v in parent.tags.items() if k not in (PID_TAG, HOST_TAG)}
    run = instance.create_run_for_job(
        job_def=job,
        execution_plan=plan,
        run_config=parent.run_config,
        tags={
            **inherited,
            naming.TRIGGER_TAG: json.dumps({"type": "manual", "via": "resume"}),
            PARENT_RUN_ID_TAG: parent.run_id,
            ROOT_RUN_ID_TAG: root,
            RESUME_RETRY_TAG: "true",
            **process_tags(),
        },
        parent_run_id=parent.run_id,
        root_run_id=root,
        remote_job_origin=location_origin(job.name),
    )
    return _execute(project, source.model, job, run, on_progress)


def _check_resumable(run: DagsterRun) -> None:
    if run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        return
    if run.status == DagsterRunStatus.SUCCESS:
        raise PartnershipsError(f"run {run.run_id} succeeded: there is nothing to resume")
    raise PartnershipsError(
        f"run {run.run_id} is {run.status.value}, not failed",
        hint="a run can be resumed once it failed or was canceled; its process is alive "
        "(`partnerships runs` shows its status)",
    )


def _check_not_resumed(instance: dg.DagsterInstance, run: DagsterRun) -> None:
    """A run is resumed once: after that, its newest re-execution is the one to resume."""
    children = instance.get_runs(filters=dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id}))
    if not children:
        return
    newest = children[0]  # newest first
    status = newest.status
    hint = (
        f"`partnerships resume {newest.run_id}`"
        if status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
        else "nothing is left to resume"
        if status == DagsterRunStatus.SUCCESS
        else "it is still running (`partnerships runs`)"
    )
    raise PartnershipsError(
        f"run {run.run_id} was resumed by run {newest.run_id} ({status.value})", hint=hint
    )


def _execute(
    project: Project,
    playbook: Playbook,
    job: dg.JobDefinition,
    run: DagsterRun,
    on_progress: ProgressCallback | None,
) -> RunSummary:
    """Execute a created run on a worker thread while this thread reports its progress."""
    instance = project.instance
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = execute_run(InMemoryJob(job), run, instance)
        except BaseException as exc:  # reported in the summary, never swallowed  # noqa: BLE001
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=work, name=f"run-{run.run_id[:8]}", daemon=True)
    watcher = ProgressWatcher(instance, run.run_id, job.name, playbook, on_progress)
    worker.start()
    while worker.is_alive():
        watcher.poll()
        worker.join(0.2)
    watcher.poll()
    return _summarise(project, playbook, run, outcome, watcher, time.monotonic() - started)


class ProgressWatcher:
    """Follows a run's events in the instance's event log and keeps each step's status."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        job: str,
        playbook: Playbook,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.instance = instance
        self.run_id = run_id
        self.prefix = f"{job}__"
        self.status: dict[str, str] = {s.id: "pending" for s in playbook.steps}
        self.cursor: str | None = None
        self.errors: list[str] = []
        self.run_errors: list[str] = []
        self.on_progress = on_progress

    def step_of(self, step_key: str) -> str:
        name = step_key.removeprefix(self.prefix)
        base, _, rest = name.partition("[")
        base = base.removesuffix("__items")
        return base + (f"[{rest}" if rest else "")

    def poll(self) -> list[tuple[str, str]]:
        """New (step, status) changes since the last poll (each reported to the callback)."""
        connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
        self.cursor = connection.cursor
        changes = []
        for record in connection.records:
            entry = record.event_log_entry
            self._run_error(entry)
            change = self._change(entry)
            if change:
                changes.append(change)
                self.status[change[0]] = change[1]
                if self.on_progress:
                    self.on_progress(
                        ProgressEvent(self.run_id, change[0], change[1], dict(self.status))
                    )
        return changes

    def _run_error(self, entry: Any) -> None:
        """Errors of the run itself (not of a step): why a run failed when no step did."""
        event = entry.dagster_event
        if event is None or entry.step_key:
            return
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if event.event_type_value in ("RUN_FAILURE", "ENGINE_EVENT", "PIPELINE_FAILURE") and error:
            self.run_errors.append(f"run: {error.message.strip()}")
        elif event.event_type_value in ("RUN_FAILURE", "PIPELINE_FAILURE") and entry.user_message:
            self.run_errors.append(f"run: {entry.user_message.strip()}")

    def _change(self, entry: Any) -> tuple[str, str] | None:
        if not entry.step_key:
            return None
        step = self.step_of(entry.step_key)
        if entry.dagster_event is None:
            if entry.user_message.startswith(naming.SKIP_MARKER):
                return step, "skipped"
            return None
        status = _STATUS.get(entry.dagster_event.event_type_value)
        if status == "succeeded" and self.status.get(step) == "skipped":
            return None
        if status == "failed":
            error = entry.dagster_event.step_failure_data.error
            self.errors.append(f"{step}: {error.message.strip() if error else 'failed'}")
        if entry.step_key.endswith("__items") and status != "failed":
            return None  # the fan-out op: its step shows per item, unless the fan-out itself failed
        return (step, status) if status else None


def _summarise(
    project: Project,
    playbook: Playbook,
    run: DagsterRun,
    outcome: dict[str, Any],
    watcher: ProgressWatcher,
    seconds: float,
) -> RunSummary:
    state = project.state
    run_id = run.run_id
    finished = project.instance.get_run_by_id(run_id)
    result = outcome.get("result")
    success = bool(result is not None and result.success)
    errors = list(watcher.errors)
    if not success:
        if "error" in outcome:
            exc = outcome["error"]
            errors.append(f"run: {type(exc).__name__}: {exc}")
        if not errors:  # no step failed: the run itself did, say why
            errors += list(dict.fromkeys(watcher.run_errors))
        if not errors:
            status = finished.status.value if finished else "unknown"
            errors.append(f"run: ended {status} without a step failing (see the run in the UI)")
    root = run.root_run_id or run_id
    sent = len(state.sent_by(run_id, root))
    steps = {k: v for k, v in watcher.status.items() if "[" in k or v != "pending"}
    outputs, per_item = _results(playbook, result)
    for key in per_item:  # a fan-out's steps run per item in one op
        steps.pop(key.partition("[")[0], None)
    steps.update(per_item)
    if run.parent_run_id is None:
        for step in playbook.steps:  # a mapped step that never ran per item shows as skipped
            if steps.get(step.id) == "pending" or (
                step.id not in steps and not any(k.startswith(f"{step.id}[") for k in steps)
            ):
                steps[step.id] = "skipped"
    return RunSummary(
        run_id=run_id,
        playbook=playbook.id,
        success=success,
        steps=steps,
        messages_sent=sent,
        outputs=outputs,
        errors=errors,
        dead_letters=len(state.dead_letters(run_id=run_id)),
        seconds=seconds,
        root_run_id=root,
        parent_run_id=run.parent_run_id,
    )


def _results(playbook: Playbook, result: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The outputs of the steps nothing else reads, and the per-item statuses of fan-outs
    (loaded back through the IO manager)."""
    if result is None:
        return {}, {}
    graph = StepGraph.of(playbook)
    outputs = {}
    with result:
        for step in playbook.steps:
            if graph.dependents(step.id) or graph.fanout_of(step.id):
                continue
            try:
                scope = result.output_for_node(naming.node_name(step.id))
            except Exception:  # nosec B112 # no output: skipped, failed, not re-executed  # noqa: BLE001
                continue
            outputs[step.id] = scope["steps"][step.id]["output"]
        return outputs, item_statuses(playbook, result)
