"""The inbox sensor and the API's own launch of a webhook call: each call runs exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import update

from partnerships_orchestrator.compiler.triggers import sensors_for
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.webhook_launches import (
    GRACE,
    WebhookLaunches,
    webhook_launches,
)
from partnerships_orchestrator_tests.compiler.conftest import playbook_from
from partnerships_orchestrator_tests.compiler.test_triggers import PLAYBOOK


def _tick(settings, instance, cursor=None) -> dg.SensorExecutionData:
    playbook = playbook_from(PLAYBOOK)
    webhook = next(
        s for s in sensors_for(playbook, settings.state_url) if s.name.endswith("__webhook")
    )
    return webhook.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_sensor_waits_for_a_pending_api_launch_and_skips_a_finished_one(settings, instance):
    store, launches = StateStore(settings.state_url), WebhookLaunches(settings.state_url)
    for webhook_id in ("msg_api", "msg_pending", "msg_plain"):
        if webhook_id != "msg_plain":
            assert launches.claim("follow-up", webhook_id)
        store.add_to_inbox("follow-up", webhook_id, {"event_id": "E1"})
    assert not launches.claim("follow-up", "msg_api")  # a retried delivery is a duplicate
    launches.launched("follow-up", "msg_api", "run-by-the-api")

    first = _tick(settings, instance)
    assert first.run_requests == []  # msg_api was launched; msg_pending is still the API's
    assert launches.state("follow-up", "msg_pending") == "pending"

    launches.release("follow-up", "msg_pending")  # the API could not launch it
    second = _tick(settings, instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == ["webhook:msg_pending", "webhook:msg_plain"]
    assert _tick(settings, instance, second.cursor).run_requests == []


def test_sensor_starts_a_call_whose_api_launch_went_quiet(settings, instance):
    store, launches = StateStore(settings.state_url), WebhookLaunches(settings.state_url)
    assert launches.claim("follow-up", "msg_lost")
    store.add_to_inbox("follow-up", "msg_lost", {"event_id": "E2"})
    with launches.engine.begin() as conn:  # the API died right after claiming it
        conn.execute(
            update(webhook_launches).values(
                claimed_at=datetime.now(UTC) - GRACE - timedelta(seconds=1)
            )
        )
    assert launches.state("follow-up", "msg_lost") == "abandoned"
    [request] = _tick(settings, instance).run_requests
    assert request.run_key == "webhook:msg_lost"
    assert request.tags["partnerships/webhook_id"] == "msg_lost"
