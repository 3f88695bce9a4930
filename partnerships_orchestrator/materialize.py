"""`partnerships materialize`: materialize assets in this process, show progress, summarise.

The run goes through the product's Dagster instance, so it appears in the UI like any other.
Progress comes from the run's own event log: each asset as it starts, the records a sync has read
and the rows it has written, check results, and the materialization's numbers.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.utils import make_new_run_id
from rich.console import Console
from rich.table import Table

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.spec.models import Sync
from partnerships_orchestrator.spec.suggest import did_you_mean

PROGRESS_MARK = "records read"
SUMMARY_KEYS = (
    "records_seen",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "dagster/row_count",
    "pages",
)


@dataclass
class AssetOutcome:
    asset: str
    status: str = "pending"
    numbers: dict[str, Any] = field(default_factory=dict)
    checks_failed: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class MaterializeSummary:
    run_id: str
    success: bool
    seconds: float
    assets: dict[str, AssetOutcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "assets": {
                name: {
                    "status": o.status,
                    **o.numbers,
                    "checks_failed": o.checks_failed,
                    "error": o.error,
                }
                for name, o in self.assets.items()
            },
        }

    def print(self, console: Console) -> None:
        table = Table("asset", "status", "numbers", "failed checks", box=None, padding=(0, 2))
        for name, outcome in self.assets.items():
            style = {"materialized": "green", "failed": "red"}.get(outcome.status, "yellow")
            numbers = ", ".join(
                f"{k.removeprefix('dagster/')} {v}" for k, v in outcome.numbers.items()
            )
            table.add_row(
                name, f"[{style}]{outcome.status}[/]", numbers, ", ".join(outcome.checks_failed)
            )
        console.print(table)
        for name, outcome in self.assets.items():
            if outcome.error:
                console.print(f"[red]{name}:[/] {outcome.error}", highlight=False)
        verdict = "[green]succeeded[/]" if self.success else "[red]failed[/]"
        console.print(
            f"run {self.run_id} {verdict} in {self.seconds:.1f} s "
            f"({sum(o.status == 'materialized' for o in self.assets.values())} of "
            f"{len(self.assets)} assets materialized)"
        )


def _selection(repo: dg.RepositoryDefinition, names: Sequence[str]) -> list[dg.AssetKey]:
    known = {key.to_user_string(): key for key in repo.asset_graph.materializable_asset_keys}
    if not known:
        raise PartnershipsError(
            "there are no assets to materialize",
            hint="add a `kind: sync`, `dataset`, `metrics` or `report` document to the playbooks "
            "folder",
        )
    if not names:
        return sorted(known.values(), key=lambda k: k.to_user_string())
    keys = []
    for name in names:
        key = known.get(naming.asset_name(name))
        if key is None:
            raise PartnershipsError(
                f"no asset `{name}`",
                hint=did_you_mean(name, sorted(known), "assets", always_list=True),
            )
        keys.append(key)
    return keys


def materialize_assets(
    project: Project,
    names: Sequence[str] = (),
    *,
    full_refresh: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> MaterializeSummary:
    """Materialize the named assets (every asset when none is named) and their checks."""
    console = console or Console(stderr=True, width=200)
    repo = project.repository()
    keys = _selection(repo, names)
    job = repo.get_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
    syncs = {
        naming.asset_name(a)
        for doc in project.catalog.documents
        if isinstance(doc.model, Sync)
        for a in doc.model.asset_ids()
    }
    selected = {k.to_user_string() for k in keys}
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    if full_refresh:
        run_config["ops"] = {
            name: {"config": {"full_refresh": True}} for name in sorted(selected & syncs)
        }
    instance = project.instance
    run_id = make_new_run_id()
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                run_config=run_config, instance=instance, run_id=run_id, raise_on_error=False
            )
        except Exception as exc:  # reported to the caller, never swallowed
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=execute, name=f"materialize-{run_id[:8]}")
    worker.start()
    watcher = _Watcher(instance, run_id, [k.to_user_string() for k in keys], console, progress)
    while worker.is_alive():
        watcher.poll()
        worker.join(0.2)
    watcher.poll()
    if "error" in outcome:
        raise outcome["error"]
    result: dg.ExecuteInProcessResult = outcome["result"]
    for outcome_ in watcher.assets.values():
        if outcome_.status in ("pending", "running"):
            outcome_.status = "failed" if outcome_.status == "running" else "not run"
    return MaterializeSummary(run_id, result.success, time.monotonic() - started, watcher.assets)


class _Watcher:
    """Follows the run's event log and prints what happens as it happens."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        assets: list[str],
        console: Console,
        live: bool,
    ) -> None:
        self.instance = instance
        self.run_id = run_id
        self.console = console
        self.live = live
        self.seen = 0
        self.assets = {name: AssetOutcome(name) for name in assets}

    def say(self, text: str) -> None:
        if self.live:
            self.console.print(text, highlight=False)

    def poll(self) -> None:
        records = self.instance.all_logs(self.run_id)
        for record in records[self.seen :]:
            self._handle(record)
        self.seen = len(records)

    def _handle(self, record: Any) -> None:
        step = record.step_key or ""
        outcome = self.assets.get(step)
        event = record.dagster_event
        if event is None:
            if PROGRESS_MARK in (record.user_message or ""):
                self.say(f"  ... {record.user_message}")
            return
        kind = event.event_type_value
        if kind == "STEP_START" and outcome:
            outcome.status = "running"
            self.say(f"[bold]{step}[/]: materializing")
        elif kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            name = materialization.asset_key.to_user_string()
            target = self.assets.get(name)
            if target:
                target.status = "materialized"
                target.numbers = {
                    k: materialization.metadata[k].value
                    for k in SUMMARY_KEYS
                    if k in materialization.metadata
                }
                shown = ", ".join(
                    f"{k.removeprefix('dagster/')} {v}" for k, v in target.numbers.items()
                )
                self.say(f"[green]{name}[/]: materialized ({shown})")
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            name = evaluation.asset_key.to_user_string()
            if not evaluation.passed:
                target = self.assets.get(name)
                if target:
                    target.checks_failed.append(evaluation.check_name)
                self.say(
                    f"[yellow]{name}[/]: check {evaluation.check_name} failed"
                    + (f": {evaluation.description}" if evaluation.description else "")
                )
        elif kind == "STEP_FAILURE" and outcome:
            outcome.status = "failed"
            outcome.error = _reason(event.step_failure_data.error)
            self.say(f"[red]{step}[/]: failed: {outcome.error}")


FIRST_START_TAG = "partnerships/first_start"


def first_start_assets(project: Project) -> list[dg.AssetKey]:
    """What `partnerships up` materializes on a fresh home: every asset, so the UI shows
    CRM -> datasets -> metrics -> reports filled in. Nothing when no asset document exists or
    any asset was materialized (or a first-start run launched) before."""
    keys = sorted(project.repository().asset_graph.materializable_asset_keys)
    instance = project.instance
    if not keys or instance.get_run_records(dg.RunsFilter(tags={FIRST_START_TAG: "true"}), limit=1):
        return []
    if any(instance.get_latest_materialization_event(key) for key in keys):
        return []
    return keys


def launch_first_start(
    project: Project, keys: Sequence[dg.AssetKey], ui_url: str, say: Callable[[str], None]
) -> threading.Thread:
    """Launch the materialization of ``keys`` as a run of the daemon (the UI is already up and
    shows it live); a thread says how it ended. Returns that thread."""
    from partnerships_orchestrator.api.webserver import Webserver

    run_id = Webserver(ui_url).launch_assets(keys, {FIRST_START_TAG: "true"})
    say(f"materializing {len(keys)} assets on first start: {ui_url}/runs/{run_id}")
    watcher = threading.Thread(
        target=_say_when_done,
        args=(project.instance, run_id, len(keys), say),
        name="first-start-materialization",
        daemon=True,
    )
    watcher.start()
    return watcher


def _say_when_done(
    instance: dg.DagsterInstance, run_id: str, total: int, say: Callable[[str], None]
) -> None:
    """Wait for the run to end, then say how many assets it materialized."""
    while True:
        record = instance.get_run_record_by_id(run_id)
        if record is None or record.dagster_run.is_finished:
            break
        time.sleep(1.0)
    done = len(
        {
            r.asset_key
            for r in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
            ).records
        }
    )
    status = record.dagster_run.status.value if record else "unknown"
    say(f"assets: {done} of {total} materialized on first start (run {run_id}: {status})")


def _reason(error: Any) -> str:
    """The innermost error's first line (Dagster wraps the asset's own error)."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "failed"
    text = error.message.strip()
    line = text.splitlines()[0] if text else "failed"
    return re.sub(r"^partnerships_orchestrator\.[\w.]+: ", "", line)  # our errors speak plainly
