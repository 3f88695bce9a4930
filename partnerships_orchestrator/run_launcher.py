"""Dagster's default run launcher, plus a health check of each run's process.

A run's process is known from its tags (`partnerships/pid` and `partnerships/host`, set by
`partnerships run`) or from the first engine event Dagster's run worker logs with its pid
("Started process for run (pid: N)"). A STARTED run whose process is gone on this host is dead:
the daemon's run monitoring marks it failed (see `run_monitoring` in `dagster.yaml`), and so does
the next `partnerships` command for runs the CLI started.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

PID_TAG = "partnerships/pid"
HOST_TAG = "partnerships/host"


def this_host() -> str:
    return socket.gethostname()


def process_tags() -> dict[str, str]:
    """Tags naming the current process as a run's worker."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: this_host()}


def run_pid(instance: dg.DagsterInstance, run: DagsterRun) -> int | None:
    """The pid of the process executing ``run`` on this host, if it is known."""
    if run.tags.get(PID_TAG):
        if run.tags.get(HOST_TAG, this_host()) != this_host():
            return None
        return int(run.tags[PID_TAG])
    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records
    for record in records:  # the first engine event with a pid is the run worker's start
        event = record.event_log_entry.dagster_event
        metadata = getattr(event.event_specific_data, "metadata", None) if event else None
        value = (metadata or {}).get("pid")
        text = getattr(value, "text", value)
        if isinstance(text, str) and text.isdigit():
            return int(text)
    return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        try:
            state = next(
                (line for line in status.read_text().splitlines() if line.startswith("State:")),
                "",
            )
        except OSError:
            return False
        return "Z" not in state.split(":", 1)[-1].split()[:1]
    return True


class LocalRunLauncher(DefaultRunLauncher):
    """Launches runs like Dagster's default launcher and tells run monitoring when a run's
    process has died."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_pid(self._instance, run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run process recorded yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process (pid {pid}) is gone: it was killed or crashed"
        )
