"""Fixtures for step runners: a real SQLite warehouse, a state store, a loopback HTTP receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import Playbook, StepBase
from partnerships_orchestrator.steps.context import RunInfo, StepContext, StepResources
from partnerships_orchestrator.store.state import StateStore

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"partnerships-test-secret-0123456").decode()
RUN_STARTED = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

PARTNERS = [
    {
        "id": "p1",
        "name": "Acme",
        "tier": "gold",
        "amount": Decimal("1200.50"),
        "created_at": datetime(2024, 1, 1, 0, 0),
        "signed_on": date(2024, 1, 2),
    },
    {
        "id": "p2",
        "name": "Globex",
        "tier": "silver",
        "amount": Decimal("80.00"),
        "created_at": datetime(2024, 1, 10, 12, 0),
        "signed_on": date(2024, 1, 11),
    },
    {
        "id": "p3",
        "name": "Initech",
        "tier": "gold",
        "amount": Decimal("5.25"),
        "created_at": datetime(2024, 2, 1, 0, 0),
        "signed_on": None,
    },
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    templates = tmp_path / "templates"
    templates.mkdir()
    return Settings(
        playbooks_dir=tmp_path / "playbooks", templates_dir=templates, home=tmp_path / "home"
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite warehouse with a ``partners`` table (naive UTC DateTime) and a hyphenated view."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/warehouse.db")
    metadata = sa.MetaData()
    partners = sa.Table(
        "partners",
        metadata,
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("tier", sa.String, nullable=False),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("signed_on", sa.Date),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(partners.insert(), PARTNERS)
        conn.execute(
            sa.text("""create view "gold-partners" as select * from partners where tier = 'gold'""")
        )
    yield engine
    engine.dispose()


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path}/state.db")


MakeContext = Callable[..., StepContext]


@pytest.fixture
def make_ctx(settings: Settings, warehouse: Engine, state: StateStore) -> MakeContext:
    """Build the ``StepContext`` a runner gets for ``step``; keyword arguments adjust it."""

    def build(
        step: StepBase,
        *,
        inputs: dict[str, Any] | None = None,
        steps: dict[str, Any] | None = None,
        item: Any = None,
        mapping_key: str | None = None,
        deadline: float | None = None,
        run_id: str = "run-1",
        root_id: str = "root-1",
        crm: dict[str, Any] | None = None,
        allow_hosts: tuple[str, ...] = (),
        secret: str | None = WEBHOOK_SECRET,
    ) -> StepContext:
        run = RunInfo(id=run_id, root_id=root_id, playbook="test-playbook", started_at=RUN_STARTED)
        scope: dict[str, Any] = {
            "inputs": inputs or {},
            "steps": steps or {},
            "trigger": None,
            "run": run.as_scope(),
        }
        if item is not None:
            scope["item"] = item
        resources = StepResources(
            state=state,
            warehouse=lambda: warehouse,
            crm=crm or {},
            webhook_allow_hosts=allow_hosts,
            webhook_secret=(lambda: secret) if secret else None,
        )
        return StepContext(
            playbook=Playbook.model_construct(id="test-playbook", steps=[step]),
            step=step,
            run=run,
            scope=scope,
            settings=settings,
            resources=resources,
            mapping_key=mapping_key,
            deadline=deadline,
        )

    return build


# ---------------------------------------------------------------- loopback HTTP receiver


@dataclass
class Receiver:
    """The running loopback server and what it has received."""

    base_url: str
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)


async def _echo(request: Request) -> Response:
    body = await request.body()
    headers = dict(request.headers)
    try:
        Webhook(WEBHOOK_SECRET).verify(body, headers, json_parse=False)
        verified = True
    except WebhookVerificationError:
        verified = False
    record = {
        "method": request.method,
        "path": request.url.path,
        "headers": headers,
        "body": body.decode(),
        "verified": verified,
    }
    request.app.state.received.append(record)
    return JSONResponse(record)


async def _status(request: Request) -> Response:
    request.app.state.received.append({"path": request.url.path})
    code = int(request.path_params["code"])
    return PlainTextResponse("nope " * 100, status_code=code)


async def _slow(request: Request) -> Response:
    # Waits on an event nobody sets: the client's timeout is what ends the call.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), timeout=0.6)
    return PlainTextResponse("late")


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that signals when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    app = Starlette(
        routes=[
            Route("/echo", _echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/status/{code:int}", _status, methods=["GET", "POST"]),
            Route("/slow", _slow, methods=["POST"]),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    state = Receiver(base_url=f"http://127.0.0.1:{port}", port=port)
    app.state.received = state.received
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert server.ready.wait(timeout=10), "the loopback receiver did not start"
    yield state
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
