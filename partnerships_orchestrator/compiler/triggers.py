"""Playbook triggers as Dagster schedules and sensors, each naming its job by `job_name`
(so building them never forces a job to be compiled)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.inputs import check_inputs
from partnerships_orchestrator.errors import InputError
from partnerships_orchestrator.spec.models import (
    CronTrigger,
    DatasetTrigger,
    Playbook,
    WebhookTrigger,
)
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.webhook_launches import WebhookLaunches

WEBHOOK_SENSOR_INTERVAL = 2  # seconds between inbox polls
WEBHOOK_TAG = "partnerships/webhook_id"


def schedules_for(playbook: Playbook) -> list[dg.ScheduleDefinition]:
    crons = [t for t in playbook.triggers if isinstance(t, CronTrigger)]
    job = naming.job_name(playbook.id)
    return [
        dg.ScheduleDefinition(
            name=f"{job}__schedule" if len(crons) == 1 else f"{job}__schedule_{n}",
            cron_schedule=trigger.cron,
            execution_timezone=trigger.timezone,
            job_name=job,
            description=f"`{playbook.id}` at `{trigger.cron}` ({trigger.timezone})",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
        for n, trigger in enumerate(crons, start=1)
    ]


def sensors_for(playbook: Playbook, state_url: str) -> list[dg.SensorDefinition]:
    sensors: list[dg.SensorDefinition] = []
    job = naming.job_name(playbook.id)
    if any(isinstance(t, WebhookTrigger) for t in playbook.triggers):
        sensors.append(_webhook_sensor(playbook, job, state_url))
    for trigger in playbook.triggers:
        if isinstance(trigger, DatasetTrigger):
            sensors.append(_dataset_sensor(playbook, job, trigger.dataset))
    return sensors


def webhook_run_request(playbook: Playbook, entry: dict[str, Any]) -> dg.RunRequest:
    """A run for one inbound webhook call: payload keys that name inputs fill those inputs."""
    payload = entry["payload"] if isinstance(entry["payload"], dict) else {"body": entry["payload"]}
    given = {k: v for k, v in payload.items() if k in playbook.inputs}
    inputs = check_inputs(playbook, given)
    trigger = {
        "type": "webhook",
        "webhook_id": entry["webhook_id"],
        "payload": payload,
        "received_at": jsonable(entry["received_at"]),
        **payload,
    }
    return dg.RunRequest(
        run_key=f"webhook:{entry['webhook_id']}",
        run_config={k: v for k, v in inputs.items() if v is not None},
        tags={naming.TRIGGER_TAG: json.dumps(jsonable(trigger)), WEBHOOK_TAG: entry["webhook_id"]},
    )


def _webhook_sensor(playbook: Playbook, job: str, state_url: str) -> dg.SensorDefinition:
    def evaluate(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
        cursor = int(context.cursor or 0)
        store = StateStore(state_url)
        launches = WebhookLaunches(state_url)
        for entry in store.inbox_after(playbook.id, cursor):
            launch = launches.state(playbook.id, entry["webhook_id"])
            if launch == "pending":
                break  # the API is starting this one: look again at the next tick
            cursor = entry["id"]
            if launch == "launched" or (launch == "abandoned" and _has_run(context, entry)):
                continue
            try:
                yield webhook_run_request(playbook, entry)
            except InputError as exc:
                context.log.warning(f"webhook {entry['webhook_id']} refused: {exc}")
                store.add_dead_letter(
                    playbook=playbook.id,
                    step="(trigger)",
                    run_id="",
                    action="refused",
                    error=exc,
                    inputs=entry["payload"],
                )
        context.update_cursor(str(cursor))

    return dg.SensorDefinition(
        name=f"{job}__webhook",
        evaluation_fn=evaluate,
        job_name=job,
        minimum_interval_seconds=WEBHOOK_SENSOR_INTERVAL,
        description=f"Runs `{playbook.id}` for each call to /api/partnerships/webhooks/{playbook.id}",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


def _has_run(context: dg.SensorEvaluationContext, entry: dict[str, Any]) -> bool:
    filters = dg.RunsFilter(tags={WEBHOOK_TAG: entry["webhook_id"]})
    return bool(context.instance.get_run_records(filters, limit=1))


def _dataset_sensor(playbook: Playbook, job: str, dataset: str) -> dg.SensorDefinition:
    def evaluate(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
    ) -> dg.RunRequest:
        trigger = {
            "type": "dataset",
            "dataset": dataset,
            "run_id": asset_event.run_id,
            "timestamp": asset_event.timestamp,
        }
        return dg.RunRequest(
            run_key=f"dataset:{dataset}:{asset_event.run_id}:{asset_event.timestamp}",
            tags={naming.TRIGGER_TAG: json.dumps(trigger)},
        )

    return dg.AssetSensorDefinition(
        name=f"{job}__after_{naming.safe(dataset)}",
        asset_key=naming.asset_key(dataset),
        asset_materialization_fn=evaluate,
        job_name=job,
        description=f"Runs `{playbook.id}` after `{dataset}` materializes",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
