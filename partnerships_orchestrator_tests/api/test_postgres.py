"""The API reads executions from Dagster storage on PostgreSQL (the scale-out profile)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from partnerships_orchestrator.api.app import create_app
from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator.store.tokens import TokenStore
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.api.conftest import HELLO, PREFIX, ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def test_executions_are_read_from_dagster_storage_on_postgresql(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "api-hello.yaml").write_text(HELLO)
    settings = load_settings(playbooks, tmp_path / "home", ROOT / "templates")
    project = Project(settings)
    engine = create_engine_for(settings.warehouse_url)
    ensure_schema(engine)
    seed_demo_data(engine)
    summary = project.execute("api-hello", {"tier": "silver"})
    assert summary.success
    assert "Postgres" in type(project.instance.run_storage).__name__

    _, secret = TokenStore(settings.state_url).create(role="viewer", teams=["team-a"])
    app = create_app(settings)
    # no cheap "has it changed?" for PostgreSQL: executions are read on every request
    assert app.state.ctx.files.for_runs() is None
    assert app.state.ctx.files.for_run(summary.run_id) is None
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        listed = client.get(f"{PREFIX}/executions", params={"playbook": "api-hello"}).json()
        assert summary.run_id in [e["id"] for e in listed["items"]]
        run = client.get(f"{PREFIX}/executions/{summary.run_id}").json()
        assert run["status"] == "SUCCESS" and run["playbook"] == "api-hello"
        assert {s["key"] for s in run["steps"]} == {"partners", "count", "greet"}
        assert len(run["messages_sent"]) == 2
        # the API holds its storage connections open (Dagster's webserver set-up): a run
        # written after they opened is read at once
        later = project.execute("api-hello", {"tier": "gold"})
        listed = client.get(f"{PREFIX}/executions", params={"playbook": "api-hello"}).json()
        assert [e["id"] for e in listed["items"]][:2] == [later.run_id, summary.run_id]
        again = client.get(f"{PREFIX}/executions/{later.run_id}").json()
        assert again["status"] == "SUCCESS" and len(again["steps"]) == 3
        ready = client.get(f"{PREFIX}/health/ready")
        assert ready.json()["checks"]["dagster_storage"]["ok"] is True
        assert ready.status_code == 503  # no webserver in this test: not ready, and says so
        assert ready.json()["checks"]["webserver"]["ok"] is False
