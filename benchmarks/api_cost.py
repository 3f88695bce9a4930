"""What one API request costs the server: CPU per request, in process, one at a time.

    .venv/bin/python benchmarks/api_cost.py                  # 300 requests per endpoint
    .venv/bin/python benchmarks/api_cost.py --requests 100 --profile executions_get

With one Python process serving C closed-loop clients, each client waits for about C times the
server's time per request, so this is the figure that latency under load (`api.py`) follows,
measured without the noise of a shared machine's other work: process CPU time, not wall time.

A fresh home (demo warehouse seeded, three finished runs of the 3-step playbook of `api.py`,
made by `partnerships run`), the app built by `create_app` as `partnerships up` builds it, and
each request sent straight into the ASGI app (no sockets, no client threads), so sync routes
and dependencies run in the worker thread pool as they do when served. The baseline is
`GET /health/live`. The execution endpoints are measured twice: served from the response cache
(a repeated read: nothing was committed since) and as a miss (the cache emptied before each
request: what every read costs after a change, probe and rendering included). `--profile NAME`
prints the cProfile of that endpoint (its work then runs in the event loop's thread, so that
the profile sees it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))  # partnerships_orchestrator_tests is not installed

from partnerships_orchestrator_tests.api.conftest import HELLO  # noqa: E402

BIN = Path(sys.executable).parent
PREFIX = "/api/partnerships"


def make_home(base: Path, runs: int) -> None:
    """A home with the demo warehouse and ``runs`` finished runs of `api-hello`."""
    playbooks = base / "playbooks"
    playbooks.mkdir()
    (playbooks / "api-hello.yaml").write_text(HELLO)
    os.environ.pop("DAGSTER_HOME", None)
    os.environ.update(
        PARTNERSHIPS_HOME=str(base / "home"),
        PARTNERSHIPS_PLAYBOOKS=str(playbooks),
        PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
    )
    cli = [str(BIN / "partnerships")]
    subprocess.run([*cli, "seed"], check=True, capture_output=True, cwd=ROOT)
    for _ in range(runs):
        subprocess.run([*cli, "run", "-q", "api-hello"], check=True, capture_output=True, cwd=ROOT)


Call = Callable[[], Awaitable[None]]


def missing(cache: Any, call: Call) -> Call:
    """``call`` with the response cache emptied first: every request reads and renders."""

    async def miss() -> None:
        cache.clear()
        await call()

    return miss


def caller(app: Any, secret: str, path: str, query: str = "") -> Call:
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {secret}".encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call() -> None:
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise SystemExit(f"GET {path}?{query} answered {status}")

    return call


async def measure(calls: dict[str, Call], requests: int) -> dict[str, tuple[float, float]]:
    costs = {}
    for name, call in calls.items():
        for _ in range(20):  # warm: imports, caches, connections
            await call()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            await call()
        costs[name] = (
            (time.perf_counter() - wall) / requests * 1000,
            (time.process_time() - cpu) / requests * 1000,
        )
    return costs


def inline_thread_pool() -> None:
    """Run sync routes and dependencies in the event loop's thread (for the profiler)."""
    import fastapi.dependencies.utils
    import fastapi.routing

    async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    fastapi.routing.run_in_threadpool = inline  # type: ignore[assignment]
    fastapi.dependencies.utils.run_in_threadpool = inline  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per endpoint")
    parser.add_argument("--runs", type=int, default=3, help="finished runs in the home")
    parser.add_argument("--profile", help="print the profile of this endpoint (a name below)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-api-cost-") as folder:
        make_home(Path(folder), args.runs)
        from partnerships_orchestrator.api.app import create_app

        if args.profile:
            inline_thread_pool()
        app = create_app()
        ctx = app.state.ctx
        _, secret = ctx.tokens.create(role="viewer", teams=["*"], rate_limit=10**9)
        run_id = ctx.instance.get_run_records(limit=1)[0].dagster_run.run_id
        calls = {
            "health_live": caller(app, secret, f"{PREFIX}/health/live"),
            "playbooks": caller(app, secret, f"{PREFIX}/playbooks"),
            "playbooks_get": caller(app, secret, f"{PREFIX}/playbooks/api-hello"),
            "executions": caller(app, secret, f"{PREFIX}/executions", "limit=20"),
            "executions_get": caller(app, secret, f"{PREFIX}/executions/{run_id}"),
        }
        calls["executions_miss"] = missing(ctx.responses, calls["executions"])
        calls["executions_get_miss"] = missing(ctx.responses, calls["executions_get"])
        if args.profile:
            call = calls[args.profile]
            asyncio.run(measure({args.profile: call}, 20))
            profile = cProfile.Profile()
            profile.enable()
            asyncio.run(measure({args.profile: call}, args.requests))
            profile.disable()
            pstats.Stats(profile).sort_stats(
                os.environ.get("PROFILE_SORT", "cumulative")
            ).print_stats(40)
            return
        costs = asyncio.run(measure(calls, args.requests))
        hits, misses = ctx.responses.hits, ctx.responses.misses
    base = costs["health_live"][1]
    print(f"\none request at a time, {args.requests} per endpoint, viewer token")
    print(f"{'endpoint':<38} {'wall ms':>8} {'CPU ms':>8} {'CPU / baseline':>15}")
    labels = {
        "health_live": "GET /health/live (baseline)",
        "playbooks": "GET /playbooks",
        "playbooks_get": "GET /playbooks/{id}",
        "executions": "GET /executions?limit=20 (hit)",
        "executions_get": "GET /executions/{id} (hit)",
        "executions_miss": "GET /executions?limit=20 (miss)",
        "executions_get_miss": "GET /executions/{id} (miss)",
    }
    for name, (wall, cpu) in costs.items():
        print(f"{labels[name]:<38} {wall:>8.2f} {cpu:>8.2f} {cpu / base:>14.1f}x")
    print(f"response cache: {hits} hits, {misses} misses")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
