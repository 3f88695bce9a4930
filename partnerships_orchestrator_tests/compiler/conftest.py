"""Fixtures for compiled playbooks: a seeded warehouse, the product's resources, a loopback server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.connections import build_resources
from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.emulators.core import serve


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "templates").mkdir()
    (tmp_path / "playbooks").mkdir()
    settings = Settings(
        playbooks_dir=tmp_path / "playbooks",
        templates_dir=tmp_path / "templates",
        home=tmp_path / "home",
    )
    engine = create_engine_for(settings.warehouse_url)
    ensure_schema(engine)
    seed_demo_data(engine, partners=40)
    engine.dispose()
    return settings


@pytest.fixture
def state(settings: Settings) -> StateStore:
    return StateStore(settings.state_url)


@dataclass
class Receiver:
    """A loopback HTTP endpoint whose answers the test scripts: fail N times, hang, or meet."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    met: int = 0
    all_met: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.calls.clear()
        self.fail_first = 0
        self.release = threading.Event()
        self.met = 0
        self.all_met = threading.Event()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        rec.calls.append(
            {"path": request.url.path, "body": body.decode(), "headers": dict(request.headers)}
        )
        if len(rec.calls) <= rec.fail_first:
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "n": len(rec.calls)})

    async def slow(request: Request) -> Response:
        rec.calls.append({"path": request.url.path})
        await asyncio.get_running_loop().run_in_executor(None, rec.release.wait, 30)
        return JSONResponse({"ok": True})

    async def meet(request: Request) -> Response:
        """Answers only once two callers are waiting at the same time (proof of parallelism)."""
        rec.met += 1
        if rec.met >= 2:
            rec.all_met.set()
        ok = await asyncio.get_running_loop().run_in_executor(None, rec.all_met.wait, 60)
        return JSONResponse({"met": ok}, status_code=200 if ok else 504)

    app = Starlette(
        routes=[
            Route("/hook", hook, methods=["POST", "GET"]),
            Route("/meet", meet, methods=["POST"]),
            Route("/slow", slow, methods=["POST", "GET"]),
        ]
    )
    with serve(app) as server:
        rec.url = server.url
        yield rec
        rec.release.set()


@pytest.fixture
def hooks(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """The receiver, reset, with loopback allow-listed for webhook steps."""
    receiver.reset()
    monkeypatch.setenv("PARTNERSHIPS_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    yield receiver
    receiver.release.set()


def playbook_from(text: str) -> Playbook:
    return TypeAdapter(Playbook).validate_python(yaml.safe_load(text))


RunPlaybook = Callable[..., dg.ExecuteInProcessResult]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def run_playbook(settings: Settings, instance: dg.DagsterInstance) -> RunPlaybook:
    """Compile a playbook (YAML text) with the product's resources and run it in process."""

    def run(text: str, run_config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
        job = build_job(playbook_from(text), build_resources(settings, None))
        return job.execute_in_process(
            run_config=run_config or {}, raise_on_error=False, instance=instance
        )

    return run


def step_events(result: dg.ExecuteInProcessResult) -> dict[str, list[str]]:
    """Event types per step key, in order."""
    events: dict[str, list[str]] = {}
    for event in result.all_events:
        if event.step_key:
            events.setdefault(event.step_key, []).append(event.event_type_value)
    return events


def messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    """Every user log message of the run."""
    return [r.user_message for r in instance.all_logs(result.run_id) if r.dagster_event is None]
