"""One product stack (webserver, daemon, API) for the API tests, started as a user starts it:
`partnerships up` on free ports, in a fresh home, with a small playbooks folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator.store.tokens import TokenStore
from partnerships_orchestrator_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFIX = "/api/partnerships"

HELLO = """
id: api-hello
name: API hello
description: Greets the gold partners.
owners: [team-a]
triggers: [{type: manual}, {type: webhook}]
inputs:
  tier: {type: string, default: gold, enum: [gold, silver, bronze]}
  limit: {type: integer, default: 2}
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners where tier = :tier order by id limit :limit"
    params: {tier: "{{ inputs.tier }}", limit: "{{ inputs.limit }}"}
  - id: count
    type: evaluate
    depends_on: [partners]
    expression: "steps.partners.rows | length"
  - id: greet
    type: communicate
    depends_on: [count]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Hello {{ item.name }}"
    body: "Hello from the partnerships team, {{ item.name }}."
"""

FIXABLE = """
id: api-fixable
name: Fails until its table exists
owners: [team-a]
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners order by id limit 2"
  - id: greet
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Before the check"
    body: "Hello {{ item.name }}."
  - id: check
    type: query
    depends_on: [partners]
    on_error: {action: retry, max_attempts: 1}
    sql: "select count(*) as n from api_fix_me"
"""

SLOW = """
id: api-slow
name: Slow
owners: [team-a]
steps:
  - id: crunch
    type: query
    sql: >-
      with recursive c(x) as (select 1 union all select x + 1 from c where x < 15000000)
      select count(*) as n from c
"""

FOREIGN = """
id: api-foreign
name: Another team's
owners: [team-b]
steps:
  - {id: one, type: evaluate, expression: "1"}
"""


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    ui: str
    api: str
    home: Path
    playbooks: Path
    env: dict[str, str]
    admin: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, secret: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.api + PREFIX, headers=headers, timeout=60, **kwargs)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "partnerships"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )

    @property
    def state_url(self) -> str:
        return load_settings(self.playbooks, self.home).state_url

    def token(self, role: str, team: str = "team-a", rate_limit: int | None = None) -> str:
        """A token's secret, made once per (role, team, limit) in the stack's token store (the
        one `partnerships token create` writes; the CLI itself is tested separately)."""
        key = f"{role}:{team}:{rate_limit}"
        if key not in self.tokens:
            store = TokenStore(self.state_url)
            _, self.tokens[key] = store.create(role=role, teams=[team], rate_limit=rate_limit)
        return self.tokens[key]


def wait_for(probe: Callable[[], Any], timeout: float = 120, every: float = 0.25) -> Any:
    """Poll ``probe`` until it returns something truthy (its value), or fail at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {probe}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("api-stack")
    playbooks = base / "playbooks"
    playbooks.mkdir()
    for name, text in (
        ("api-hello", HELLO),
        ("api-fixable", FIXABLE),
        ("api-slow", SLOW),
        ("api-foreign", FOREIGN),
    ):
        (playbooks / f"{name}.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL")}
    env.update(
        PARTNERSHIPS_HOME=str(base / "home"),
        PARTNERSHIPS_PLAYBOOKS=str(playbooks),
        PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
    )
    ui_port, api_port = free_port(), free_port()
    log_path = base / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "partnerships"),
                "up",
                "--ui-port",
                str(ui_port),
                "--api-port",
                str(api_port),
                "--api-workers",  # as a deployment on more cores: answers never per process
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:
            logs = [log_path, *sorted((base / "home" / "logs").glob("*.log"))]
            pytest.fail(
                "the product exited:\n"
                + "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            )
        return b"ready:" in log_path.read_bytes()

    try:
        wait_for(ready, timeout=240)
    except BaseException:
        _stop(process)
        raise
    load_errors: list[str] = []

    def jobs_loaded() -> bool:
        """The code location loaded with the playbooks (reloaded if loading it failed)."""
        query = """{ workspaceOrError { ... on Workspace { locationEntries { name
            locationOrLoadError { __typename ... on PythonError { message }
              ... on RepositoryLocation { repositories { jobs { name } } } } } } } }"""
        url = f"http://127.0.0.1:{ui_port}/graphql"
        data = httpx.post(url, json={"query": query}, timeout=30).json()["data"]
        for entry in data["workspaceOrError"]["locationEntries"]:
            location = entry["locationOrLoadError"] or {}
            if location.get("__typename") == "PythonError":
                load_errors.append(location["message"])
                reload = 'mutation { reloadRepositoryLocation(repositoryLocationName: "partnerships") { __typename } }'
                httpx.post(url, json={"query": reload}, timeout=60)
                return False
            for repository in location.get("repositories", []):
                if any(job["name"] == "api_hello" for job in repository["jobs"]):
                    return True
        return False

    try:
        wait_for(jobs_loaded, timeout=120, every=0.5)
    except BaseException:
        _stop(process)
        raise AssertionError(f"the code location did not load: {load_errors[-1:]}") from None
    text = log_path.read_text()
    admin = re.search(r"PARTNERSHIPS_API_TOKEN=(\S+)", text)
    assert admin, text
    yield Stack(
        process=process,
        ui=f"http://127.0.0.1:{ui_port}",
        api=f"http://127.0.0.1:{api_port}",
        home=base / "home",
        playbooks=playbooks,
        env=env,
        admin=admin.group(1),
    )
    _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: `partnerships up` stops its webserver, daemon and API (a SIGKILL would leave
    them running, as they lead their own process groups)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
