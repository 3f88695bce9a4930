"""Chaos: SIGKILL the product's processes during a bulk send, recover, and count at the receiver.

The product runs as a user starts it (`partnerships up`: webserver, daemon, run workers launched
by the daemon, step processes of the `multiprocess` executor) with a connections document that
sends e-mail to a SendGrid emulator on loopback. A campaign launches one bulk send of
``recipients`` messages through the webserver's GraphQL API and, each time the emulator has
received the next of a list of delivery counts, SIGKILLs one process:

- ``step``: the step process sending the messages (a child of the run worker);
- ``run_worker``: the run's worker (`dagster api execute_run`), its step processes left behind;
- ``daemon`` / ``webserver``: `partnerships up` stops the rest of the stack when one dies.

Recovery is the documented one: a stack whose process died is started again with `partnerships
up`; a run that did not succeed (the run worker's executor reports a dead step process, run
monitoring a dead run worker) is re-executed from failure, as a user does from the UI (GraphQL
``launchRunReexecution``, strategy ``FROM_FAILURE``), until a run of the campaign succeeds.

What counts is what the emulator received: every recipient at most once (``duplicates``), and
every recipient it never received (``missing``) must be a dead letter whose outcome is unknown:
its request may have left when the process sending it died, so the ledger refuses to send it
again. A killed process can leave at most one such message per request in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN
from partnerships_orchestrator.store import tables
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator
from partnerships_orchestrator_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TARGETS = ("step", "run_worker", "daemon", "webserver")
PLAYBOOK_ID = "chaos-campaign"
JOB = "chaos_campaign"
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")
REPOSITORY = {"repositoryLocationName": "partnerships", "repositoryName": "partnerships"}

PLAYBOOK = """\
id: chaos-campaign
name: Chaos campaign
description: One e-mail to each of the first N partners, sent while processes are killed.
executor: multiprocess
inputs:
  recipients: {type: integer, default: 200}
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners order by id limit :n"
    params: {n: "{{ inputs.recipients }}"}
  - id: send
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Partner update for {{ item.name }}"
    body: "Hello {{ item.name }}, here is this quarter's partner update."
"""

CONNECTIONS = """\
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {url}
    rate_limit: {{requests: {rate}, per_seconds: 1}}
"""


class ChaosError(AssertionError):
    """The stack did not do what a recovery step waited for (with the logs' tail)."""


# ---------------------------------------------------------------- processes


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    cmdline: str


def processes_with(marker: str) -> list[Process]:
    """Live processes whose environment carries ``marker`` (all the stack started does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is already dead
            continue
        found.append(Process(int(entry.name), int(fields[1]), cmdline))
    return found


def _spawned(process: Process) -> bool:
    """A child started by ``multiprocessing`` (spawn), not its resource tracker."""
    return "spawn_main" in process.cmdline and "resource_tracker" not in process.cmdline


def roles(processes: list[Process]) -> dict[int, str]:
    """Which part of the stack each process is: the code server launches a run's worker as a
    spawned child, and the worker's ``multiprocess`` executor spawns one child per step."""
    found: dict[int, str] = {}
    for process in processes:
        if "dagster-webserver" in process.cmdline:
            found[process.pid] = "webserver"
        elif "dagster-daemon" in process.cmdline:
            found[process.pid] = "daemon"
        elif "dagster api grpc" in process.cmdline or "code-server" in process.cmdline:
            found[process.pid] = "code_server"
    for wanted, parent in (("run_worker", "code_server"), ("step", "run_worker")):
        for process in processes:
            if _spawned(process) and found.get(process.ppid) == parent:
                found[process.pid] = wanted
    return found


def pids_of(marker: str, role: str) -> list[int]:
    return [pid for pid, found in roles(processes_with(marker)).items() if found == role]


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    """`partnerships up` in ``base`` on a free port, e-mail going to ``emulator``."""

    base: Path
    emulator: SendGridEmulator
    recipients: int = 200
    rate: int = 50
    port: int = field(default_factory=free_port)
    api_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        playbooks = self.base / "playbooks"
        playbooks.mkdir(parents=True, exist_ok=True)
        (playbooks / f"{PLAYBOOK_ID}.yaml").write_text(PLAYBOOK)
        (playbooks / "connections.yaml").write_text(
            CONNECTIONS.format(url=self.emulator.base_url, rate=self.rate)
        )
        self.home = self.base / "home"
        self.log = self.base / "up.log"
        self.env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        self.env.update(
            PARTNERSHIPS_HOME=str(self.home),
            PARTNERSHIPS_PLAYBOOKS=str(playbooks),
            PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
            SENDGRID_API_KEY=API_KEY,
        )
        for name in ("PARTNER_WAREHOUSE_URL", "PARTNERSHIPS_DATABASE_URL", "DAGSTER_POSTGRES_URL"):
            self.env.pop(name, None)  # this stack keeps everything in its own home
        self.env.pop("PARTNERSHIPS_EXECUTOR", None)  # the playbook's `multiprocess` decides
        self.marker = f"PARTNERSHIPS_HOME={self.home}"
        self.url = f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Start `partnerships up` and wait for its `ready:` line."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "partnerships"), "up", *self.port_options()],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if b"ready:" in self.log.read_bytes()[offset:] and self.has_job():
                return
            time.sleep(0.2)
        self.fail("`partnerships up` did not get ready")

    def has_job(self) -> bool:
        """Whether the webserver's code location has loaded the campaign's job."""
        try:
            data = self.graphql(
                """query($selector: RepositorySelector!) { repositoryOrError(
                     repositorySelector: $selector) { ... on Repository { jobs { name } } } }""",
                {"selector": REPOSITORY},
            )
        except (httpx.HTTPError, ChaosError):
            return False
        jobs = (data.get("repositoryOrError") or {}).get("jobs") or []
        return any(job["name"] == JOB for job in jobs)

    def port_options(self) -> list[str]:
        """Free ports for every server `partnerships up` starts (the UI, and the API if any)."""
        options = ["--port", str(self.port)]
        if self.api_port is None:
            usage = subprocess.run(
                [str(BIN / "partnerships"), "up", "--help"], capture_output=True, text=True
            ).stdout
            self.api_port = free_port() if "--api-port" in usage else 0
        return [*options, "--api-port", str(self.api_port)] if self.api_port else options

    def wait_down(self, timeout: float = 30.0) -> None:
        """Wait until `partnerships up` has exited and every process it started is gone."""
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and processes_with(self.marker):
            time.sleep(0.1)
        if self.process.poll() is None or processes_with(self.marker):
            self.fail("the stack did not go down after one of its processes died")

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL whatever is left (nothing may outlive the test)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        for process in processes_with(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    def fail(self, what: str) -> None:
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        logs = self.home / "logs"
        for name in ("daemon.log", "webserver.log"):
            if (logs / name).exists():
                tail += f"\n--- {name}\n" + (logs / name).read_text(errors="replace")[-2000:]
        raise ChaosError(f"{what}\n{tail}")

    # -- GraphQL -----------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise ChaosError(f"GraphQL errors: {body['errors']}")
        return dict(body["data"])

    def launch(self) -> str:
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } ... on RunConfigValidationInvalid {
                 errors { message } } } }""",
            {
                "params": {
                    "selector": {**REPOSITORY, "jobName": JOB},
                    "runConfigData": {"recipients": self.recipients},
                }
            },
        )
        return _run_id(data["launchRun"])

    def reexecute_from_failure(self, run_id: str) -> str:
        data = self.graphql(
            """mutation($parent: String!) { launchRunReexecution(reexecutionParams:
                 {parentRunId: $parent, strategy: FROM_FAILURE}) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } } }""",
            {"parent": run_id},
        )
        return _run_id(data["launchRunReexecution"])

    def status(self, run_id: str) -> str:
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )
        return str(data["runOrError"]["status"])

    def wait_terminal(self, run_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status in TERMINAL:
                return status
            time.sleep(0.2)
        self.fail(f"run {run_id} did not end within {timeout:.0f} s")
        raise AssertionError  # unreachable

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the campaign's job: id, status, parent."""
        data = self.graphql(
            """query($job: String!) { runsOrError(filter: {pipelineName: $job}) { ... on Runs {
                 results { runId status parentRunId rootRunId } } } }""",
            {"job": JOB},
        )
        return list(data["runsOrError"]["results"])

    # -- the product's own view --------------------------------------------------------------

    def cli_json(self, *args: str) -> Any:
        out = subprocess.run(
            [str(BIN / "partnerships"), *args, "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise ChaosError(f"partnerships {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return json.loads(out.stdout)

    def claims_after(self, run_id: str, wall: float) -> int:
        """Requests ``run_id`` sent after ``wall`` (time.time()): the ledger claims each message
        of a run as its request leaves, stamped in UTC."""
        since = datetime.fromtimestamp(wall, UTC).replace(tzinfo=None)
        engine = sa.create_engine(f"sqlite:///{self.home / 'state.db'}")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(tables.deliveries.c.created_at).where(
                    tables.deliveries.c.run_id == run_id
                )
            ).all()
        engine.dispose()
        return sum(1 for (created,) in rows if created.replace(tzinfo=None) > since)

    def expected_recipients(self) -> list[str]:
        engine = sa.create_engine(f"sqlite:///{self.home / 'warehouse.db'}")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select contact_email from partners order by id limit :n"),
                {"n": self.recipients},
            )
            emails = [str(r[0]) for r in rows]
        engine.dispose()
        return emails


def _run_id(result: dict[str, Any]) -> str:
    if result["__typename"] != "LaunchRunSuccess":
        raise ChaosError(f"the run was not launched: {result}")
    return str(result["run"]["runId"])


# ---------------------------------------------------------------- a campaign


@dataclass
class Kill:
    target: str
    at: int  # deliveries the receiver had counted when the signal was sent
    pid: int
    run_id: str
    recovered_seconds: float = 0.0  # from the signal until the recovering run's first message
    wall: float = 0.0  # time.time() of the signal
    late: int = 0  # requests the killed run sent after the signal (its ledger claims)


@dataclass
class Report:
    recipients: int
    kills: list[Kill]
    delivered: Counter[str]
    expected: list[str]
    unknown: list[dict[str, Any]]  # the campaign's dead letters whose outcome is unknown
    dead_letters: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    seconds: float

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.delivered.values() if count > 1)

    @property
    def missing(self) -> set[str]:
        return set(self.expected) - set(self.delivered)

    @property
    def unknown_recipients(self) -> set[str]:
        return {_recipient(letter) for letter in self.unknown}

    def summary(self) -> dict[str, Any]:
        return {
            "kills": [(k.target, k.at, k.late, round(k.recovered_seconds, 1)) for k in self.kills],
            "delivered": len(self.delivered),
            "duplicates": self.duplicates,
            "missing": sorted(self.missing),
            "unknown": sorted(self.unknown_recipients),
            "runs": [(r["runId"][:8], r["status"]) for r in self.runs],
            "seconds": round(self.seconds, 1),
        }


def _recipient(letter: dict[str, Any]) -> str:
    """The recipient a dead letter is about."""
    return str((letter.get("inputs") or {}).get("recipient"))


def is_unknown_outcome(letter: dict[str, Any]) -> bool:
    return bool(letter.get("action") == OUTCOME_UNKNOWN)


def run_campaign(
    stack: Stack,
    targets: list[str],
    rng: random.Random,
    timeout: float = 300.0,
    say: Callable[[str], None] = lambda line: None,
) -> Report:
    """One bulk send; SIGKILL each of ``targets`` in turn at a random delivery count (spread so
    that every kill finds messages still to send), recovering after each."""
    emulator = stack.emulator
    started = time.monotonic()
    run_id = first = stack.launch()
    done: list[Kill] = []
    for index, target in enumerate(targets):
        delivered = len(emulator.state.delivered)
        room = (stack.recipients - delivered) // (len(targets) - index + 1)
        at = delivered + rng.randint(1, max(1, room))
        if not _wait_for_deliveries(stack, run_id, at, timeout):
            break  # the campaign finished first: fewer kills than planned (the test says so)
        pid = _target_pid(stack, target)
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
        killed_at = time.monotonic()
        kill = Kill(target, len(emulator.state.delivered), pid, run_id, wall=time.time())
        run_id = recover(stack, target, run_id)
        _wait_for_run(stack, run_id, timeout)
        kill.recovered_seconds = time.monotonic() - killed_at
        done.append(kill)
        say(
            f"killed the {target} (pid {pid}) at {kill.at}; sending again after "
            f"{kill.recovered_seconds:.1f} s, run {run_id[:8]}"
        )
    finish(stack, run_id)
    for kill in done:
        kill.late = stack.claims_after(kill.run_id, kill.wall)
    # A stack may serve several campaigns: this one's letters and runs share its root run.
    letters = [
        letter
        for letter in stack.cli_json("dead-letters", "--playbook", PLAYBOOK_ID)
        if letter.get("root_run_id") == first
    ]
    return Report(
        recipients=stack.recipients,
        kills=done,
        delivered=Counter(d.to for d in emulator.state.delivered),
        expected=stack.expected_recipients(),
        unknown=[letter for letter in letters if is_unknown_outcome(letter)],
        dead_letters=letters,
        runs=[r for r in stack.runs() if first in (r["runId"], r["rootRunId"])],
        seconds=time.monotonic() - started,
    )


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    """Until ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.005)
    raise ChaosError(f"pid {pid} survived SIGKILL for {timeout:.0f} s")


def _wait_for_run(stack: Stack, run_id: str, timeout: float) -> None:
    """Until the receiver got a message from ``run_id``, or that run has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.emulator.wait_until(
            lambda state: any(d.custom_args.get("run_id") == run_id for d in state.delivered),
            timeout=0.5,
        ):
            return
        if stack.status(run_id) in TERMINAL:
            return
    stack.fail(f"run {run_id} sent nothing within {timeout:.0f} s")


def _wait_for_deliveries(stack: Stack, run_id: str, count: int, timeout: float) -> bool:
    """Until the receiver has ``count`` messages (True) or the run sending them ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.emulator.wait_for_deliveries(count, timeout=0.5):
            return True
        if stack.status(run_id) in TERMINAL:
            return stack.emulator.wait_for_deliveries(count, timeout=0)
    stack.fail(f"no progress: the receiver has {len(stack.emulator.state.delivered)} messages")
    raise AssertionError  # unreachable


def _target_pid(stack: Stack, target: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pids_of(stack.marker, target)
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.02)
    stack.fail(f"no single {target} process to kill: {processes_with(stack.marker)}")
    raise AssertionError  # unreachable


def recover(stack: Stack, target: str, run_id: str) -> str:
    """The documented recovery after ``target`` was killed; returns the run now sending."""
    if target in ("daemon", "webserver"):
        stack.wait_down()
        stack.start()
    status = stack.wait_terminal(run_id)
    if status == "SUCCESS":
        return run_id
    return stack.reexecute_from_failure(run_id)


def finish(stack: Stack, run_id: str, attempts: int = 3) -> str:
    """Wait for the campaign's last run; re-execute from failure until one succeeds."""
    for _ in range(attempts):
        if stack.wait_terminal(run_id) == "SUCCESS":
            return run_id
        run_id = stack.reexecute_from_failure(run_id)
    return run_id


@contextlib.contextmanager
def running_stack(base: Path, emulator: SendGridEmulator, **options: Any) -> Iterator[Stack]:
    stack = Stack(base, emulator, **options)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
