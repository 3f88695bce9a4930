"""Repeated reads of `/executions` are served from rendered answers, and never one older than
the last commit: runs launched, progressing and finishing in other processes, deliveries and
dead letters written by another process are read at once; a foreign team never gets another
team's answer; the cache stays within its bounds."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from partnerships_orchestrator.api.app import create_app
from partnerships_orchestrator.api.auth import Authenticator
from partnerships_orchestrator.api.context import ApiContext
from partnerships_orchestrator.api.data_versions import ABSENT, DataVersions
from partnerships_orchestrator.api.rate_limit import RateLimiter
from partnerships_orchestrator.api.response_cache import CACHE_ENV, ResponseCache
from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator.store.tokens import TokenStore
from partnerships_orchestrator_tests.api.conftest import PREFIX, ROOT, Stack, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _commit_elsewhere(path: Path, sql: str) -> None:
    """Commit ``sql`` to the SQLite file from another process."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"
    )
    subprocess.run([sys.executable, "-c", code, str(path), sql], check=True)


def test_data_version_changes_with_every_commit_of_another_connection_only(tmp_path: Path):
    path = tmp_path / "probe.db"
    versions = DataVersions(held=2)
    assert versions.version(str(path)) == ABSENT and not path.exists()  # never creates it
    _commit_elsewhere(path, "create table t (x integer)")
    first = versions.version(str(path))
    assert first != ABSENT and versions.version(str(path)) == first  # nothing new: unchanged
    _commit_elsewhere(path, "insert into t values (1)")
    second = versions.version(str(path))
    assert second != first
    with sqlite3.connect(path) as own:  # another connection of this process counts too
        own.execute("insert into t values (2)")
    assert versions.version(str(path)) not in (first, second)
    # a replaced file is asked through a new connection, whose values match no earlier one
    latest = versions.version(str(path))
    path.unlink()
    _commit_elsewhere(path, "create table t (x integer)")
    assert versions.version(str(path))[0] > latest[0]
    # connections beyond `held` are closed; one asked again starts a new generation
    others = [tmp_path / f"other-{n}.db" for n in range(2)]
    for other in others:
        _commit_elsewhere(other, "create table t (x integer)")
        versions.version(str(other))
    assert versions.version(str(path))[0] > latest[0] + 1
    versions.close()


def test_the_cache_keeps_to_its_bounds_and_serves_only_unchanged_answers(tmp_path: Path):
    path = tmp_path / "source.db"
    _commit_elsewhere(path, "create table t (x integer)")
    cache = ResponseCache(max_bytes=1000, max_entries=3)
    rendered: list[str] = []

    def render(key: str, size: int = 100) -> bytes:
        rendered.append(key)
        return key.encode().ljust(size, b".")

    for key in ("a", "b", "c", "d"):
        cache.answer(key, [str(path)], lambda k=key: render(k))
    assert cache.size == (3, 300)  # `a` let go: the least recently served
    cache.answer("b", [str(path)], lambda: render("b"))
    cache.answer("a", [str(path)], lambda: render("a"))
    assert rendered == ["a", "b", "c", "d", "a"] and cache.hits == 1
    by_bytes = ResponseCache(max_bytes=1000, max_entries=100)
    for key in "efghi":  # 240 bytes each: four fit in 1000
        by_bytes.answer(key, [str(path)], lambda k=key: render(k, 240))
    assert by_bytes.size == (4, 960)
    by_bytes.answer("huge", [str(path)], lambda: render("huge", 300))  # over a quarter: not kept
    assert by_bytes.size == (4, 960)
    held = cache.answer("a", [str(path)], lambda: b"not read")
    assert held.body.startswith(b"a.")
    _commit_elsewhere(path, "insert into t values (1)")
    fresh = cache.answer("a", [str(path)], lambda: b"fresh")
    assert fresh.body == b"fresh" and fresh.etag != held.etag
    assert cache.answer("a", [str(path)], lambda: b"not read") == fresh
    assert cache.answer("a", None, lambda: b"uncacheable").body == b"uncacheable"
    off = ResponseCache(max_bytes=0)
    assert [off.answer("k", [str(path)], lambda n=n: bytes([n])).body for n in (1, 2)] == [
        b"\1",
        b"\2",
    ]


def test_requests_missing_together_wait_for_one_read(tmp_path: Path):
    path = tmp_path / "source.db"
    _commit_elsewhere(path, "create table t (x integer)")
    cache = ResponseCache()
    release = threading.Event()
    reads: list[int] = []

    def render() -> bytes:
        reads.append(1)
        release.wait(timeout=60)
        return b"answer"

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(cache.answer, "k", [str(path)], render)
        wait_for(lambda: reads, timeout=30, every=0.01)  # the first read is under way
        others = [pool.submit(cache.answer, "k", [str(path)], render) for _ in range(7)]
        wait_for(lambda: all(f.running() for f in others), timeout=30, every=0.01)
        release.set()
        answers = [f.result().body for f in (first, *others)]
    assert answers == [b"answer"] * 8 and len(reads) == 1
    # a read that fails leaves nothing behind: the next request reads again
    with pytest.raises(ValueError):
        cache.answer("bad", [str(path)], lambda: (_ for _ in ()).throw(ValueError("no")))
    assert cache.answer("bad", [str(path)], lambda: b"ok").body == b"ok"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[tuple[TestClient, ApiContext]]:
    """The API app of this process on the stack's home: runs, deliveries and dead letters are
    written by the stack's processes (webserver, daemon, runs) and by subprocesses."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL", CACHE_ENV):
            env.delenv(name, raising=False)
        settings = load_settings(stack.playbooks, stack.home, ROOT / "templates")
        app = create_app(settings, webserver_url=stack.ui)
        with TestClient(app, base_url="http://testserver" + PREFIX) as client:
            yield client, app.state.ctx


def _get(client: TestClient, secret: str, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    return response.json()


def _served_again(
    ctx: ApiContext, client: TestClient, secret: str, path: str, **params: Any
) -> Any:
    """The answer, once it is served from the cache (a commit may land between two reads)."""

    def twice() -> Any:
        first = _get(client, secret, path, **params)
        hits = ctx.responses.hits
        second = _get(client, secret, path, **params)
        return second if ctx.responses.hits == hits + 1 and second == first else None

    return wait_for(twice, timeout=60, every=0)


def _launch(stack: Stack, playbook: str) -> str:
    started = stack.client(stack.token("operator")).post(f"/playbooks/{playbook}/execute", json={})
    assert started.status_code == 202, started.text
    return str(started.json()["execution_id"])


@pytest.fixture(scope="module")
def finished_run(stack: Stack, api: tuple[TestClient, ApiContext]) -> str:
    """A run of api-hello launched through the stack, its list and detail read (and cached) here
    before it exists, while it runs, and until it finished."""
    client, ctx = api
    viewer = stack.token("viewer")
    listed = _served_again(ctx, client, viewer, "/executions", playbook="api-hello", limit=20)
    run_id = _launch(stack, "api-hello")
    fresh = _get(client, viewer, "/executions", playbook="api-hello", limit=20)
    assert run_id not in [e["id"] for e in listed["items"]]
    assert [e["id"] for e in fresh["items"]][:1] == [run_id]  # committed by the webserver
    seen: set[str] = set()

    def finished() -> Any:
        body = _get(client, viewer, f"/executions/{run_id}")
        seen.add(body["status"])
        return body if body["status"] in FINISHED else None

    done = wait_for(finished)
    assert done["status"] == "SUCCESS" and len(seen) > 1  # read while it ran, then finished
    assert {s["key"]: s["status"] for s in done["steps"]} == dict.fromkeys(
        ("partners", "count", "greet"), "SUCCESS"
    )
    assert len(done["messages_sent"]) == 2
    again = _served_again(ctx, client, viewer, f"/executions/{run_id}")
    assert again["status"] == "SUCCESS"
    listed = _get(client, viewer, "/executions", playbook="api-hello", limit=20)
    assert listed["items"][0]["status"] == "SUCCESS"
    return run_id


def test_a_run_is_read_fresh_from_launch_to_finish(finished_run: str):
    assert finished_run  # the fixture's reads are the test: it fails if any answer was stale


def _write_state(stack: Stack, code: str) -> None:
    """Run ``code`` with ``state`` (the stack's StateStore) in another process."""
    prelude = (
        "import sys\n"
        "from partnerships_orchestrator.store.state import DeliveryKey, StateStore\n"
        "state = StateStore(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", prelude + code, stack.state_url], check=True, cwd=ROOT)


def test_deliveries_and_dead_letters_written_by_another_process_are_read_at_once(
    stack: Stack, api: tuple[TestClient, ApiContext], finished_run: str
):
    client, ctx = api
    viewer = stack.token("viewer")
    path = f"/executions/{finished_run}"
    before = _served_again(ctx, client, viewer, path)
    assert before["dead_letters"] == [] and len(before["messages_sent"]) == 2
    _write_state(
        stack,
        f"state.add_dead_letter(playbook='api-hello', step='greet', run_id={finished_run!r}, "
        "action='dead_letter', error='mailbox full', inputs={})",
    )
    after = _get(client, viewer, path)
    assert [d["error"] for d in after["dead_letters"]] == ["mailbox full"]
    assert _served_again(ctx, client, viewer, path) == after
    _write_state(
        stack,
        f"state.record_sent(DeliveryKey({finished_run!r}, 'greet', 'late', 'late@example.com'), "
        f"{{'id': 'late-1'}}, run_id={finished_run!r}, playbook='api-hello', channel='email', "
        "provider='sendgrid')",
    )
    latest = _get(client, viewer, path)
    assert len(latest["messages_sent"]) == 3
    assert latest["messages_sent"][-1]["recipient"] == "late@example.com"


def test_an_event_written_to_the_runs_event_log_by_another_process_is_read_at_once(
    stack: Stack, api: tuple[TestClient, ApiContext], finished_run: str
):
    """Only the run's own event log file changes (no run status, no state row)."""
    client, ctx = api
    viewer = stack.token("viewer")
    path = f"/executions/{finished_run}"
    before = _served_again(ctx, client, viewer, path)
    assert "a note written late" not in [line["message"] for line in before["logs"]]
    code = (
        "import sys, dagster as dg\n"
        "instance = dg.DagsterInstance.get()\n"
        "instance.report_engine_event('a note written late', instance.get_run_by_id(sys.argv[1]))\n"
    )
    env = {**stack.env, "DAGSTER_HOME": str(stack.home / "dagster")}
    subprocess.run([sys.executable, "-c", code, finished_run], check=True, cwd=ROOT, env=env)
    after = _get(client, viewer, path)
    assert after["logs"][-1]["message"] == "a note written late"
    assert after["status"] == before["status"] == "SUCCESS"


def test_a_foreign_team_never_gets_another_teams_answer(
    stack: Stack, api: tuple[TestClient, ApiContext], finished_run: str
):
    client, ctx = api
    path = f"/executions/{finished_run}"
    ours = _served_again(ctx, client, stack.token("viewer"), path)
    assert ours["id"] == finished_run
    foreign = stack.token("viewer", team="team-b")
    for _ in range(2):
        refused = client.get(path, headers={"Authorization": f"Bearer {foreign}"})
        assert refused.status_code == 404, refused.text
        listed = _get(client, foreign, "/executions", limit=20)
        assert finished_run not in [e["id"] for e in listed["items"]]
    # another token of the same team is served the same answer
    assert _served_again(ctx, client, stack.token("operator"), path) == ours
    # unauthenticated callers are refused before any answer is looked up
    assert client.get(path).status_code == 401


def test_an_unchanged_answer_is_not_sent_again_to_a_caller_holding_its_etag(
    stack: Stack, api: tuple[TestClient, ApiContext], finished_run: str
):
    client, _ = api
    path = f"/executions/{finished_run}"
    viewer = {"Authorization": f"Bearer {stack.token('viewer')}"}
    first = client.get(path, headers=viewer)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    held = client.get(path, headers={**viewer, "If-None-Match": f'"other", W/{etag}'})
    assert held.status_code == 304 and held.content == b"" and held.headers["etag"] == etag
    _write_state(
        stack,
        f"state.add_dead_letter(playbook='api-hello', step='count', run_id={finished_run!r}, "
        "action='dead_letter', error='changed', inputs={})",
    )
    changed = client.get(path, headers={**viewer, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert "changed" in [d["error"] for d in changed.json()["dead_letters"]]
    # another team's token holding the tag learns nothing: 404, as without it
    foreign = {"Authorization": f"Bearer {stack.token('viewer', team='team-b')}"}
    refused = client.get(path, headers={**foreign, "If-None-Match": changed.headers["etag"]})
    assert refused.status_code == 404


def test_a_token_verified_from_memory_is_read_again_after_any_commit(stack: Stack):
    """Verification is kept only while the state file has had no commit: a revocation by
    another process (the CLI) holds from the next request."""
    tokens = TokenStore(stack.state_url)
    auth = Authenticator(tokens, 600, RateLimiter(stack.home / "api-rate-limits"))
    _, secret = tokens.create(role="viewer", teams=["team-a"])  # its own: it is revoked below
    first = auth.verify(secret)
    assert first is not None and auth.verify(secret) == first
    assert auth.verified_hits == 1  # the second answer came from memory
    assert auth.verify(secret + "x") is None  # a wrong secret is read, never held
    assert stack.cli("token", "revoke", first.id).returncode == 0
    assert auth.verify(secret) is None
    assert auth.verified_hits == 1


def test_playbook_answers_follow_the_catalog_files_and_store(
    stack: Stack, api: tuple[TestClient, ApiContext]
):
    client, ctx = api
    viewer = stack.token("viewer")
    listed = _served_again(ctx, client, viewer, "/playbooks")
    detail = _served_again(ctx, client, viewer, "/playbooks/api-hello")
    assert "api-late" not in [p["id"] for p in listed["items"]] and detail["id"] == "api-hello"
    late = stack.playbooks / "api-late.yaml"
    late.write_text(
        "id: api-late\nowners: [team-a]\nsteps:\n  - {id: one, type: evaluate, expression: '1'}\n"
    )
    try:
        # a file in `playbooks/` is seen within the catalog's look interval
        wait_for(
            lambda: "api-late" in [p["id"] for p in _get(client, viewer, "/playbooks")["items"]],
            timeout=30,
        )
        assert _get(client, viewer, "/playbooks/api-late")["origin"] == "file"
    finally:
        late.unlink()
    editor = {"Authorization": f"Bearer {stack.token('editor')}"}
    document = {
        "id": "api-cached",
        "owners": ["team-a"],
        "steps": [{"id": "one", "type": "evaluate", "expression": "1"}],
    }
    assert client.post("/playbooks", json=document, headers=editor).status_code == 201
    try:
        # a change made through this API is seen by its very next read
        assert _get(client, viewer, "/playbooks/api-cached")["revision"] == 1
        document["steps"][0]["expression"] = "2"
        assert client.put("/playbooks/api-cached", json=document, headers=editor).status_code == 200
        again = _get(client, viewer, "/playbooks/api-cached")
        assert again["revision"] == 2 and again["document"]["steps"][0]["expression"] == "2"
    finally:
        assert client.delete("/playbooks/api-cached", headers=editor).status_code == 200
    assert (
        client.get(
            "/playbooks/api-cached", headers={"Authorization": f"Bearer {viewer}"}
        ).status_code
        == 404
    )


def test_the_catalog_never_keeps_an_event_loop_waiting(api: tuple[TestClient, ApiContext]):
    """`current()` answers only what needs no look at the sources, and never waits for a
    reload under way (routes then look in a worker thread)."""
    _, ctx = api
    catalog = ctx.catalog
    catalog.snapshot()
    assert catalog.current() == (catalog.version, catalog.entries())
    with catalog._lock:  # noqa: SLF001 # a reload under way in another thread
        held = ThreadPoolExecutor(1).submit(catalog.current).result(timeout=5)
    assert held is None
    catalog.invalidate()  # a look is due
    assert catalog.current() is None
    catalog.snapshot()
    assert catalog.current() is not None


def test_a_commit_to_runs_db_that_leaves_the_runs_row_keeps_its_detail_cached(
    stack: Stack, api: tuple[TestClient, ApiContext], finished_run: str
):
    """Daemon heartbeats and other runs commit to `runs.db` all the time: the detail of a run
    whose row they left as it was is served again (renewed); a change to that row is read."""
    client, ctx = api
    viewer = stack.token("viewer")
    path = f"/executions/{finished_run}"
    before = _served_again(ctx, client, viewer, path)
    env = {**stack.env, "DAGSTER_HOME": str(stack.home / "dagster")}

    def in_dagster(code: str) -> None:
        prelude = "import sys, dagster as dg\ninstance = dg.DagsterInstance.get()\n"
        subprocess.run(
            [sys.executable, "-c", prelude + code, finished_run], check=True, cwd=ROOT, env=env
        )

    def renewed_after(code: str) -> bool:
        renewed, misses = ctx.responses.renewed, ctx.responses.misses
        in_dagster(code)
        assert _get(client, viewer, path) == before
        return ctx.responses.renewed == renewed + 1 and ctx.responses.misses == misses

    # another table of runs.db (a cursor, as the daemons keep theirs): the answer is kept
    assert wait_for(
        lambda: renewed_after("instance.run_storage.set_cursor_values({'probe': sys.argv[1]})"),
        timeout=60,
        every=0,
    )
    # this run's own row: read again
    misses = ctx.responses.misses
    in_dagster("instance.add_run_tags(sys.argv[1], {'note': 'tagged late'})")
    assert _get(client, viewer, path)["id"] == finished_run
    assert ctx.responses.misses == misses + 1
