"""`partnerships worker`: a Celery worker that runs playbook steps sent by the Celery executor.

It is the ``celery worker`` that Dagster's ``dagster-celery worker start`` starts, with the
product's settings: the same broker and task settings as the jobs (``compiler/executor.py``), the
same instance (``DAGSTER_HOME``, PostgreSQL storage) and the same playbooks and state database.

``dagster-celery worker start`` runs Celery as a child process and does not pass SIGTERM on, so
stopping it (``kill``, a process manager stopping the command) left its Celery worker running and
taking steps. So the command builds the same Celery command line and config module with
dagster-celery's own functions, and the worker replaces the ``partnerships`` process: SIGTERM or
Ctrl-C reach Celery itself, which finishes the steps it is running, then exits (warm shutdown).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from partnerships_orchestrator.compiler.executor import CELERY_QUEUE, EXECUTOR_ENV, celery_config
from partnerships_orchestrator.settings import Settings

CELERY_APP = "dagster_celery.app"  # dagster-celery's app: its tasks run Dagster steps


def worker_config_file(dagster_home: Path) -> Path:
    """Write the worker's ``celery_executor`` config block (the jobs use the same one).

    Workers of one machine share the file: it is replaced whole, so a worker starting while
    another writes it never reads half of it."""
    path = dagster_home / "celery-worker.yaml"
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(yaml.safe_dump({"execution": {"config": celery_config()}}, sort_keys=False))
    scratch.replace(path)
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
    """The argv and environment that start one worker (exec'd by the CLI).

    ``DAGSTER_HOME`` must name ``dagster_home`` in this process: dagster-celery writes the
    Celery config module (broker, backend, task settings) under the instance's folder."""
    from dagster_celery.cli import get_config_dir, get_worker_name

    config_dir = get_config_dir(str(worker_config_file(dagster_home)))  # validated, as the CLI does
    bin_dir = str(Path(sys.executable).parent)
    python_path = os.pathsep.join(p for p in (env.get("PYTHONPATH"), config_dir) if p)
    env = {
        **env,
        EXECUTOR_ENV: "celery",
        "PYTHONPATH": python_path,
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
    }
    argv = [
        str(Path(bin_dir) / "celery"),
        "-A",
        CELERY_APP,
        "worker",
        "--prefetch-multiplier=1",
        "--loglevel",
        loglevel,
        "-Q",
        CELERY_QUEUE,
        "-n",
        get_worker_name(name or f"partnerships-{os.getpid()}"),  # "@hostname" is appended
        # workers talk only to the broker, not to each other
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv, env
