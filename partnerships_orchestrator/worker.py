"""`partnerships worker`: a Celery worker that runs playbook steps sent by the Celery executor.

It is Dagster's own ``dagster-celery worker start`` with the product's settings: the same
broker and task settings as the jobs (``compiler/executor.py``), the same instance
(``DAGSTER_HOME``, PostgreSQL storage) and the same playbooks and state database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from partnerships_orchestrator.compiler.executor import CELERY_QUEUE, EXECUTOR_ENV, celery_config
from partnerships_orchestrator.settings import Settings


def worker_config_file(dagster_home: Path) -> Path:
    """Write the worker's ``celery_executor`` config block (the jobs use the same one)."""
    path = dagster_home / "celery-worker.yaml"
    path.write_text(yaml.safe_dump({"execution": {"config": celery_config()}}, sort_keys=False))
    return path


def worker_command(
    settings: Settings,
    dagster_home: Path,
    env: dict[str, str],
    *,
    name: str | None = None,
    concurrency: int | None = None,
    loglevel: str = "INFO",
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start one worker (exec'd by the CLI, spawned by tests)."""
    bin_dir = str(Path(sys.executable).parent)  # `dagster-celery` runs `celery` from PATH
    env = {**env, EXECUTOR_ENV: "celery", "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
    argv = [
        str(Path(bin_dir) / "dagster-celery"),
        "worker",
        "start",
        "--app",
        "dagster_celery.app",
        "--config-yaml",
        str(worker_config_file(dagster_home)),
        "--queue",
        CELERY_QUEUE,
        "--name",
        name or f"partnerships-{os.getpid()}",  # dagster-celery appends @hostname
        "--loglevel",
        loglevel,
        "--",  # what follows goes to `celery worker` itself
        # workers talk only to the broker, not to each other
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv, env
