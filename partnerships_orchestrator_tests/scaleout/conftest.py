"""The scale-out profile, for real: PostgreSQL for everything, RabbitMQ, Celery workers.

One stack per module: a PostgreSQL database holding Dagster's storage, the product's state and
the partner warehouse (what `partnerships up --postgres URL` does), a RabbitMQ broker, the
SendGrid emulator on loopback, and Celery workers started with the product's own
`partnerships worker` command line. Runs are orchestrated from the test process the way a run
worker does it (``execute_job`` of the code location's reconstructable job), so each step is a
Celery task that one of the workers runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from partnerships_orchestrator import launcher
from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.executor import BROKER_ENV, EXECUTOR_ENV
from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import DATABASE_ENV, Settings
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator
from partnerships_orchestrator_tests.postgres import create_database

RECIPIENTS = 200
WORKER_START_TIMEOUT = 90.0

CONNECTIONS = """
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {sendgrid}
    rate_limit: {{requests: 10, per_seconds: 1}}
"""

SEGMENTS = 4  # fan-out steps that run at once, each a Celery task of its own
PER_SEGMENT = RECIPIENTS // SEGMENTS


def playbook(segments: int = SEGMENTS, per_segment: int = PER_SEGMENT) -> str:
    """One query, then ``segments`` independent fan-outs of ``per_segment`` e-mails each.

    A fan-out region runs as one op (one Dagster step), so independent fan-outs are what give
    two workers work at the same time."""
    lines = [
        "id: bulk-welcome",
        "steps:",
        "  - id: partners",
        "    type: query",
        '    sql: "select id, name, contact_email as email from partners order by id limit '
        f'{segments * per_segment}"',
    ]
    for n in range(segments):
        lines += [
            f"  - id: welcome_{n}",
            "    type: communicate",
            "    depends_on: [partners]",
            f"    for_each: steps.partners.rows[{n * per_segment}:{(n + 1) * per_segment}]",
            "    channel: email",
            '    to: "{{ item.email }}"',
            '    subject: "Welcome, {{ item.name }}"',
            '    body: "Hello {{ item.name }}, welcome to the partner programme."',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: nothing runs its clean-up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    instance: dg.DagsterInstance
    sendgrid: SendGridEmulator
    database_url: str
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str) -> Worker:
        argv = [sys.executable, "-m", "partnerships_orchestrator.cli", "worker", "--name", name]
        argv += ["--concurrency", "1"]  # the product's command, as the README starts it
        log = self.settings.home / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def await_workers(self, names: list[str]) -> None:
        """Until every named worker answers a broker ping (not a sleep)."""
        from dagster_celery.make_app import make_app

        app = make_app({"broker": self.env[BROKER_ENV], "backend": "rpc://"})
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            answered = {
                name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply
            }
            if set(names) <= answered:
                return
            dead = [w for w in self.workers if w.process.poll() is not None]
            if dead:
                raise RuntimeError(f"worker exited: {dead[0].log.read_text()[-3000:]}")
        logs = "\n".join(w.log.read_text()[-2000:] for w in self.workers)
        raise RuntimeError(
            f"workers {names} did not answer within {WORKER_START_TIMEOUT}s:\n{logs}"
        )

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers.clear()

    def execute(self, playbook_id: str) -> dg.ExecutionResult:
        """Orchestrate one run of the playbook from this process; its steps go to the workers."""
        repository = ReconstructableRepository.for_module(
            "partnerships_orchestrator.definitions", "defs", working_directory=os.getcwd()
        )
        recon = repository.get_reconstructable_job(naming.job_name(playbook_id))
        return dg.execute_job(recon, instance=self.instance, run_config={}, raise_on_error=False)

    def newest_run_id(self) -> str | None:
        runs = self.instance.get_runs(limit=1)
        return runs[0].run_id if runs else None

    def steps_in_flight(self, run_id: str, worker: str) -> set[str]:
        """Steps ``worker`` started in the run that have not finished (yet)."""
        started, finished = set(), set()
        for record in self.instance.all_logs(run_id):
            event = record.dagster_event
            if event is None or not record.step_key:
                continue
            if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
                metadata = event.engine_event_data.metadata if event.engine_event_data else {}
                ran_on = metadata.get("Celery worker")
                if ran_on is not None and str(ran_on.value).split("@")[0] == worker:
                    started.add(record.step_key)
            elif event.event_type in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                finished.add(record.step_key)
        return started - finished

    def worker_of_each_step(self, run_id: str) -> dict[str, str]:
        """Which worker ran each step, from the executor's own engine events."""
        ran: dict[str, str] = {}
        for record in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
            worker = metadata.get("Celery worker")
            if worker is not None and record.step_key:
                ran[record.step_key] = str(worker.value).split("@")[0]
        return ran


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database_url = create_database(postgres_url, f"scaleout_{uuid.uuid4().hex[:10]}")
    root = tmp_path_factory.mktemp("scaleout")
    (root / "playbooks").mkdir()
    (root / "templates").mkdir()
    sendgrid = SendGridEmulator()
    server = sendgrid.serve()
    (root / "playbooks" / "connections.yaml").write_text(
        CONNECTIONS.format(sendgrid=sendgrid.base_url)
    )
    (root / "playbooks" / "bulk.yaml").write_text(playbook())
    settings = Settings(
        playbooks_dir=root / "playbooks", templates_dir=root / "templates", home=root / "home"
    )
    settings.home.mkdir()
    environment = {
        "PARTNERSHIPS_HOME": str(settings.home),
        "PARTNERSHIPS_PLAYBOOKS": str(settings.playbooks_dir),
        "PARTNERSHIPS_TEMPLATES": str(settings.templates_dir),
        "DAGSTER_HOME": str(settings.dagster_home),
        "DAGSTER_POSTGRES_URL": database_url,
        DATABASE_ENV: database_url,
        "PARTNER_WAREHOUSE_URL": database_url,
        EXECUTOR_ENV: "celery",
        BROKER_ENV: rabbitmq_url,
        "SENDGRID_API_KEY": API_KEY,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        project = Project(settings)
        project.prepare()  # the one set-up path: Dagster storage and state tables, under locks
        engine = create_engine_for(database_url)
        ensure_schema(engine)
        seed_demo_data(engine, partners=RECIPIENTS)
        engine.dispose()
        instance = project.instance
        env = launcher.child_environment(settings)
        stack = Stack(settings, env, instance, sendgrid, database_url)
        try:
            yield stack
        finally:
            stack.stop_workers()
            server.stop()
