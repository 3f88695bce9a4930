"""`partnerships up`: prepare local state and run the Dagster webserver and daemon until stopped.

The launcher owns its children: each runs in its own process group, and Ctrl-C (SIGINT) or
SIGTERM terminates every group, then kills what is left after a grace period, so nothing
outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess  # nosec B404 # the launcher starts the product's own commands
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.naming import LOCATION_NAME
from partnerships_orchestrator.instance import (
    PACKAGE_ROOT,
    POSTGRES_ENV,
    dagster_postgres_url,
    instance_config_source,
)
from partnerships_orchestrator.settings import WEBSERVER_ENV, Settings

__all__ = [
    "POSTGRES_ENV",
    "LocationStatus",
    "Stack",
    "dagster_postgres_url",
    "instance_config_source",
    "location_status",
    "run_stack",
]

# The daemon stops its threads within a second; the webserver waits for its code server to finish
# RPCs and, on a busy machine, takes the whole grace: nothing of value is lost by killing it then.
GRACE_SECONDS = 4.0
READY_TIMEOUT = 180.0
LOG_TAIL = 15  # lines of a process's log shown when it exits


def workspace_file() -> Path:
    return PACKAGE_ROOT / "workspace.yaml"


def child_environment(settings: Settings) -> dict[str, str]:
    """Environment for the webserver, daemon and code servers: every location made explicit."""
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(settings.dagster_home),
        PARTNERSHIPS_HOME=str(settings.home),
        PARTNERSHIPS_PLAYBOOKS=str(settings.playbooks_dir),
        PARTNERSHIPS_TEMPLATES=str(settings.templates_dir),
    )
    return env


@dataclass
class Stack:
    """The processes `partnerships up` started, each leading its own process group."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[tuple[str, Path]] = field(default_factory=list)  # each one's command and log

    def start(self, args: list[str], env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        self.logs.append((Path(args[0]).name, log))
        self.processes.append(
            subprocess.Popen(  # nosec B603 # a fixed argv of the product's own commands, no shell
                args,
                env=env,
                cwd=PACKAGE_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def exited(self) -> str | None:
        """Which process exited, with its exit code and the end of its log (None: all run)."""
        for proc, (name, log) in zip(self.processes, self.logs, strict=True):
            code = proc.poll()
            if code is not None:
                try:
                    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                except OSError:
                    tail = []
                lines = "".join(f"\n  {line}" for line in tail)
                return f"`{name}` exited with code {code} ({log}){lines}"
        return None

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Terminate every group, wait up to ``grace`` seconds, then kill whatever is left."""
        for proc in self.processes:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.processes:
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _bin(name: str) -> str:
    """A console script of this environment (next to the running interpreter)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass(frozen=True)
class ApiOptions:
    """How `partnerships up` serves the HTTP API (HTTPS when given a certificate and key)."""

    port: int = 8080
    workers: int = 1
    access_log: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    def url(self, host: str) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    def command(self, host: str) -> list[str]:
        args = [
            _bin("uvicorn"),
            "--factory",
            "partnerships_orchestrator.api.app:app_from_environment",
            "--host",
            host,
            "--port",
            str(self.port),
            "--no-server-header",
        ]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        if not self.access_log:  # a line per request costs about a quarter of a cached read
            args.append("--no-access-log")
        if self.tls_cert and self.tls_key:
            args += ["--ssl-certfile", self.tls_cert, "--ssl-keyfile", self.tls_key]
        return args


def start_stack(settings: Settings, host: str, port: int, api: ApiOptions | None = None) -> Stack:
    env = child_environment(settings)
    logs = settings.home / "logs"
    stack = Stack()
    workspace = str(workspace_file())
    stack.start(
        [_bin("dagster-webserver"), "-h", host, "-p", str(port), "-w", workspace],
        env,
        logs / "webserver.log",
    )
    stack.start([_bin("dagster-daemon"), "run", "-w", workspace], env, logs / "daemon.log")
    if api is not None:
        api_env = {**env, WEBSERVER_ENV: f"http://{host}:{port}"}
        stack.start(api.command(host), api_env, logs / "api.log")
    return stack


LOCATION_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename
          ... on RepositoryLocation { repositories { name
              jobs { name } schedules { name } sensors { name } } }
          ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""


@dataclass(frozen=True)
class LocationStatus:
    """The `partnerships` code location as the webserver loaded it."""

    loaded: bool
    error: str | None = None
    jobs: int = 0
    schedules: int = 0
    sensors: int = 0
    invalid: int = 0

    def describe(self) -> str:
        return (
            f"{self.jobs} job(s), {self.schedules} schedule(s), {self.sensors} sensor(s), "
            f"{self.invalid} invalid document(s)"
        )


def location_status(url: str) -> LocationStatus | None:
    """Ask the webserver's GraphQL API how the code location loaded; None while it is loading
    (or the webserver does not answer yet)."""
    try:
        response = httpx.post(f"{url}/graphql", json={"query": LOCATION_QUERY}, timeout=5)
        body = response.json()
        data = body["data"]["workspaceOrError"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if data["__typename"] != "Workspace":
        return LocationStatus(False, data.get("message") or data["__typename"])
    entry = next((e for e in data["locationEntries"] if e["name"] == LOCATION_NAME), None)
    if entry is None or entry["loadStatus"] != "LOADED":
        return None
    loaded = entry["locationOrLoadError"] or {}
    if loaded.get("__typename") != "RepositoryLocation":
        error = loaded.get("message") or _graphql_error(body) or "the code location did not load"
        return LocationStatus(False, f"{error}\n{''.join(loaded.get('stack') or [])}".strip())
    jobs = [j["name"] for r in loaded["repositories"] for j in r["jobs"]]
    playbook_jobs = [j for j in jobs if not j.startswith("__")]
    return LocationStatus(
        True,
        jobs=len([j for j in playbook_jobs if not naming.is_invalid_job(j)]),
        schedules=sum(len(r["schedules"]) for r in loaded["repositories"]),
        sensors=sum(len(r["sensors"]) for r in loaded["repositories"]),
        invalid=len([j for j in playbook_jobs if naming.is_invalid_job(j)]),
    )


def _graphql_error(body: dict[str, Any]) -> str | None:
    """The first error of a GraphQL answer: the webserver loaded the location but could not
    describe it (e.g. its Dagster storage refused a query), so the answer holds no location."""
    errors = body.get("errors") or []
    if not errors:
        return None
    path = ".".join(str(part) for part in errors[0].get("path") or [])
    message = str(errors[0].get("message") or "")
    return f"the webserver could not describe the code location ({path}): {message}"


def wait_until_ready(
    url: str, stack: Stack, stop: Callable[[], bool], timeout: float = READY_TIMEOUT
) -> LocationStatus | None:
    """Poll the webserver until the code location has loaded or failed to (None when a child
    died, a stop was asked for, or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and stack.alive() and not stop():
        status = location_status(url)
        if status is not None:
            return status
        time.sleep(0.5)
    return None


def stop_with_parent() -> None:
    """Ask Linux to send us SIGTERM if our parent dies (e.g. `make run` killed with SIGTERM),
    so the stack never outlives the command that started it. Elsewhere: nothing to do.

    Started by init itself (a systemd service unit: the parent is pid 1, and stays), there is
    no command to outlive, so nothing is armed: the stack runs until the unit stops it."""
    parent = os.getppid()
    if not sys.platform.startswith("linux") or parent == 1:
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def api_ready(api: ApiOptions, host: str, stack: Stack, stop: Callable[[], bool]) -> bool:
    """Poll the API's `/health/live` (certificates are not checked: it is our own server)."""
    deadline = time.monotonic() + READY_TIMEOUT
    url = f"{api.url(host)}/api/partnerships/health/live"
    while time.monotonic() < deadline and stack.alive() and not stop():
        try:
            if httpx.get(url, timeout=2, verify=False).status_code == 200:  # nosec B501 # readiness probe of our own local API (self-signed is fine)
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def run_stack(
    settings: Settings,
    host: str,
    port: int,
    say: Callable[[str], None],
    api: ApiOptions | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Start the webserver and daemon, run until SIGINT/SIGTERM or a child exits, then stop
    everything. Signals are caught before the first child starts, so a Ctrl-C during start-up
    stops the stack too. ``on_ready`` is called with the UI's URL once `ready` is printed.
    Returns the exit code."""
    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_with_parent()
    stack = start_stack(settings, host, port, api)
    url = f"http://{host}:{port}"
    try:
        say(f"starting Dagster webserver and daemon (logs in {settings.home / 'logs'}) ...")
        stopping = lambda: bool(received)  # noqa: E731
        status = wait_until_ready(url, stack, stop=stopping)
        if status is not None and status.loaded and api is not None:
            status = status if api_ready(api, host, stack, stop=stopping) else None
        if status is None:
            if not received:
                exited = stack.exited()
                say(
                    f"the stack did not come up: {exited}"
                    if exited
                    else f"the stack did not come up within {READY_TIMEOUT:.0f} s; "
                    f"see {settings.home / 'logs'}"
                )
                return 1
        elif not status.loaded:
            say(f"the code location `{LOCATION_NAME}` failed to load:\n{status.error}")
            return 1
        else:
            if api is not None:
                say(f"API: {api.url(host)}/api/partnerships   (docs: {api.url(host)}/docs)")
            say(f"ready: {url}   ({status.describe()}; Ctrl-C to stop)")
            if on_ready is not None:
                on_ready(url)
        while not received and stack.alive():
            time.sleep(0.2)
        if not received:
            say(stack.exited() or "a process of the stack exited")
        return 0 if received else 1
    finally:
        say(f"stopping ({received[0] if received else 'a process exited'}) ...")
        stack.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
        say("stopped")
