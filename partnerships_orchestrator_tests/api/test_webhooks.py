"""`POST /webhooks/{id}`: signed calls run the playbook once through the inbox; forged, stale,
replayed and oversized ones are refused and run nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from standardwebhooks import Webhook

from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.api.conftest import PREFIX, Stack, wait_for


def _signed(
    stack: Stack, body: bytes, *, at: datetime | None = None, msg_id: str | None = None
) -> dict[str, str]:
    secret = StateStore(stack.state_url).webhook_secret("api-hello")
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def _post(stack: Stack, body: bytes, headers: dict[str, str], **params: str) -> httpx.Response:
    return httpx.post(
        f"{stack.api}{PREFIX}/webhooks/api-hello",
        content=body,
        headers=headers,
        params=params,
        timeout=90,
    )


def _runs_for(stack: Stack, webhook_id: str) -> list[dict]:
    viewer = stack.client(stack.token("viewer"))
    items = viewer.get("/executions", params={"playbook": "api-hello", "limit": 200}).json()
    return [e for e in items["items"] if (e["trigger"] or {}).get("webhook_id") == webhook_id]


def _inbox_ids(stack: Stack) -> list[str]:
    store = StateStore(stack.state_url)
    with store.engine.connect() as conn:
        return list(conn.execute(select(tables.inbox.c.webhook_id)).scalars())


def test_signed_webhook_runs_once_and_refused_ones_run_nothing(stack: Stack):
    body = json.dumps({"tier": "bronze", "limit": 1}).encode()
    headers = _signed(stack, body)
    accepted = _post(stack, body, headers, wait="60")
    assert accepted.status_code == 200, accepted.text  # finished within `wait`
    answer = accepted.json()
    assert answer["event_id"] and answer["duplicate"] is False
    assert answer["status"] == "SUCCESS"
    webhook_id = headers["webhook-id"]

    replay = _post(stack, body, headers)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True

    forged = dict(headers, **{"webhook-id": f"msg_{uuid.uuid4().hex}"})  # signature of another id
    stale_headers = _signed(stack, body, at=datetime.now(UTC) - timedelta(minutes=6))
    big = json.dumps({"tier": "gold", "pad": "x" * (300 << 10)}).encode()
    big_headers = _signed(stack, big)
    refusals = {
        "forged": (_post(stack, body, forged), 401, "No matching signature"),
        "stale": (_post(stack, body, stale_headers), 401, "too old"),
        "unsigned": (_post(stack, body, {"content-type": "application/json"}), 401, "Missing"),
        "oversized": (_post(stack, big, big_headers), 413, "at most"),
    }
    for name, (response, status, detail) in refusals.items():
        assert response.status_code == status, name
        assert response.headers["content-type"].startswith("application/problem+json"), name
        assert detail in response.json()["detail"], name

    # a later valid call is picked up after everything above: the sensor has seen it all
    later = _signed(stack, b"{}")
    assert _post(stack, b"{}", later, wait="60").json()["status"] == "SUCCESS"
    assert len(_runs_for(stack, webhook_id)) == 1
    inbox = _inbox_ids(stack)
    assert inbox.count(webhook_id) == 1
    for refused in (forged, stale_headers, big_headers):
        assert refused["webhook-id"] not in inbox
        assert _runs_for(stack, refused["webhook-id"]) == []


def test_webhook_answers_202_with_the_event_before_the_run(stack: Stack):
    body = b'{"tier": "gold"}'
    answer = _post(stack, body, _signed(stack, body))
    assert answer.status_code == 202
    assert answer.json()["event_id"] and "execution_id" not in {
        k for k, v in answer.json().items() if v
    }


def test_webhook_for_a_playbook_without_a_webhook_trigger_is_404(stack: Stack):
    body = b"{}"
    answer = httpx.post(
        f"{stack.api}{PREFIX}/webhooks/api-slow", content=body, headers=_signed(stack, body)
    )
    assert answer.status_code == 404
    assert answer.json()["type"] == "urn:partnerships:problem:not-found"


def test_a_call_with_inputs_the_playbook_refuses_becomes_a_dead_letter_not_a_run(stack: Stack):
    body = json.dumps({"tier": "gold", "limit": "many"}).encode()
    headers = _signed(stack, body)
    assert _post(stack, body, headers).status_code == 202
    admin = stack.client(stack.admin)

    def refused() -> list[dict]:
        letters = admin.get("/dead-letters", params={"playbook": "api-hello"}).json()["items"]
        return [d for d in letters if d["action"] == "refused" and d["inputs"]["limit"] == "many"]

    [letter] = wait_for(refused, timeout=60)
    assert "limit" in letter["error"]
    assert _runs_for(stack, headers["webhook-id"]) == []
