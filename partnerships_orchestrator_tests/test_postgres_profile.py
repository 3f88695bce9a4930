"""The scale-out profile on a real PostgreSQL: Dagster storage and the partner warehouse."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.instance import write_instance_config
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.postgres import create_database

PLAYBOOK = """
id: pg-digest
steps:
  - id: stages
    type: query
    sql: "select stage, count(*) as n, sum(amount) as total from deals group by stage order by stage"
  - id: post
    type: communicate
    depends_on: [stages]
    channel: slack
    to: "#partnerships"
    body: "{% for s in steps.stages.rows %}{{ s.stage }}: {{ s.n }} ({{ s.total | money }})\\n{% endfor %}"
"""


def test_runs_and_warehouse_on_postgresql(
    postgres_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    warehouse_url = create_database(postgres_url, "warehouse_profile")
    dagster_url = create_database(postgres_url, "dagster_profile")
    engine = create_engine_for(warehouse_url)
    ensure_schema(engine)
    seed_demo_data(engine, partners=40)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "playbooks" / "pg.yaml").write_text(PLAYBOOK)
    monkeypatch.setenv("PARTNER_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", dagster_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings(
        playbooks_dir=tmp_path / "playbooks",
        templates_dir=tmp_path / "templates",
        home=tmp_path / "home",
    )

    summary = Project(settings).execute("pg-digest", {})

    assert summary.success, summary.errors
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert instance.get_run_by_id(summary.run_id).is_success
    with engine.connect() as conn:
        stages = conn.execute(text("select count(distinct stage) from deals")).scalar_one()
    [message] = StateStore(settings.state_url).outbox(run_id=summary.run_id)
    assert len(message["body"].strip().splitlines()) == stages
    assert "USD" in message["body"]


def test_dagster_postgres_url_gets_the_psycopg2_driver_even_when_dagster_yaml_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A DAGSTER_HOME set in the environment keeps its dagster.yaml (written by the first
    command on the home); the children of a later command must still get the driver
    dagster-postgres works with (psycopg 3 breaks its NOTIFY statement)."""
    dagster_home = tmp_path / "home" / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://po@db.internal:5432/po")
    settings = Settings(
        playbooks_dir=tmp_path / "playbooks", templates_dir=tmp_path, home=tmp_path / "home"
    )

    write_instance_config(settings)

    assert os.environ["DAGSTER_POSTGRES_URL"] == "postgresql+psycopg2://po@db.internal:5432/po"
    assert (dagster_home / "dagster.yaml").read_text() == "telemetry: {enabled: false}\n"
