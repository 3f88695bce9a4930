"""Roles, teams, the audit log, rate limits and problem+json on every error path."""

from __future__ import annotations

import httpx
import pytest

from partnerships_orchestrator_tests.api.conftest import PREFIX, Stack

ROLES = ["viewer", "operator", "editor", "admin"]
NEW = {"id": "api-rbac", "owners": ["team-a"], "steps": [{"id": "a", "type": "evaluate"}]}

# method, path, body, the least role allowed
ENDPOINTS = [
    ("GET", "/playbooks", None, "viewer"),
    ("GET", "/playbooks/api-hello", None, "viewer"),
    ("GET", "/playbooks/api-hello/revisions", None, "viewer"),
    ("POST", "/playbooks", NEW, "editor"),  # invalid (an evaluate step needs work): 422
    ("PUT", "/playbooks/api-hello", NEW, "editor"),  # file-backed: 409
    ("DELETE", "/playbooks/api-hello", None, "editor"),  # file-backed: 409
    ("POST", "/playbooks/api-hello/execute", {"inputs": {"nope": 1}}, "operator"),  # 422
    ("GET", "/executions", None, "viewer"),
    ("POST", "/executions/no-such-run/cancel", None, "operator"),  # 404
    ("POST", "/executions/no-such-run/retry", None, "operator"),  # 404
    ("GET", "/dead-letters", None, "viewer"),
    ("POST", "/dead-letters/999999/redrive", None, "operator"),  # 404
    ("GET", "/outbox", None, "viewer"),
    ("GET", "/audit", None, "admin"),
    ("GET", "/tokens", None, "admin"),
    ("POST", "/tokens", {"role": "nobody", "teams": ["x"]}, "admin"),  # 422
]


def _token_id(secret: str) -> str:
    return "tok_" + secret.split("_")[1]


def _call(client: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    return (
        client.request(method, path, json=body)
        if body is not None
        else client.request(method, path)
    )


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_its_endpoints_and_refusals_are_audited(stack: Stack, role: str):
    secret = stack.token(role)
    client = stack.client(secret)
    for method, path, body, least in ENDPOINTS:
        answer = _call(client, method, path, body)
        if ROLES.index(role) < ROLES.index(least):
            assert answer.status_code == 403, (role, method, path, answer.text)
            assert answer.json()["type"] == "urn:partnerships:problem:forbidden"
        else:
            assert answer.status_code not in (401, 403), (role, method, path, answer.text)
            assert answer.status_code < 500, (role, method, path, answer.text)
    audit = stack.client(stack.admin).get(
        "/audit", params={"token_id": _token_id(secret), "limit": 1000}
    )
    rows = audit.json()["items"]
    mutating = [(m, p) for m, p, _, _ in ENDPOINTS if m != "GET"]
    assert len(rows) >= len(mutating)
    denied = {row["action"] for row in rows if row["status"] == 403}
    expected = {
        f"{m} {p}".replace("api-hello", "{playbook_id}")
        .replace("no-such-run", "{run_id}")
        .replace("999999", "{letter_id}")
        for m, p, _, least in ENDPOINTS
        if m != "GET" and ROLES.index(role) < ROLES.index(least)
    }
    assert denied == expected
    assert all(
        row["outcome"] == "denied" and row["address"] for row in rows if row["status"] == 403
    )


def test_a_foreign_team_sees_nothing_of_another_teams_playbooks_or_runs(stack: Stack):
    mine = stack.client(stack.token("operator"))
    run_id = mine.post("/playbooks/api-hello/execute", json={}).json()["execution_id"]
    secret = stack.token("editor", team="team-b")
    foreign = stack.client(secret)
    assert "api-hello" not in [p["id"] for p in foreign.get("/playbooks").json()["items"]]
    for method, path in [
        ("GET", "/playbooks/api-hello"),
        ("GET", "/playbooks/api-hello/revisions"),
        ("POST", "/playbooks/api-hello/execute"),
        ("GET", f"/executions/{run_id}"),
        ("POST", f"/executions/{run_id}/cancel"),
        ("POST", f"/executions/{run_id}/retry"),
    ]:
        answer = foreign.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["type"] == "urn:partnerships:problem:not-found"
    assert run_id not in [e["id"] for e in foreign.get("/executions").json()["items"]]
    assert foreign.get("/executions", params={"playbook": "api-hello"}).status_code == 404
    rows = (
        stack.client(stack.admin)
        .get("/audit", params={"token_id": _token_id(secret), "outcome": "denied"})
        .json()["items"]
    )
    assert {(r["action"], r["status"]) for r in rows} >= {
        ("POST /playbooks/{playbook_id}/execute", 404),
        ("POST /executions/{run_id}/cancel", 404),
    }
    assert {r["execution"] for r in rows} >= {run_id}


def test_the_audit_log_records_who_did_what_to_which_playbook(stack: Stack):
    secret = stack.token("operator")
    client = stack.client(secret)
    run_id = client.post("/playbooks/api-hello/execute", json={}).json()["execution_id"]
    rows = stack.client(stack.admin).get("/audit", params={"execution": run_id}).json()["items"]
    [row] = rows
    assert row["token_id"] == _token_id(secret) and row["playbook"] == "api-hello"
    assert row["action"] == "POST /playbooks/{playbook_id}/execute" and row["outcome"] == "ok"
    assert row["address"] == "127.0.0.1"


def test_revoked_and_unknown_tokens_are_401(stack: Stack):
    done = stack.cli("token", "create", "--role", "viewer", "--team", "team-a")
    secret = done.stdout.strip()
    assert stack.client(secret).get("/playbooks").status_code == 200
    assert stack.cli("token", "revoke", _token_id(secret)).returncode == 0
    listed = stack.cli("token", "list", "--json")
    assert secret not in listed.stdout  # secrets are never shown again
    revoked = stack.client(secret).get("/playbooks")
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"].startswith("Bearer")
    assert stack.client("pso_nothing_here").get("/playbooks").status_code == 401
    assert stack.client().get("/playbooks").status_code == 401


def test_a_token_over_its_rate_limit_gets_429_with_retry_after(stack: Stack):
    secret = stack.token("viewer", rate_limit=3)

    def once() -> httpx.Response:
        with stack.client(secret) as client:  # a connection each: any of the API's processes
            return client.get("/outbox", params={"limit": 1})

    answers = [once() for _ in range(5)]
    log = (stack.home / "logs" / "api.log").read_text()
    assert "/outbox?limit=1" not in log  # no access log unless `--api-access-log`
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    limited = answers[3]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"] == "urn:partnerships:problem:rate-limited"


def test_every_error_path_answers_problem_json_without_a_stack_trace(stack: Stack):
    admin = stack.client(stack.admin)
    cases = [
        (admin.get("/no/such/route"), 404, "not-found"),
        (admin.patch("/playbooks"), 405, "method-not-allowed"),
        (stack.client().get("/executions"), 401, "unauthenticated"),
        (admin.get("/executions", params={"limit": 0}), 422, "invalid-request"),
        (admin.get("/executions", params={"status": "NOPE"}), 422, "invalid-request"),
        (
            admin.post(
                "/playbooks/api-hello/execute",
                content=b'{"inputs": {}, "inputs": {}}',
                headers={"content-type": "application/json"},
            ),
            400,
            "malformed-json",
        ),
        (
            admin.post(
                "/playbooks/api-hello/execute",
                content=b'{"inputs": {"limit": NaN}}',
                headers={"content-type": "application/json"},
            ),
            400,
            "malformed-json",
        ),
        (
            admin.post(
                "/playbooks/api-hello/execute",
                content=b"inputs=1",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported-media-type",
        ),
        (
            admin.post(
                "/playbooks",
                content=b"x" * ((1 << 20) + 1),
                headers={"content-type": "application/yaml"},
            ),
            413,
            "payload-too-large",
        ),
        (admin.get("/playbooks/api-hello/revisions/1"), 404, "not-found"),
        (admin.get("/dead-letters/not-a-number"), 422, "invalid-request"),
    ]
    for answer, status, kind in cases:
        assert answer.status_code == status, (kind, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json"), kind
        problem = answer.json()
        assert problem["type"] == f"urn:partnerships:problem:{kind}"
        assert problem["title"] and problem["status"] == status
        assert "Traceback" not in answer.text
    docs = httpx.get(f"{stack.api}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert httpx.get(f"{stack.api}{PREFIX}/health/live", timeout=10).json()["status"] == "ok"


def test_admins_make_and_revoke_tokens_through_the_api_and_see_the_secret_once(stack: Stack):
    admin = stack.client(stack.admin)
    made = admin.post("/tokens", json={"role": "viewer", "teams": ["team-a"], "name": "ci"})
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["token"], made.json()["id"]
    assert stack.client(secret).get("/playbooks").status_code == 200
    listed = admin.get("/tokens")
    assert token_id in [t["id"] for t in listed.json()] and secret not in listed.text
    assert admin.delete(f"/tokens/{token_id}").status_code == 200
    assert stack.client(secret).get("/playbooks").status_code == 401
    assert admin.delete(f"/tokens/{token_id}").status_code == 409
    refused = admin.post("/tokens", json={"role": "viewer", "teams": ["a"], "scope": "all"})
    assert refused.status_code == 422  # strict body: `scope` is not a field


def test_ready_checks_webserver_daemon_and_both_storages(stack: Stack):
    ready = httpx.get(f"{stack.api}{PREFIX}/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"webserver", "daemon", "dagster_storage", "state_storage"}
    assert all(check["ok"] for check in checks.values())
