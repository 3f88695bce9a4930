"""Which Dagster executor runs a playbook's steps: the deployment decides, not the playbook.

``PARTNERSHIPS_EXECUTOR`` (``in_process``, ``multiprocess`` or ``celery``), when set, applies to
every playbook, so a team moves its steps onto Celery workers without editing a playbook. Unset,
each playbook's own ``executor`` field decides (``in_process`` by default).

With ``celery``, each step is a Celery task of Dagster's own ``dagster-celery`` executor, sent
through the broker at ``PARTNERSHIPS_CELERY_BROKER`` (RabbitMQ). The same settings configure the
workers (``partnerships worker``), so the jobs and the workers always agree on the broker and on
how a task survives a worker that dies: a task is acknowledged only when it has finished, and a
worker lost mid-task hands it back to the broker, which gives it to another worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.spec.models import Playbook

EXECUTOR_ENV = "PARTNERSHIPS_EXECUTOR"
BROKER_ENV = "PARTNERSHIPS_CELERY_BROKER"
BACKEND_ENV = "PARTNERSHIPS_CELERY_BACKEND"
EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"
CELERY_QUEUE = "dagster"


def configured_executor() -> str | None:
    """The executor named by ``PARTNERSHIPS_EXECUTOR``, or ``None`` when it is not set."""
    value = os.environ.get(EXECUTOR_ENV, "").strip()
    if not value:
        return None
    if value not in EXECUTORS:
        raise ConfigurationError(
            f"{EXECUTOR_ENV}={value!r} is not an executor",
            hint=f"use one of {', '.join(EXECUTORS)}, or unset it to let each playbook decide",
        )
    return value


def celery_config() -> dict[str, Any]:
    """The ``celery_executor`` config block, shared by the jobs and by the workers."""
    return {
        "broker": os.environ.get(BROKER_ENV) or DEFAULT_BROKER,
        "backend": os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND,
        "config_source": {
            # acknowledge a task when it has run, and hand it back if its worker dies mid-task
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "broker_connection_retry_on_startup": True,
        },
    }


def executor_for(playbook: Playbook) -> dg.ExecutorDefinition:
    """The executor of a playbook's job under the current configuration."""
    name = configured_executor() or playbook.executor
    if name == "celery":
        return _celery_executor(celery_config())
    return dg.multiprocess_executor if name == "multiprocess" else dg.in_process_executor


def _celery_executor(config: Mapping[str, Any]) -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor  # imported only where Celery is used (~0.1 s)

    return celery_executor.configured(dict(config), name="celery")
