"""The product as a user starts it: `partnerships up`, a run launched through the webserver's
GraphQL API, its messages in the outbox, and every process gone after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from partnerships_orchestrator.launcher import Stack

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class Product:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    env: dict[str, str]
    home: Path


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    base = tmp_path_factory.mktemp("product")
    playbooks = base / "playbooks"
    playbooks.mkdir()
    (playbooks / "e2e-hello.yaml").write_text(PLAYBOOK)
    (playbooks / "broken.yaml").write_text("id: broken\nsteps:\n  - {id: a, type: nope}\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        PARTNERSHIPS_HOME=str(base / "home"),
        PARTNERSHIPS_PLAYBOOKS=str(playbooks),
        PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
    )
    log = (base / "up.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "partnerships"),
            "up",
            "--port",
            str(port),
            "--api-port",
            str(_free_port()),
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
    yield Product(process, url, port, env, base / "home")
    if process.poll() is None:
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


def test_ctrl_c_stops_every_process_within_ten_seconds(product):
    marker = f"PARTNERSHIPS_HOME={product.home}"
    started = processes_with(marker)
    assert len(started) >= 3  # launcher, webserver, daemon (plus their code servers)
    product.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_with(marker):
        time.sleep(0.2)
    assert processes_with(marker) == []
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
    command = f"'{BIN / 'partnerships'}' up --no-seed --port {_free_port()} --api-port {_free_port()} > '{tmp_path}/up.log' 2>&1 & wait"
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
