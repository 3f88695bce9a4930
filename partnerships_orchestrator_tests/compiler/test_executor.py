"""The deployment chooses the executor: PARTNERSHIPS_EXECUTOR over each playbook's own field."""

from __future__ import annotations

import pytest

from partnerships_orchestrator.compiler.executor import celery_config
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.connections import build_resources
from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator_tests.compiler.conftest import playbook_from

PLAYBOOK = """
id: two-steps
executor: {executor}
steps:
  - {{id: a, type: evaluate, expression: "1 + 1"}}
  - {{id: b, type: evaluate, depends_on: [a], expression: "steps.a.output * 2"}}
"""


def _executor(settings, own: str = "in_process"):
    job = build_job(playbook_from(PLAYBOOK.format(executor=own)), build_resources(settings, None))
    return job.executor_def


@pytest.mark.parametrize("own", ["in_process", "multiprocess"])
def test_without_the_setting_each_playbook_keeps_its_own_executor(settings, monkeypatch, own):
    monkeypatch.delenv("PARTNERSHIPS_EXECUTOR", raising=False)

    assert _executor(settings, own).name == own


@pytest.mark.parametrize("own", ["in_process", "multiprocess"])
def test_celery_setting_moves_every_playbook_to_the_celery_executor(settings, monkeypatch, own):
    monkeypatch.setenv("PARTNERSHIPS_EXECUTOR", "celery")
    monkeypatch.setenv("PARTNERSHIPS_CELERY_BROKER", "pyamqp://po:fake@mq.test:5672//")

    executor = _executor(settings, own)

    assert executor.name == "celery"
    config = celery_config()  # what the executor is configured with, and the workers too
    assert config["broker"] == "pyamqp://po:fake@mq.test:5672//"
    assert config["config_source"]["task_acks_late"] is True
    assert config["config_source"]["task_reject_on_worker_lost"] is True


def test_setting_overrides_a_playbook_in_the_other_direction_too(settings, monkeypatch):
    monkeypatch.setenv("PARTNERSHIPS_EXECUTOR", "in_process")

    assert _executor(settings, "multiprocess").name == "in_process"


def test_an_unknown_executor_names_the_setting_and_the_choices(settings, monkeypatch):
    monkeypatch.setenv("PARTNERSHIPS_EXECUTOR", "kubernetes")

    with pytest.raises(ConfigurationError) as caught:
        _executor(settings)

    assert "PARTNERSHIPS_EXECUTOR='kubernetes'" in str(caught.value)
    assert "in_process, multiprocess, celery" in str(caught.value)
