"""The optional Dagster component: the same playbooks, compiled eagerly into Definitions."""

from __future__ import annotations

import dagster as dg
import pytest

from partnerships_orchestrator.component import PlaybooksComponent
from partnerships_orchestrator.spec.problems import SpecError

PLAYBOOK = """
id: hello
triggers: [{type: cron, cron: "0 8 * * 1"}]
steps:
  - {id: a, type: evaluate, expression: "40 + 2"}
"""


def test_component_builds_the_playbooks_jobs_and_schedules(settings, monkeypatch):
    (settings.playbooks_dir / "hello.yaml").write_text(PLAYBOOK)
    monkeypatch.setenv("PARTNERSHIPS_HOME", str(settings.home))
    defs = dg.build_defs_for_component(PlaybooksComponent(path=str(settings.playbooks_dir)))
    job = defs.resolve_job_def("hello")
    assert job.execute_in_process().output_for_node("a")["steps"]["a"]["output"] == 42
    assert [s.job_name for s in defs.get_repository_def().schedule_defs] == ["hello"]


def test_component_is_strict_unless_told_otherwise(settings, monkeypatch):
    (settings.playbooks_dir / "hello.yaml").write_text(PLAYBOOK)
    (settings.playbooks_dir / "broken.yaml").write_text("id: broken\nsteps: []\n")
    monkeypatch.setenv("PARTNERSHIPS_HOME", str(settings.home))
    with pytest.raises(SpecError, match="broken.yaml"):
        dg.build_defs_for_component(PlaybooksComponent(path=str(settings.playbooks_dir)))
    lenient = PlaybooksComponent(path=str(settings.playbooks_dir), strict=False)
    defs = dg.build_defs_for_component(lenient)
    assert "INVALID" in (defs.resolve_job_def("invalid__broken").description or "")
