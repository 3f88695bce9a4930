"""Triggers: cron schedules, the webhook inbox sensor (with its cursor) and dataset sensors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg

from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.compiler.triggers import schedules_for, sensors_for
from partnerships_orchestrator.connections import build_resources
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.compiler.conftest import playbook_from

PLAYBOOK = """
id: follow-up
triggers:
  - {type: cron, cron: "30 8 * * 1", timezone: Europe/Berlin}
  - {type: webhook}
  - {type: dataset, dataset: hubspot_companies}
inputs:
  event_id: {type: string, default: E001}
  attendees: {type: integer, required: false}
steps:
  - {id: a, type: evaluate, expression: "trigger"}
"""


def test_cron_trigger_is_a_running_schedule_in_its_timezone():
    [schedule] = schedules_for(playbook_from(PLAYBOOK))
    assert (schedule.name, schedule.job_name) == ("follow_up__schedule", "follow_up")
    assert schedule.cron_schedule == "30 8 * * 1" and schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_webhook_sensor_turns_each_inbox_entry_into_one_run(settings, instance):
    playbook = playbook_from(PLAYBOOK)
    store = StateStore(settings.state_url)
    webhook = next(
        s for s in sensors_for(playbook, settings.state_url) if s.name.endswith("__webhook")
    )
    store.add_to_inbox("follow-up", "msg_1", {"event_id": "E007", "note": "hello"})
    assert store.add_to_inbox("follow-up", "msg_1", {"event_id": "E007"}) is None  # deduped
    store.add_to_inbox("follow-up", "msg_2", {"attendees": "many"})  # not an integer
    store.add_to_inbox("other-playbook", "msg_3", {"event_id": "E009"})

    context = dg.build_sensor_context(instance=instance)
    result = webhook.evaluate_tick(context)
    [request] = result.run_requests
    assert request.run_key == "webhook:msg_1"
    assert request.run_config == {"event_id": "E007"}
    trigger = json.loads(request.tags["partnerships/trigger"])
    assert trigger["type"] == "webhook" and trigger["payload"]["note"] == "hello"
    [refused] = store.dead_letters(playbook="follow-up")
    assert refused["action"] == "refused" and "attendees" in refused["error"]

    again = webhook.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert again.run_requests == []  # the cursor moved past both entries


def test_dataset_trigger_is_an_asset_sensor_naming_its_job(settings):
    playbook = playbook_from(PLAYBOOK)
    sensor = next(s for s in sensors_for(playbook, settings.state_url) if "__after_" in s.name)
    assert sensor.name == "follow_up__after_hubspot_companies"
    assert sensor.asset_key == dg.AssetKey("hubspot_companies")
    assert sensor.job_name == "follow_up"


def test_scheduled_runs_see_their_scheduled_time_as_the_trigger(settings):
    job = build_job(playbook_from(PLAYBOOK), build_resources(settings, None))
    when = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    result = job.execute_in_process(tags={"dagster/scheduled_execution_time": when.isoformat()})
    trigger = result.output_for_node("a")["steps"]["a"]["output"]
    assert trigger == {"type": "cron", "scheduled_time": when}
