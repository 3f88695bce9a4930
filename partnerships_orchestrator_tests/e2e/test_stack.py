"""The product as a user starts it: `partnerships up`, a run launched through the webserver's
GraphQL API, its messages in the outbox, and every process gone after Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from partnerships_orchestrator.instance import instance_config_source
from partnerships_orchestrator.launcher import Stack
from partnerships_orchestrator.run_launcher import run_pid
from partnerships_orchestrator_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e

PLAYBOOK = """
id: e2e-hello
name: End-to-end hello
description: Greets the gold partners.
tags: {team: partner-ops}
owners: [partner-ops]
inputs:
  tier: {type: string, default: gold, enum: [gold, silver, bronze]}
  limit: {type: integer, default: 3}
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners where tier = :tier order by id limit :limit"
    params: {tier: "{{ inputs.tier }}", limit: "{{ inputs.limit }}"}
  - id: greet
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Hello {{ item.name }}"
    body: "Hello from the partnerships team, {{ item.name }}."
"""


SLOW = """
id: e2e-slow
description: Waits on a webhook the test holds open.
steps:
  - id: wait
    type: webhook
    url: "{url}"
    method: POST
    json: {{hello: world}}
    on_error: {{action: retry, max_attempts: 1}}
"""

FLAKY = """
id: e2e-flaky
description: Fails until the table it reads exists.
steps:
  - id: partners
    type: query
    sql: "select id from partners order by id limit 1"
  - id: check
    type: query
    depends_on: [partners]
    sql: "select count(*) as n from fixme"
    on_error: {action: retry, max_attempts: 1}
"""


class Gate:
    """A loopback HTTP endpoint that holds each request until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.arrived = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                gate.arrived.set()
                gate.opened.wait(120)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries ``marker`` (every process the stack started does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


@dataclass
class Product:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    env: dict[str, str]
    home: Path
    gate: Gate
    log: Path


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    base = tmp_path_factory.mktemp("product")
    playbooks = base / "playbooks"
    playbooks.mkdir()
    (playbooks / "e2e-hello.yaml").write_text(PLAYBOOK)
    (playbooks / "broken.yaml").write_text("id: broken\nsteps:\n  - {id: a, type: nope}\n")
    gate = Gate()
    (playbooks / "e2e-slow.yaml").write_text(SLOW.format(url=gate.url))
    (playbooks / "e2e-flaky.yaml").write_text(FLAKY)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        PARTNERSHIPS_HOME=str(base / "home"),
        PARTNERSHIPS_PLAYBOOKS=str(playbooks),
        PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
        PARTNERSHIPS_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
    )
    log = (base / "up.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "partnerships"),
            "up",
            "--port",
            str(port),
            "--api-port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if b"ready:" in (base / "up.log").read_bytes():
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the product did not start:\n" + (base / "up.log").read_text()[-3000:])
    yield Product(process, url, port, env, base / "home", gate, base / "up.log")
    gate.close()
    if process.poll() is None:  # a test failed before Ctrl-C: stop the stack the same way
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _graphql(product: Product, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(
        f"{product.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    )
    response.raise_for_status()
    return response.json()["data"]


def test_playbook_is_a_job_with_description_tags_and_typed_launchpad(product):
    data = _graphql(
        product,
        """
      { repositoryOrError(repositorySelector: {repositoryLocationName: "partnerships",
                                               repositoryName: "partnerships"}) {
          ... on Repository { jobs { name description tags { key value } } } } }""",
    )
    jobs = {j["name"]: j for j in data["repositoryOrError"]["jobs"]}
    hello = jobs["e2e_hello"]
    assert hello["description"].startswith("End-to-end hello: Greets the gold partners.")
    tags = {t["key"]: t["value"] for t in hello["tags"]}
    assert tags["team"] == "partner-ops" and tags["partnerships/playbook"] == "e2e-hello"
    assert "INVALID" in jobs["invalid__broken"]["description"]
    assert "broken.yaml:3" in jobs["invalid__broken"]["description"]
    schema = _graphql(
        product,
        """
      { runConfigSchemaOrError(selector: {repositoryLocationName: "partnerships",
            repositoryName: "partnerships", pipelineName: "e2e_hello"}) {
          ... on RunConfigSchema { rootConfigType { key ... on CompositeConfigType {
              fields { name isRequired } } } } } }""",
    )
    fields = {f["name"] for f in schema["runConfigSchemaOrError"]["rootConfigType"]["fields"]}
    assert fields == {"tier", "limit"}


def test_run_launched_through_graphql_delivers_to_the_outbox(product):
    client = DagsterGraphQLClient("127.0.0.1", port_number=product.port)
    run_id = client.submit_job_execution(
        "e2e_hello",
        repository_location_name="partnerships",
        repository_name="partnerships",
        run_config={"tier": "silver", "limit": 2},
    )
    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.5)
    assert status == "SUCCESS"
    out = subprocess.run(
        [str(BIN / "partnerships"), "outbox", "--json", "--run", run_id],
        env=product.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    messages = json.loads(out.stdout)
    assert len(messages) == 2
    assert all(m["subject"].startswith("Hello ") and m["channel"] == "email" for m in messages)
    assert {m["step"].split("[")[0] for m in messages} == {"greet"}


def _cli(product: Product, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "partnerships"), *args],
        env=product.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _wait_for_status(client: DagsterGraphQLClient, run_id: str, wanted: set[str]) -> str:
    deadline = time.monotonic() + 180
    status = ""
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in wanted:
            return status
        time.sleep(0.2)
    return status


def test_up_says_ready_with_what_the_location_loaded(product):
    ready = [line for line in product.log.read_text().splitlines() if line.startswith("ready: ")]
    assert len(ready) == 1
    # e2e-hello, e2e-slow, e2e-flaky are jobs; broken.yaml is an invalid document
    assert "3 job(s)" in ready[0] and "1 invalid document(s)" in ready[0]
    assert re.search(r"\d+ schedule\(s\), \d+ sensor\(s\)", ready[0])


def test_a_killed_run_worker_is_failed_by_run_monitoring_then_resumed(product):
    """A daemon-launched run whose worker process is SIGKILLed mid-step: run monitoring marks it
    failed within its poll interval (dagster.yaml), and `partnerships resume` finishes it."""
    poll = yaml.safe_load(instance_config_source().read_text())["run_monitoring"][
        "poll_interval_seconds"
    ]
    client = DagsterGraphQLClient("127.0.0.1", port_number=product.port)
    run_id = client.submit_job_execution(
        "e2e_slow", repository_location_name="partnerships", repository_name="partnerships"
    )
    assert product.gate.arrived.wait(180), "the run never reached its webhook step"
    with dg.DagsterInstance.from_config(str(product.home / "dagster")) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTED
        pid = run_pid(instance, run)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert _wait_for_status(client, run_id, {"FAILURE", "SUCCESS", "CANCELED"}) == "FAILURE"
    noticed = time.monotonic() - killed
    assert noticed <= poll + 3, f"marked failed {noticed:.1f}s after the kill (poll {poll}s)"
    product.gate.opened.set()
    resumed = _cli(product, "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["success"] and summary["parent_run_id"] == run_id
    assert summary["root_run_id"] == run_id and summary["steps"] == {"wait": "succeeded"}


REEXECUTE = """
mutation($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


def test_a_failed_cli_run_is_re_executed_from_the_ui(product):
    """`partnerships run` runs carry the code location as their origin: Re-execute -> From
    failure (the UI's GraphQL mutation) works on them and runs only what failed."""
    failed = _cli(product, "run", "e2e-flaky")
    assert failed.returncode == 1
    out = " ".join(failed.stdout.split())
    assert "error: check:" in out and "no such table: fixme" in out
    [run_id] = re.findall(r"partnerships resume ([0-9a-f-]{36})", out)
    with sqlite3.connect(product.home / "warehouse.db") as conn:
        conn.execute("create table fixme (x integer)")
    data = _graphql(product, REEXECUTE, {"parent": run_id})["launchPipelineReexecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    child = data["run"]["runId"]
    client = DagsterGraphQLClient("127.0.0.1", port_number=product.port)
    assert _wait_for_status(client, child, {"SUCCESS", "FAILURE", "CANCELED"}) == "SUCCESS"
    runs = json.loads(_cli(product, "runs", "--json", "--playbook", "e2e-flaky").stdout)
    assert [r["run_id"] for r in runs] == [child, run_id]
    assert runs[0]["root_run_id"] == run_id


def test_ctrl_c_stops_every_process_within_ten_seconds(product):
    marker = f"PARTNERSHIPS_HOME={product.home}"
    started = processes_with(marker)
    assert len(started) >= 3  # launcher, webserver, daemon (plus their code servers)
    product.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_with(marker):
        time.sleep(0.2)
    assert [_command_line(pid) for pid in processes_with(marker)] == []
    assert product.process.wait(timeout=1) == 0


def test_stack_stop_kills_children_that_ignore_sigterm(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    stack = Stack()
    env = {**os.environ, "STUBBORN_MARK": str(tmp_path)}
    stack.start([sys.executable, "-c", stubborn], env, tmp_path / "a.log")
    while b"up" not in (tmp_path / "a.log").read_bytes():
        time.sleep(0.05)
    started = time.monotonic()
    stack.stop(grace=0.5)
    assert time.monotonic() - started < 5
    assert processes_with(f"STUBBORN_MARK={tmp_path}") == []


def test_killing_the_parent_during_start_up_stops_every_process(tmp_path):
    """`make run` killed while the stack is still starting: nothing may be left behind."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "tiny.yaml").write_text(
        "id: tiny\nsteps:\n  - {id: a, type: evaluate, expression: '1'}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(PARTNERSHIPS_HOME=str(tmp_path / "home"), PARTNERSHIPS_PLAYBOOKS=str(playbooks))
    marker = f"PARTNERSHIPS_HOME={tmp_path / 'home'}"
    command = f"'{BIN / 'partnerships'}' up --no-seed --port {free_port()} --api-port {free_port()} > '{tmp_path}/up.log' 2>&1 & wait"
    parent = subprocess.Popen(["bash", "-c", command], env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(processes_with(marker)) < 3:
        time.sleep(0.1)  # until the launcher, webserver and daemon exist
    assert len(processes_with(marker)) >= 3
    assert b"ready:" not in (tmp_path / "up.log").read_bytes()  # still starting up
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_with(marker):
        time.sleep(0.2)
    assert processes_with(marker) == []
    assert b"stopping (SIGTERM)" in (tmp_path / "up.log").read_bytes()


def _start_up(
    base: Path, playbook_files: dict[str, str], extra_env: dict[str, str], api_port: int = 0
) -> tuple[subprocess.Popen[bytes], Path]:
    playbooks = base / "playbooks"
    playbooks.mkdir(parents=True)
    for name, text in playbook_files.items():
        (playbooks / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        PARTNERSHIPS_HOME=str(base / "home"), PARTNERSHIPS_PLAYBOOKS=str(playbooks), **extra_env
    )
    log = base / "up.log"
    process = subprocess.Popen(
        [
            str(BIN / "partnerships"),
            "up",
            "--no-seed",
            "--port",
            str(free_port()),
            "--api-port",
            str(api_port or free_port()),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


TINY = "id: tiny\nsteps:\n  - {id: a, type: evaluate, expression: '1'}\n"


def test_fresh_homes_started_at_once_all_load_the_location(tmp_path):
    """Three first `up`s at once, each on its own fresh home: the old race (webserver and daemon
    creating the storage together) broke 2 of 5 first starts, so three concurrent ones (plus the
    module's stack above) would have shown it, while keeping this test to one start's time."""
    starts = [_start_up(tmp_path / f"h{i}", {"tiny.yaml": TINY}, {}) for i in range(3)]
    try:
        deadline = time.monotonic() + 240
        pending = {log for _, log in starts}
        while pending and time.monotonic() < deadline:
            for process, log in starts:
                text = log.read_text()
                if log in pending and ("ready: " in text or process.poll() is not None):
                    pending.discard(log)
            time.sleep(0.5)
        for process, log in starts:
            text = log.read_text()
            assert "ready: " in text, text[-3000:]
            assert "1 job(s), 0 schedule(s)" in text and "0 invalid document(s)" in text
            assert process.poll() is None
    finally:
        for process, _ in starts:
            process.send_signal(signal.SIGINT)
        for process, _ in starts:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_location_that_fails_to_load_is_reported_and_up_exits_1(tmp_path):
    """With PARTNERSHIPS_STRICT the location refuses to load while a file is invalid: `up`
    prints why, never `ready`, and stops everything with exit code 1."""
    broken = "id: broken\nsteps:\n  - {id: a, type: nope}\n"
    text = _failed_start(
        tmp_path, {"tiny.yaml": TINY, "broken.yaml": broken}, {"PARTNERSHIPS_STRICT": "1"}
    )
    assert "the code location `partnerships` failed to load" in text
    assert "broken.yaml:3" in text


def _failed_start(tmp_path: Path, files: dict[str, str], env: dict[str, str], **kw: int) -> str:
    """`up`'s output, once it exited 1 without `ready`, leaving no process behind."""
    process, log = _start_up(tmp_path, files, env, **kw)
    try:
        code = process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "ready: " not in text and "stopped" in text
    assert processes_with(f"PARTNERSHIPS_HOME={tmp_path / 'home'}") == []
    return text


def test_a_process_that_cannot_start_is_named_with_the_end_of_its_log(tmp_path):
    """The API's port is taken: `up` says which process exited, with what code and the last
    lines of its log, and stops the others with exit code 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = _failed_start(tmp_path, {"tiny.yaml": TINY}, {}, api_port=port)
    assert re.search(r"the stack did not come up: `uvicorn` exited with code [1-9]", text), text
    assert "address already in use" in text
