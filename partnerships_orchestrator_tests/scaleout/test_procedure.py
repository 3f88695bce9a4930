"""README "Scale-out" -> Procedure, followed on one machine the way a team runs it.

The shipped ``deploy/scale-out.env`` filled in for this machine (step 2), the warehouse seeded
with ``partnerships seed`` (step 3), two ``partnerships worker`` processes (step 4) and
``partnerships up --postgres URL`` (step 5: webserver, daemon and API, as subprocesses on free
ports). A run launched through the API is started by the daemon's run launcher; each of its steps
must run on one of the two Celery workers, each message reach the SendGrid emulator exactly once,
and the API must report the run SUCCESS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from partnerships_orchestrator.instance import POSTGRES_ENV, dagster_postgres_url
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator_tests.e2e.chaos import processes_with
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator
from partnerships_orchestrator_tests.ports import free_port
from partnerships_orchestrator_tests.postgres import create_database
from partnerships_orchestrator_tests.scaleout.conftest import CONNECTIONS, Stack, playbook

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV_FILE = ROOT / "deploy" / "scale-out.env"
SEGMENTS, PER_SEGMENT = 4, 10  # a query, then four fan-outs of ten e-mails that run at once
RECIPIENTS = SEGMENTS * PER_SEGMENT
WORKERS = ["alpha", "beta"]
TEAM = "partner-ops"
READY_TIMEOUT = 150.0
RUN_TIMEOUT = 90.0
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
DATABASE_KEYS = (POSTGRES_ENV, "PARTNERSHIPS_DATABASE_URL", "PARTNER_WAREHOUSE_URL")


def filled_in_env_file(database_url: str, broker_url: str, root: Path) -> dict[str, str]:
    """deploy/scale-out.env with this machine's URLs and folders (README step 2). A key the
    test does not know fails the test: the file and the product must keep naming the same
    settings."""
    values = {
        "PARTNERSHIPS_CELERY_BROKER": broker_url,
        "PARTNERSHIPS_HOME": str(root / "home"),
        "PARTNERSHIPS_PLAYBOOKS": str(root / "playbooks"),
        **dict.fromkeys(DATABASE_KEYS, database_url),
    }
    env = {}
    for line in ENV_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, shipped = line.partition("=")
        if key == "PARTNERSHIPS_EXECUTOR":
            env[key] = shipped
            continue
        assert key in values, f"{ENV_FILE.name}: {key} is new to this test"
        env[key] = values[key]
    assert set(env) == {*values, "PARTNERSHIPS_EXECUTOR"}, set(values) ^ set(env)
    assert env["PARTNERSHIPS_EXECUTOR"] == "celery"
    return env


@dataclass
class Procedure:
    """The processes of the procedure and what the test reads from them."""

    env: dict[str, str]
    root: Path
    database_url: str
    workers: Stack
    up: subprocess.Popen[bytes] | None = None
    ui_port: int = 0
    api_port: int = 0

    @property
    def up_log(self) -> Path:
        return self.root / "up.log"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """A `partnerships` command run to its end; its stdout."""
        done = subprocess.run(
            [str(BIN / "partnerships"), *args],
            env=env or self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"partnerships {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def start_up(self) -> None:
        """Step 5: `partnerships up --postgres URL`, the database URLs given by the option only."""
        env = {k: v for k, v in self.env.items() if k not in DATABASE_KEYS}
        self.ui_port, self.api_port = free_port(), free_port()
        args = ["up", "--postgres", self.database_url, "--ui-port", str(self.ui_port)]
        args += ["--api-port", str(self.api_port)]
        with self.up_log.open("wb") as out:
            self.up = subprocess.Popen(
                [str(BIN / "partnerships"), *args],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def await_up(self) -> None:
        """Until `up` prints `ready:` (the code location loaded and the API answers)."""
        assert self.up is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and self.up.poll() is None:
            if b"ready:" in self.up_log.read_bytes():
                return
            time.sleep(0.3)
        raise AssertionError(f"`partnerships up` not ready:\n{self.logs()}")

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        url = f"http://127.0.0.1:{self.api_port}/api/partnerships{path}"
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, url, headers=headers, timeout=30, **kwargs)

    def await_execution(self, execution_id: str, token: str) -> dict[str, Any]:
        """Poll `GET /executions/{id}` until the run is over; its last answer."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            answer = self.api("GET", f"/executions/{execution_id}?logs=200", token)
            assert answer.status_code == 200, answer.text
            if answer.json()["status"] in TERMINAL:
                return dict(answer.json())
            time.sleep(0.5)
        raise AssertionError(f"execution {execution_id} not over in {RUN_TIMEOUT}s:\n{self.logs()}")

    def logs(self) -> str:
        files = [self.up_log, *sorted((self.root / "home" / "logs").glob("*.log"))]
        files += [w.log for w in self.workers.workers]
        return "\n".join(
            f"== {f.name}\n{f.read_text(errors='replace')[-2500:]}" for f in files if f.exists()
        )

    def stop(self) -> None:
        """Ctrl-C for `up` (it stops its webserver, daemon and API), the workers killed, then
        anything still carrying this home in its environment (run workers, code servers)."""
        if self.up is not None and self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.up.wait(timeout=20)
        self.workers.stop_workers()
        marker = f"PARTNERSHIPS_HOME={self.root / 'home'}"
        for process in processes_with(marker):
            if process.pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        if self.up is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.up.pid, signal.SIGKILL)
            self.up.wait()


@pytest.fixture
def procedure(
    postgres_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Procedure]:
    database = create_database(postgres_url, f"procedure_{uuid.uuid4().hex[:10]}")
    database_url = database.replace("postgresql+psycopg://", "postgresql://")  # as a user writes it
    sendgrid = SendGridEmulator()
    server = sendgrid.serve()
    sendgrid.configure(limit=100_000)  # the connection's own rate limit sets the pace
    for folder in ("playbooks", "templates", "home"):
        (tmp_path / folder).mkdir()
    (tmp_path / "playbooks" / "connections.yaml").write_text(
        CONNECTIONS.format(sendgrid=sendgrid.base_url)
    )
    (tmp_path / "playbooks" / "bulk.yaml").write_text(
        f"owners: [{TEAM}]\n" + playbook(SEGMENTS, PER_SEGMENT)
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARTNERSHIPS_", "DAGSTER_", "PARTNER_WAREHOUSE"))
    }
    env.update(filled_in_env_file(database_url, rabbitmq_url, tmp_path))
    env["SENDGRID_API_KEY"] = API_KEY  # the connection's `${env:SENDGRID_API_KEY}`
    settings = Settings(tmp_path / "playbooks", tmp_path / "templates", tmp_path / "home")
    # the test reads the run's events from the same Dagster storage the stack writes
    monkeypatch.setenv(POSTGRES_ENV, dagster_postgres_url(database_url))
    # the instance is opened once the commands have set the home up (the test reads its events)
    workers = Stack(settings, env, None, sendgrid, database_url)  # type: ignore[arg-type]
    procedure = Procedure(env, tmp_path, database_url, workers)
    try:
        yield procedure
    finally:
        procedure.stop()
        if workers.instance is not None:
            workers.instance.dispose()
        server.stop()


def _recipients(database_url: str) -> set[str]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select contact_email from partners order by id limit :n"),
                {"n": RECIPIENTS},
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_a_run_launched_through_the_api_runs_its_steps_on_the_workers(procedure: Procedure):
    workers = procedure.workers
    for name in WORKERS:  # step 4
        workers.start_worker(name)
    procedure.start_up()  # step 5
    procedure.cli("seed")  # step 3 (while the others start)
    token = procedure.cli("token", "create", "--role", "operator", "--team", TEAM).strip()
    workers.await_workers(WORKERS)
    procedure.await_up()

    launched = procedure.api("POST", "/playbooks/bulk-welcome/execute", token, json={"inputs": {}})
    assert launched.status_code == 202, launched.text
    execution = procedure.await_execution(launched.json()["execution_id"], token)

    assert execution["status"] == "SUCCESS", (execution["logs"][-10:], procedure.logs())
    run_id = execution["id"]
    workers.instance = dg.DagsterInstance.from_config(str(workers.settings.dagster_home))
    ran_on = workers.worker_of_each_step(run_id)
    steps = {step["key"] for step in execution["steps"]}
    assert steps == {"partners", *(f"welcome_{n}" for n in range(SEGMENTS))}
    assert set(ran_on) == steps, f"steps not run by a Celery worker: {steps - set(ran_on)}"
    assert set(ran_on.values()) == set(WORKERS), ran_on
    delivered = Counter(workers.sendgrid.delivered_counts())
    assert set(delivered) == _recipients(procedure.database_url)
    assert set(delivered.values()) == {1}, [r for r, n in delivered.items() if n > 1]
    sent = execution["messages_sent"]
    assert len(sent) == RECIPIENTS and {m["status"] for m in sent} == {"sent"}
