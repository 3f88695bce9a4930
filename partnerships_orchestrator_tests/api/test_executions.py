"""Executions are Dagster runs started, read, cancelled and retried through the API."""

from __future__ import annotations

import sqlite3

import httpx

from partnerships_orchestrator_tests.api.conftest import Stack, wait_for

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _finished(client: httpx.Client, run_id: str) -> dict | None:
    body = client.get(f"/executions/{run_id}").json()
    return body if body["status"] in FINISHED else None


def test_execute_runs_the_playbook_and_the_execution_shows_steps_logs_and_messages(stack: Stack):
    operator = stack.client(stack.token("operator"))
    started = operator.post("/playbooks/api-hello/execute", json={"inputs": {"tier": "silver"}})
    assert started.status_code == 202, started.text
    run_id = started.json()["execution_id"]
    done = wait_for(lambda: _finished(operator, run_id))
    assert done["status"] == "SUCCESS" and done["playbook"] == "api-hello"
    assert done["trigger"]["via"] == "api"
    steps = {s["key"]: s for s in done["steps"]}
    assert {k: s["status"] for k, s in steps.items()} == {
        "partners": "SUCCESS",
        "count": "SUCCESS",
        "greet": "SUCCESS",
    }
    assert all(s["attempts"] >= 1 for s in steps.values())
    assert len(done["messages_sent"]) == 2  # limit 2 silver partners, one email each
    assert any(line["event"] == "RUN_SUCCESS" for line in done["logs"])
    assert done["started_at"] and done["ended_at"] >= done["started_at"]
    listed = operator.get(
        "/executions", params={"playbook": "api-hello", "status": "SUCCESS"}
    ).json()
    assert run_id in [e["id"] for e in listed["items"]]


def test_inputs_are_checked_like_the_command_line_before_anything_runs(stack: Stack):
    operator = stack.client(stack.token("operator"))
    before = operator.get("/executions", params={"playbook": "api-hello"}).json()["items"]
    refused = operator.post(
        "/playbooks/api-hello/execute", json={"inputs": {"tier": "platinum", "limt": 1}}
    )
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["type"].endswith(":invalid-inputs")
    assert "unknown input `limt`" in problem["detail"] and "platinum" in problem["detail"]
    unknown_key = operator.post("/playbooks/api-hello/execute", json={"input": {}})
    assert unknown_key.status_code == 422  # strict body: `input` is not a field
    after = operator.get("/executions", params={"playbook": "api-hello"}).json()["items"]
    assert [e["id"] for e in after] == [e["id"] for e in before]


def test_a_slow_run_is_cancelled(stack: Stack):
    operator = stack.client(stack.token("operator"))
    run_id = operator.post("/playbooks/api-slow/execute", json={}).json()["execution_id"]
    wait_for(lambda: operator.get(f"/executions/{run_id}").json()["status"] == "STARTED")
    cancelled = operator.post(f"/executions/{run_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    done = wait_for(lambda: _finished(operator, run_id))
    assert done["status"] == "CANCELED"
    again = operator.post(f"/executions/{run_id}/cancel")
    assert again.status_code == 409 and "CANCELED" in again.json()["detail"]


def test_retry_after_fixing_the_cause_runs_only_the_failed_step_and_sends_nothing_twice(
    stack: Stack,
):
    operator = stack.client(stack.token("operator"))
    run_id = operator.post("/playbooks/api-fixable/execute", json={}).json()["execution_id"]
    failed = wait_for(lambda: _finished(operator, run_id))
    assert failed["status"] == "FAILURE"
    first = {s["key"]: s["status"] for s in failed["steps"]}
    assert first == {"partners": "SUCCESS", "greet": "SUCCESS", "check": "FAILURE"}
    assert any("api_fix_me" in line["message"] for line in failed["logs"])
    assert len(failed["messages_sent"]) == 2
    [letter] = failed["dead_letters"]
    assert letter["step"] == "check" and "api_fix_me" in letter["error"]
    listed = operator.get("/dead-letters", params={"execution": run_id}).json()["items"]
    assert [d["id"] for d in listed] == [letter["id"]]
    assert operator.post(f"/dead-letters/{letter['id']}/redrive").status_code == 409  # still broken
    with sqlite3.connect(stack.home / "warehouse.db") as db:  # fix the cause
        db.execute("create table if not exists api_fix_me (id integer)")
    redriven = operator.post(f"/dead-letters/{letter['id']}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["output"]["rows"] == [{"n": 0}]
    assert operator.get(f"/dead-letters/{letter['id']}").json()["status"] == "redriven"

    retried = operator.post(f"/executions/{run_id}/retry")
    assert retried.status_code == 202, retried.text
    retry_id = retried.json()["execution_id"]
    done = wait_for(lambda: _finished(operator, retry_id))
    assert done["status"] == "SUCCESS"
    assert done["parent_execution_id"] == run_id and done["root_execution_id"] == run_id
    ran = {s["key"] for s in done["steps"] if s["status"] is not None}
    assert ran == {"check"}  # the query and the emails did not run again
    assert done["messages_sent"] == []
    outbox = operator.get("/outbox", params={"execution": retry_id}).json()
    assert outbox["items"] == []
    assert operator.post(f"/executions/{retry_id}/retry").status_code == 409


def test_executions_page_with_a_cursor(stack: Stack):
    operator = stack.client(stack.token("operator"))
    for _ in range(2):
        operator.post("/playbooks/api-foreign/execute", json={})  # not ours: 404, no run
    first = operator.get("/executions", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = operator.get("/executions", params={"limit": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]
    assert all(e["playbook"] != "api-foreign" for e in first["items"] + second.json()["items"])
    unknown = operator.get("/executions", params={"cursor": "no-such-run"})
    assert unknown.status_code == 422 and "no-such-run" in unknown.json()["detail"]
