"""`partnerships run`: execute one playbook in this process, show progress, summarise the run."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.utils import make_new_run_id
from rich.console import Console
from rich.live import Live
from rich.table import Table

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.fanout import item_statuses
from partnerships_orchestrator.compiler.inputs import check_inputs
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.compiler.location import connections_of
from partnerships_orchestrator.connections import broken_connections, build_resources
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.loader import load_catalog, validate_playbook_expressions
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.spec.problems import SpecError
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.playbook_store import playbook_sources
from partnerships_orchestrator.store.state import StateStore

_STATUS = {
    "STEP_START": "running",
    "STEP_SUCCESS": "succeeded",
    "STEP_FAILURE": "failed",
    "STEP_SKIPPED": "skipped",
    "STEP_UP_FOR_RETRY": "retrying",
    "STEP_RESTARTED": "running",
}
_STYLE = {
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "retrying": "magenta",
    "pending": "dim",
}


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

    def counts(self) -> dict[str, int]:
        result = {"succeeded": 0, "skipped": 0, "failed": 0}
        for status in self.steps.values():
            if status in result:
                result[status] += 1
        return result

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
        }

    def print(self, console: Console) -> None:
        counts = self.counts()
        verdict = "[bold green]succeeded[/]" if self.success else "[bold red]failed[/]"
        console.print(f"run {self.run_id} of `{self.playbook}` {verdict} in {self.seconds:.1f}s")
        console.print(
            f"steps: {counts['succeeded']} succeeded, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; messages sent: {self.messages_sent}; "
            f"dead letters: {self.dead_letters}",
            highlight=False,
        )
        for step_id, value in self.outputs.items():
            text = json.dumps(jsonable(value), default=str)
            console.print(
                f"output {step_id}: {text[:300]}{'…' if len(text) > 300 else ''}",
                highlight=False,
                markup=False,
            )
        for error in self.errors:
            console.print(f"[red]error:[/] {error}", highlight=False)
        if not self.success:
            console.print(
                "resume: open the run in the Dagster UI and choose Re-execute → From "
                "failure (messages already sent are not sent again)",
                highlight=False,
            )


def find_playbook(settings: Settings, playbook_id: str) -> tuple[Playbook, str, Any]:
    """The playbook, its file and the catalog; a clear error when it is unknown or invalid."""
    catalog = load_catalog(
        playbook_sources(settings), templates_dir=settings.templates_dir, check_expressions=False
    )
    for doc in catalog.documents:
        if isinstance(doc.model, Playbook) and doc.model.id == playbook_id:
            problems = validate_playbook_expressions(doc.model, catalog)
            if problems:
                raise SpecError(problems)
            return doc.model, doc.file, catalog
    known = ", ".join(sorted(p.id for p in catalog.playbooks())) or "none"
    raise PartnershipsError(
        f"no valid playbook `{playbook_id}` in {settings.playbooks_dir}",
        hint=f"known playbooks: {known}; `partnerships validate` lists problems",
    )


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The product's Dagster instance (runs from the CLI show up in the UI too)."""
    from partnerships_orchestrator.launcher import prepare_dagster_home

    return dg.DagsterInstance.from_config(str(prepare_dagster_home(settings)))


@dg.logger(
    config_schema=None,
    description="Silent: `partnerships run` shows its own progress; full logs are in the UI.",
)
def _quiet_logger(_init_context: Any) -> logging.Logger:
    logger = logging.Logger("partnerships.run", level=logging.CRITICAL)
    logger.addHandler(logging.NullHandler())
    return logger


def run_playbook(
    settings: Settings,
    playbook_id: str,
    given: dict[str, Any],
    *,
    progress: bool = True,
    console: Console | None = None,
) -> RunSummary:
    """Run a playbook in process; inputs are checked before anything starts."""
    playbook, source, catalog = find_playbook(settings, playbook_id)
    inputs = check_inputs(playbook, given)
    quiet = {"console": _quiet_logger}
    job = build_job(
        playbook,
        build_resources(
            settings, connections_of(catalog), broken_connections(catalog.invalid_files)
        ),
        source=source,
        logger_defs=quiet,
    )  # progress is ours to show; Dagster's own lines are in the UI
    instance = dagster_instance(settings)
    run_id = make_new_run_id()
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                run_config={k: v for k, v in inputs.items() if v is not None},
                instance=instance,
                run_id=run_id,
                raise_on_error=False,
                tags={naming.TRIGGER_TAG: json.dumps({"type": "manual", "via": "cli"})},
            )
        except Exception as exc:  # reported in the summary, never swallowed
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=execute, name=f"run-{run_id[:8]}")
    worker.start()
    watcher = ProgressWatcher(instance, run_id, naming.job_name(playbook.id), playbook)
    watcher.follow(worker, console or Console(stderr=True, width=200), live=progress)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return _summarise(
        playbook, settings, run_id, outcome["result"], watcher, time.monotonic() - started
    )


class ProgressWatcher:
    """Follows a run's events in the instance's event log and keeps each step's status."""

    def __init__(
        self, instance: dg.DagsterInstance, run_id: str, job: str, playbook: Playbook
    ) -> None:
        self.instance = instance
        self.run_id = run_id
        self.prefix = f"{job}__"
        self.status: dict[str, str] = {s.id: "pending" for s in playbook.steps}
        self.seen = 0
        self.errors: list[str] = []

    def step_of(self, step_key: str) -> str:
        name = step_key.removeprefix(self.prefix)
        base, _, rest = name.partition("[")
        base = base.removesuffix("__items")
        return base + (f"[{rest}" if rest else "")

    def poll(self) -> list[tuple[str, str]]:
        """New (step, status) changes since the last poll."""
        records = self.instance.all_logs(self.run_id)
        changes = []
        for record in records[self.seen :]:
            change = self._change(record)
            if change:
                changes.append(change)
                self.status[change[0]] = change[1]
        self.seen = len(records)
        return changes

    def _change(self, record: Any) -> tuple[str, str] | None:
        if not record.step_key:
            return None
        step = self.step_of(record.step_key)
        if record.dagster_event is None:
            if record.user_message.startswith(naming.SKIP_MARKER):
                return step, "skipped"
            return None
        status = _STATUS.get(record.dagster_event.event_type_value)
        if status == "succeeded" and self.status.get(step) == "skipped":
            return None
        if status == "failed":
            error = record.dagster_event.step_failure_data.error
            self.errors.append(f"{step}: {error.message.strip() if error else 'failed'}")
        if record.step_key.endswith("__items") and status != "failed":
            return None  # the fan-out op: its step shows per item, unless the fan-out itself failed
        return (step, status) if status else None

    def follow(self, worker: threading.Thread, console: Console, live: bool) -> None:
        if not live:
            while worker.is_alive():
                worker.join(0.2)
            self.poll()
            return
        if not console.is_terminal:
            while worker.is_alive() or self._pending_records():
                for step, status in self.poll():
                    console.print(f"  {status:>9}  {step}", highlight=False)
                worker.join(0.2)
            return
        with Live(self.table(), console=console, refresh_per_second=8, transient=False) as view:
            while worker.is_alive():
                self.poll()
                view.update(self.table())
                worker.join(0.15)
            self.poll()
            view.update(self.table())

    def _pending_records(self) -> bool:
        return len(self.instance.all_logs(self.run_id)) > self.seen

    def table(self) -> Table:
        table = Table("step", "status", box=None, padding=(0, 2))
        for step, status in self.status.items():
            table.add_row(step, f"[{_STYLE.get(status, 'white')}]{status}[/]")
        return table


def _summarise(
    playbook: Playbook,
    settings: Settings,
    run_id: str,
    result: dg.ExecuteInProcessResult,
    watcher: ProgressWatcher,
    seconds: float,
) -> RunSummary:
    state = StateStore(settings.state_url)
    sent = sum(
        1 for d in state.deliveries(run_id) if d["run_id"] == run_id and d["status"] == "sent"
    )
    steps = {k: v for k, v in watcher.status.items() if "[" in k or v != "pending"}
    per_item = item_statuses(playbook, result)  # a fan-out's steps run per item in one op
    for key in per_item:
        steps.pop(key.partition("[")[0], None)
    steps.update(per_item)
    for step in playbook.steps:  # a mapped step that never ran per item shows as skipped
        if steps.get(step.id) == "pending" or (
            step.id not in steps and not any(k.startswith(f"{step.id}[") for k in steps)
        ):
            steps[step.id] = "skipped"
    return RunSummary(
        run_id=run_id,
        playbook=playbook.id,
        success=result.success,
        steps=steps,
        messages_sent=sent,
        outputs=_leaf_outputs(playbook, result),
        errors=watcher.errors,
        dead_letters=len(state.dead_letters(run_id=run_id)),
        seconds=seconds,
    )


def _leaf_outputs(playbook: Playbook, result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    graph = StepGraph.of(playbook)
    outputs = {}
    for step in playbook.steps:
        if graph.dependents(step.id) or graph.fanout_of(step.id):
            continue
        try:
            scope = result.output_for_node(naming.node_name(step.id))
        except Exception:  # nosec B112 # no output: the step was skipped or failed  # noqa: BLE001
            continue
        outputs[step.id] = scope["steps"][step.id]["output"]
    return outputs
