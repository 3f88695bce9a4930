"""Shared machinery of the loopback vendor emulators (tests only; production never imports it).

An emulator is an :class:`Emulator` subclass: in-memory state rebuilt by ``reset()``, a fake
:class:`Clock`, a :class:`FaultPlan`, a request :class:`Journal` and per-key :class:`RateLimiter`
helpers. ``app()`` wraps the vendor routes in a middleware that journals every request, applies
queued faults, and adds the control plane every emulator shares::

    POST /__emulator/faults     queue one fault or a list (see Fault)
    GET  /__emulator/faults     the faults still pending
    POST /__emulator/reset      fresh state, no faults, empty journal, real time
    GET  /__emulator/requests   the journal (``?path=`` prefix filter)
    POST /__emulator/clock      {"advance": seconds} or {"set": epoch}; answers {"now": epoch}

Tests in the same process call the Python equivalents directly (``add_fault``, ``reset``,
``journal``, ``clock``). :func:`serve` runs any ASGI app with uvicorn on 127.0.0.1 and an
ephemeral port in a background thread, returning once it accepts connections.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qs

import uvicorn
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PREFIX = "/__emulator/"


class Clock:
    """Wall-clock time plus an adjustable offset: advance it to expire tokens or age timestamps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def now(self) -> float:
        """Emulated unix time in seconds."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._offset += seconds
        return self.now()

    def set(self, epoch: float) -> float:
        with self._lock:
            self._offset = epoch - time.time()
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0


class ManualClock:
    """A monotonic clock a test moves by hand (for the client side: token expiry, caches)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Decision:
    """A rate limiter's answer, with what a vendor would put in its headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


class RateLimiter:
    """A vendor-side limit per key: ``limit`` calls per ``window`` seconds.

    ``fixed_window`` counts calls in windows aligned on the clock; ``token_bucket`` refills
    ``limit / window`` tokens per second and holds ``burst`` of them (default ``limit``).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Clock,
        *,
        kind: Literal["fixed_window", "token_bucket"] = "fixed_window",
        burst: int | None = None,
    ) -> None:
        self.limit, self.window, self.kind = limit, window, kind
        self.burst = burst or limit
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def hit(self, key: str = "") -> Decision:
        """Count one call for ``key`` if allowed."""
        with self._lock:
            now = self._clock.now()
            if self.kind == "fixed_window":
                return self._fixed(key, now)
            return self._bucket(key, now)

    def reset(self) -> None:
        with self._lock:
            self._state.clear()

    def _fixed(self, key: str, now: float) -> Decision:
        start = now - now % self.window
        window_start, used = self._state.get(key, (start, 0.0))
        if window_start != start:
            used = 0.0
        reset_after = start + self.window - now
        if used >= self.limit:
            return Decision(False, self.limit, 0, reset_after, reset_after)
        self._state[key] = (start, used + 1)
        return Decision(True, self.limit, int(self.limit - used - 1), reset_after, 0.0)

    def _bucket(self, key: str, now: float) -> Decision:
        rate = self.limit / self.window
        updated, tokens = self._state.get(key, (now, float(self.burst)))
        tokens = min(float(self.burst), tokens + (now - updated) * rate)
        if tokens < 1:
            self._state[key] = (now, tokens)
            wait = (1 - tokens) / rate
            return Decision(False, self.limit, 0, wait, wait)
        self._state[key] = (now, tokens - 1)
        full_in = (self.burst - tokens + 1) / rate
        return Decision(True, self.limit, int(tokens - 1), full_in, 0.0)


class FaultAction(enum.StrEnum):
    RESPOND = "respond"  # answer with status, body and headers instead of the vendor
    DELAY = "delay"  # wait delay_seconds, then let the vendor answer
    DROP_CONNECTION = "drop_connection"  # close the socket without any response
    MALFORMED_JSON = "malformed_json"  # 200 with a truncated JSON body


class Fault(BaseModel):
    """One injected fault: which requests it matches, what it does, how many times."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(default=None, description="HTTP method; any when unset.")
    path: str = Field(default="/", description="Path prefix to match.")
    path_regex: str | None = Field(default=None, description="Regex searched in the path.")
    action: FaultAction = FaultAction.RESPOND
    status: int = 500
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    delay_seconds: float = 0.0
    times: int | None = Field(default=1, description="Matches to fault; None: every one.")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_regex is not None:
            return re.search(self.path_regex, path) is not None
        return path.startswith(self.path)


class FaultPlan:
    """Queue of faults; the first pending fault matching a request is applied and used up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request, if any (counting one use)."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    if fault.times is not None:
                        remaining = fault.times - 1
                        if remaining <= 0:
                            del self._faults[index]
                        else:
                            self._faults[index] = fault.model_copy(update={"times": remaining})
                    return fault
            return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.text,
            "at": self.at,
        }


class Journal:
    """Every vendor request received, in order (the control plane is not journaled)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, path: str = "", method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path starts with ``path`` (and of ``method``)."""
        with self._lock:
            found = list(self._requests)
        return [
            r
            for r in found
            if r.path.startswith(path) and (method is None or r.method == method.upper())
        ]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


StateT = TypeVar("StateT")


class Emulator(Generic[StateT]):
    """Base of every vendor emulator: subclasses define ``routes()`` and a state factory."""

    name = "emulator"

    def __init__(self, state_factory: Callable[[], StateT]) -> None:
        self._state_factory = state_factory
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified when state records something
        self.clock = Clock()
        self.faults = FaultPlan()
        self.journal = Journal()
        self.state: StateT = state_factory()
        self.base_url: str | None = None

    def routes(self) -> list[BaseRoute]:
        """The vendor's own routes."""
        return []

    def reset(self) -> None:
        """Fresh state, no faults, an empty journal and real time."""
        with self.lock:
            self.state = self._state_factory()
        self.faults.clear()
        self.journal.clear()
        self.clock.reset()

    def configure(self, **knobs: Any) -> None:
        """Change state knobs (limits, TTLs, modes) until the next reset; rate limiters are
        rebuilt from the new knobs on the next request."""
        with self.lock:
            for name, value in knobs.items():
                if not hasattr(self.state, name):
                    raise AttributeError(f"{type(self.state).__name__} has no knob {name!r}")
                setattr(self.state, name, value)
            for name in vars(self.state):
                if name.endswith("limiter"):
                    setattr(self.state, name, None)

    def notify_changed(self) -> None:
        """Wake the tests waiting in :meth:`wait_until` (call after recording something)."""
        with self.changed:
            self.changed.notify_all()

    def wait_until(self, predicate: Callable[[StateT], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(state)`` holds (True) or ``timeout`` passes (False)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.state), timeout)

    def add_fault(self, fault: Fault | None = None, /, **fields: Any) -> None:
        """Queue a fault, given as a :class:`Fault` or as its fields."""
        self.faults.add(fault if fault is not None else Fault(**fields))

    def requests(self, path: str = "", method: str | None = None) -> list[RecordedRequest]:
        return self.journal.requests(path, method)

    def app(self) -> ASGIApp:
        """The ASGI app: control plane plus vendor routes, behind journal and faults."""
        routes = [*_control_routes(self), *self.routes()]
        return _EmulatorMiddleware(self, Starlette(routes=routes))

    def serve(self) -> RunningServer:
        """Serve ``app()`` on loopback; remembers the URL in ``base_url``."""
        server = serve(self.app())
        self.base_url = server.url
        return server


def _control_routes(emulator: Emulator[Any]) -> list[BaseRoute]:
    async def add_faults(request: Request) -> Response:
        payload = await request.json()
        items = payload if isinstance(payload, list) else [payload]
        emulator.faults.add(*(Fault.model_validate(item) for item in items))
        return JSONResponse({"pending": len(emulator.faults.pending())})

    async def list_faults(request: Request) -> Response:
        return JSONResponse([f.model_dump(mode="json") for f in emulator.faults.pending()])

    async def reset(request: Request) -> Response:
        emulator.reset()
        return JSONResponse({"ok": True})

    async def requests(request: Request) -> Response:
        found = emulator.journal.requests(request.query_params.get("path", ""))
        return JSONResponse({"requests": [r.to_dict() for r in found]})

    async def clock(request: Request) -> Response:
        payload = await request.json()
        if "set" in payload:
            emulator.clock.set(float(payload["set"]))
        if "advance" in payload:
            emulator.clock.advance(float(payload["advance"]))
        return JSONResponse({"now": emulator.clock.now()})

    return [
        Route(f"{CONTROL_PREFIX}faults", add_faults, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}faults", list_faults, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}reset", reset, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}requests", requests, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}clock", clock, methods=["POST"]),
    ]


class _EmulatorMiddleware:
    """Journals each vendor request, then applies the first matching fault, if any."""

    def __init__(self, emulator: Emulator[Any], app: ASGIApp) -> None:
        self.emulator = emulator
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        self.emulator.journal.record(_recorded(scope, body, self.emulator.clock.now()))
        fault = self.emulator.faults.take(scope["method"], scope["path"])
        if fault is not None and await _apply(fault, send):
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the buffered body out again, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _recorded(scope: Scope, body: bytes, at: float) -> RecordedRequest:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        at=at,
    )


async def _apply(fault: Fault, send: Send) -> bool:
    """Carry out ``fault``; True when it answered (or dropped) the request itself."""
    if fault.action is FaultAction.DELAY:
        await asyncio.sleep(fault.delay_seconds)
        return False
    if fault.action is FaultAction.DROP_CONNECTION:
        await _drop_connection(send)
        return True
    if fault.action is FaultAction.MALFORMED_JSON:
        await _respond(send, 200, b'{"results": [{"id": "1", ', "application/json", fault.headers)
        return True
    body, content_type = _encode(fault.body)
    await _respond(send, fault.status, body, content_type, fault.headers)
    return True


def _encode(body: Any) -> tuple[bytes, str]:
    if body is None:
        return b"", "text/plain"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    raw = [(b"content-type", content_type.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if status not in (204, 304):
        raw.append((b"content-length", str(len(body)).encode()))
    else:
        body = b""
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send: Send) -> None:
    """Close the client's socket with no response at all.

    Raising inside the app would make uvicorn answer 500, so this reaches uvicorn's
    request-response cycle (the owner of ``send``) and aborts its transport.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("drop_connection needs the app to run directly under uvicorn")
    transport.abort()
    await asyncio.sleep(0)  # let connection_lost mark the cycle as disconnected


class _Server(uvicorn.Server):
    """A uvicorn server that signals when it is accepting connections (or failed to)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@dataclass
class RunningServer:
    """A served app: ``url`` is its base URL; ``stop()`` (or leaving ``with``) shuts it down."""

    url: str
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(app: ASGIApp, *, startup_timeout: float = 10.0) -> RunningServer:
    """Run ``app`` on 127.0.0.1 (ephemeral port) in a thread; return once it is accepting.

    uvicorn binds the port itself, so accepted sockets get TCP_NODELAY (requests-based SDKs
    otherwise see every answer ~40 ms late).
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, name="emulator-server", daemon=True)
    thread.start()
    if not server.ready.wait(startup_timeout) or not server.started:
        server.should_exit = True
        thread.join(startup_timeout)
        raise RuntimeError("the emulator server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(f"http://127.0.0.1:{port}", server, thread)
