"""Playbooks through the API: the store beside the read-only files, revisions, validation with
the CLI's validator, and the Dagster code location reloaded so the job shows up."""

from __future__ import annotations

import httpx

from partnerships_orchestrator_tests.api.conftest import Stack

NEW_YAML = """# made through the API
id: api-made
name: Made through the API
owners: [team-a]
steps:
  - {id: one, type: evaluate, expression: "40 + 2"}
"""


def _jobs(stack: Stack) -> set[str]:
    query = """{ repositoryOrError(repositorySelector: {repositoryLocationName: "partnerships",
                 repositoryName: "partnerships"}) { ... on Repository { jobs { name } } } }"""
    data = httpx.post(f"{stack.ui}/graphql", json={"query": query}, timeout=30).json()["data"]
    return {job["name"] for job in data["repositoryOrError"]["jobs"]}


def test_created_playbook_is_a_job_in_dagster_and_each_change_is_a_revision(stack: Stack):
    editor = stack.client(stack.token("editor"))
    created = editor.post(
        "/playbooks", content=NEW_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["origin"] == "store" and body["revision"] == 1 and body["text"] == NEW_YAML
    assert created.headers["location"].endswith("/playbooks/api-made")
    assert "api_made" in _jobs(stack)  # the code location was reloaded before the answer

    changed = NEW_YAML.replace("40 + 2", "6 * 7").replace("Made through", "Changed through")
    updated = editor.put(
        "/playbooks/api-made", content=changed, headers={"Content-Type": "application/yaml"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["revision"] == 2 and updated.json()["name"] == "Changed through the API"
    revisions = editor.get("/playbooks/api-made/revisions").json()
    assert [(r["number"], r["action"]) for r in revisions] == [(1, "create"), (2, "update")]
    assert editor.get("/playbooks/api-made/revisions/1").json()["text"] == NEW_YAML
    assert editor.get("/playbooks/api-made/revisions/9").status_code == 404

    deleted = editor.delete("/playbooks/api-made")
    assert deleted.status_code == 200 and deleted.json()["action"] == "delete"
    assert editor.get("/playbooks/api-made").status_code == 404
    assert "api_made" not in _jobs(stack)


def test_json_body_is_accepted_like_the_yaml_file(stack: Stack):
    editor = stack.client(stack.token("editor"))
    document = {
        "id": "api-json",
        "owners": ["team-a"],
        "steps": [{"id": "one", "type": "evaluate", "expression": "1"}],
    }
    created = editor.post("/playbooks", json=document)
    assert created.status_code == 201, created.text
    assert created.json()["document"]["steps"][0]["expression"] == "1"
    assert editor.post("/playbooks", json=document).status_code == 409  # exists: use PUT
    assert editor.delete("/playbooks/api-json").status_code == 200


def test_invalid_document_is_422_with_located_problems_and_nothing_stored(stack: Stack):
    editor = stack.client(stack.token("editor"))
    bad = "id: api-bad\nowners: [team-a]\nsteps:\n  - {id: a, type: evaluat, expression: '1'}\n"
    answer = editor.post("/playbooks", content=bad, headers={"Content-Type": "application/yaml"})
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"].endswith(":invalid-playbook")
    [found] = problem["problems"]
    assert (found["line"], found["column"], found["path"]) == (4, 19, "steps[0].type")
    assert "did you mean `evaluate`" in found["hint"]
    assert editor.get("/playbooks/api-bad").status_code == 404


def test_file_backed_playbooks_answer_409_to_put_and_delete(stack: Stack):
    editor = stack.client(stack.token("editor"))
    text = (stack.playbooks / "api-hello.yaml").read_text()
    put = editor.put(
        "/playbooks/api-hello", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert put.status_code == 409 and "read-only" in put.json()["detail"]
    assert editor.delete("/playbooks/api-hello").status_code == 409
    clash = editor.post("/playbooks", content=text, headers={"Content-Type": "application/yaml"})
    assert clash.status_code == 409 and "api-hello.yaml" in clash.json()["detail"]


def test_list_filters_by_kind_owner_and_text_and_pages(stack: Stack):
    viewer = stack.client(stack.token("viewer"))
    listed = viewer.get("/playbooks", params={"limit": 2}).json()
    assert listed["total"] == 3  # api-foreign belongs to team-b
    assert [p["id"] for p in listed["items"]] == ["api-fixable", "api-hello"]
    rest = viewer.get("/playbooks", params={"limit": 2, "offset": listed["next_cursor"]}).json()
    assert [p["id"] for p in rest["items"]] == ["api-slow"] and rest["next_cursor"] is None
    found = viewer.get("/playbooks", params={"text": "gold"}).json()
    assert [p["id"] for p in found["items"]] == ["api-hello"]
    assert viewer.get("/playbooks", params={"kind": "dataset"}).json()["items"] == []
    assert viewer.get("/playbooks", params={"owner": "team-b"}).json()["items"] == []
