"""The runs in the Dagster instance, as `partnerships runs` lists them, and dead ones found.

Runs are Dagster's: this reads them from the instance (no second copy of run state). A run that
`partnerships run` started carries its process id and host in its tags; when that run is still
STARTED but its process is gone (killed, the machine rebooted), it is marked failed here, so it
can be resumed (`partnerships resume RUN_ID`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.run_launcher import HOST_TAG, PID_TAG, process_alive, this_host


@dataclass(frozen=True)
class RunInfo:
    """One run as the CLI (and the API) shows it."""

    run_id: str
    playbook: str | None
    job: str
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    root_run_id: str
    parent_run_id: str | None
    via: str

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "playbook": self.playbook,
            "job": self.job,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(self.seconds, 3) if self.seconds is not None else None,
            "root_run_id": self.root_run_id,
            "parent_run_id": self.parent_run_id,
            "via": self.via,
        }


def _time(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp, UTC) if stamp else None


def _utc(stamp: datetime) -> datetime:
    """Dagster's storage keeps UTC, without a zone on SQLite."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _via(tags: dict[str, str]) -> str:
    """How the run was started: cli, resume, schedule, sensor, webhook, ui..."""
    trigger = tags.get(naming.TRIGGER_TAG)
    if trigger:
        try:
            data = json.loads(trigger)
        except ValueError:
            return trigger
        return str(data.get("via") or data.get("type") or "manual")
    if tags.get("dagster/schedule_name"):
        return "schedule"
    if tags.get("dagster/sensor_name"):
        return "sensor"
    return "ui" if tags.get("dagster/parent_run_id") is None else "re-execution"


def run_info(record: RunRecord) -> RunInfo:
    run = record.dagster_run
    tags = dict(run.tags)
    return RunInfo(
        run_id=run.run_id,
        playbook=tags.get(naming.PLAYBOOK_TAG),
        job=run.job_name,
        status=run.status.value,
        created_at=_utc(record.create_timestamp),
        started_at=_time(record.start_time),
        ended_at=_time(record.end_time),
        root_run_id=run.root_run_id or run.run_id,
        parent_run_id=run.parent_run_id,
        via=_via(tags),
    )


def recent_runs(
    instance: dg.DagsterInstance, *, limit: int = 20, playbook_id: str | None = None
) -> list[RunInfo]:
    """The newest runs first (of one playbook when asked)."""
    filters = dg.RunsFilter(tags={naming.PLAYBOOK_TAG: playbook_id}) if playbook_id else None
    return [run_info(r) for r in instance.get_run_records(filters=filters, limit=limit)]


def mark_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail every STARTED run whose recorded process on this host is gone; returns their ids."""
    dead = []
    started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for run in started:
        pid = run.tags.get(PID_TAG)
        if not pid or run.tags.get(HOST_TAG) != this_host() or process_alive(int(pid)):
            continue
        instance.report_run_failed(
            run,
            f"the process that ran it (pid {pid}) is gone: it was killed or crashed; "
            f"`partnerships resume {run.run_id}` finishes it",
        )
        dead.append(run.run_id)
    return dead
