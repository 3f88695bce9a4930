"""The code location: lazy jobs, triggers by job name, invalid files visible, strict mode."""

from __future__ import annotations

import pytest

from partnerships_orchestrator.compiler.location import build_repository
from partnerships_orchestrator.spec.problems import SpecError

TEMPLATE = """
id: pb-{n}
triggers:
  - {{type: cron, cron: "0 9 * * 1", timezone: Europe/Berlin}}
  - {{type: webhook}}
  - {{type: manual}}
concurrency: {{max_runs: 2}}
steps:
  - {{id: a, type: evaluate, expression: "{n}"}}
  - {{id: b, type: evaluate, depends_on: [a], expression: "steps.a.output + 1"}}
"""


@pytest.fixture
def folder(settings):
    for n in range(20):
        (settings.playbooks_dir / f"pb-{n}.yaml").write_text(TEMPLATE.format(n=n))
    return settings


def test_jobs_are_compiled_only_when_asked_for_by_name(folder):
    repo = build_repository(folder, strict=False)
    data = repo._repository_data  # noqa: SLF001 - we check what Dagster did not ask for
    assert len(data.get_job_names()) == 20
    schedules = data.get_all_schedules()
    sensors = data.get_all_sensors()
    assert {s.job_name for s in schedules} == {f"pb_{n}" for n in range(20)}
    assert {s.name for s in sensors} == {f"pb_{n}__webhook" for n in range(20)}
    assert schedules[0].execution_timezone == "Europe/Berlin"
    assert data._jobs == {}  # names, schedules and sensors forced no build
    job = repo.get_job("pb_7")
    assert list(data._jobs) == ["pb_7"]
    assert job.tags["partnerships/max_runs_2"] == "pb-7"
    assert job.execute_in_process().success


def test_an_invalid_file_becomes_a_failing_job_and_hides_nothing(folder):
    (folder.playbooks_dir / "oops.yaml").write_text(
        "id: oops\nsteps:\n  - {id: a, type: evaluate, expression: '1 +'}\n"
    )
    (folder.playbooks_dir / "cycle.yaml").write_text(
        "id: cycle\nsteps:\n  - {id: a, type: evaluate, expression: '1', depends_on: [b]}\n"
        "  - {id: b, type: evaluate, expression: '1', depends_on: [a]}\n"
    )
    repo = build_repository(folder, strict=False)
    names = repo._repository_data.get_job_names()  # noqa: SLF001
    assert len([n for n in names if n.startswith("pb_")]) == 20
    broken = repo.get_job("oops")  # parses as a playbook; its expression is checked at build time
    assert "INVALID" in broken.description and "oops.yaml:3" in broken.description
    assert not broken.execute_in_process(raise_on_error=False).success
    cycle = repo.get_job("invalid__cycle")
    assert "a -> b -> a" in cycle.description or "b -> a -> b" in cycle.description


def test_strict_mode_refuses_to_load_with_any_problem(folder, monkeypatch):
    (folder.playbooks_dir / "oops.yaml").write_text("id: oops\nsteps: []\n")
    monkeypatch.setenv("DAGSTER_IS_DEFS_VALIDATION_CLI", "1")
    with pytest.raises(SpecError, match="oops.yaml"):
        build_repository(folder)


def test_shipped_instance_config_limits_runs_per_playbook(tmp_path):
    """`concurrency.max_runs: N` tags runs `partnerships/max_runs_N: <id>`; dagster.yaml bounds each."""
    import dagster as dg
    import yaml

    from partnerships_orchestrator.launcher import instance_config_source

    config = yaml.safe_load(instance_config_source().read_text())
    with dg.instance_for_test(overrides=config, temp_dir=str(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        limits = {rule["key"]: rule for rule in queue.tag_concurrency_limits}
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    for n in range(1, 11):
        rule = limits[f"partnerships/max_runs_{n}"]
        assert rule["limit"] == n and rule["value"] == {"applyLimitPerUniqueValue": True}
