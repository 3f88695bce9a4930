"""A fresh home used by many processes at once, a home broken by an old start-up race, and runs
started the way scripts start them: all through the `partnerships` entry point, in real
subprocesses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dagster._core.storage.sqlite import LAST_KNOWN_STAMPED_SQLITE_ALEMBIC_REVISION

from partnerships_orchestrator.instance import MARKER_FILE, STORAGE_FILES
from partnerships_orchestrator_tests.e2e.test_stack import processes_with

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e

GREET = """
id: greet
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners order by id limit 2"
  - id: hello
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Hello {{ item.name }}"
    body: "Hello {{ item.name }}"
"""


def make_env(base: Path) -> dict[str, str]:
    playbooks = base / "playbooks"
    playbooks.mkdir(parents=True, exist_ok=True)
    (playbooks / "greet.yaml").write_text(GREET)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        PARTNERSHIPS_HOME=str(base / "home"),
        PARTNERSHIPS_PLAYBOOKS=str(playbooks),
        PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
    )
    return env


def cli(env: dict[str, str], *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "partnerships"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def alembic_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("select version_num from alembic_version")]


def outbox_rows(home: Path) -> int:
    with sqlite3.connect(home / "state.db") as conn:
        return int(conn.execute("select count(*) from outbox").fetchone()[0])


def test_ten_concurrent_runs_on_a_fresh_home_all_succeed(tmp_path):
    """Ten first runs at once: one of them sets the home up under the lock, the others wait for
    it; every run succeeds, each storage file has one version row, the `email` pool exists once
    (all ten runs claim it at once on first use)."""
    env = make_env(tmp_path)
    seeded = cli(env, "seed")  # the warehouse only: Dagster's storage does not exist yet
    assert seeded.returncode == 0, seeded.stderr
    assert not (tmp_path / "home" / "dagster").exists()
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: cli(env, "run", "greet", "--json"), range(10)))
    failures = [r.stdout[-1500:] + r.stderr[-1500:] for r in results if r.returncode != 0]
    assert failures == []
    summaries = [json.loads(r.stdout) for r in results]
    assert all(s["success"] and s["messages_sent"] == 2 for s in summaries)
    dagster_home = tmp_path / "home" / "dagster"
    for storage in STORAGE_FILES:
        assert len(alembic_rows(storage.path(dagster_home))) == 1, storage.relative
    index = STORAGE_FILES[1].path(dagster_home)
    with sqlite3.connect(index) as conn:
        pools = conn.execute(
            "select concurrency_key, count(*) from concurrency_limits group by concurrency_key"
        ).fetchall()
    assert ("email", 1) in pools
    listed = json.loads(cli(env, "runs", "--json").stdout)
    assert len(listed) == 10 and {r["status"] for r in listed} == {"SUCCESS"}
    assert {r["run_id"] for r in listed} == {s["run_id"] for s in summaries}


@pytest.fixture
def used_home(tmp_path: Path) -> dict[str, str]:
    """A home with one run done, its set-up record removed as if an older version made it."""
    env = make_env(tmp_path)
    assert cli(env, "seed").returncode == 0
    first = cli(env, "run", "greet", "--json")
    assert first.returncode == 0, first.stderr
    (tmp_path / "home" / "dagster" / MARKER_FILE).unlink()
    return env


def test_a_home_left_with_two_version_rows_by_the_old_race_is_repaired(used_home):
    """What the race left: the first opener stamped the head, a second one (seeing the tables
    but no version yet) Dagster's last known SQLite revision: "more than one head present"."""
    schedules = Path(used_home["PARTNERSHIPS_HOME"]) / "dagster" / "schedules" / "schedules.db"
    [head] = alembic_rows(schedules)
    with sqlite3.connect(schedules) as conn:
        conn.execute(
            "insert into alembic_version (version_num) values (?)",
            (LAST_KNOWN_STAMPED_SQLITE_ALEMBIC_REVISION,),
        )
    assert len(alembic_rows(schedules)) == 2
    again = cli(used_home, "run", "greet", "--json")
    assert again.returncode == 0, again.stderr
    assert alembic_rows(schedules) == [head]
    assert len(json.loads(cli(used_home, "runs", "--json").stdout)) == 2  # history kept


def test_a_home_it_cannot_repair_is_refused_with_the_fix(used_home):
    home = Path(used_home["PARTNERSHIPS_HOME"])
    runs_db = home / "dagster" / "history" / "runs.db"
    with sqlite3.connect(runs_db) as conn:
        conn.execute("insert into alembic_version (version_num) values ('0123456789ab')")
    warehouse, outbox = (home / "warehouse.db").read_bytes(), outbox_rows(home)
    refused = cli(used_home, "run", "greet")
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert str(runs_db) in message and "2 different revisions" in message
    assert f"rm -r {home / 'dagster' / 'history'}" in message
    assert "warehouse.db and state.db" in message
    assert (home / "warehouse.db").read_bytes() == warehouse
    assert outbox_rows(home) == outbox == 2
    # the command it names does fix it, and the ledger is still there
    subprocess.run(["rm", "-r", str(home / "dagster" / "history")], check=True)
    fixed = cli(used_home, "run", "greet", "--json")
    assert fixed.returncode == 0, fixed.stderr
    outbox = json.loads(cli(used_home, "outbox", "--json").stdout)
    assert len(outbox) == 4  # the two runs' messages: the earlier two were kept


SCRIPT = """
import json, signal, sys
import dagster as dg
from partnerships_orchestrator.project import Project

project = Project.open()

@dg.op
def hello():
    print("hello")

@dg.job
def warm_up():
    hello()

# A script that runs Dagster in process on its main thread first: with SIGINT ignored, Dagster's
# interrupt handling leaves SIGTERM ignored afterwards, and every child inherits that.
warm_up.execute_in_process(instance=project.instance)
sigterm_ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
summary = project.execute("greet", {})
print(json.dumps({"success": summary.success, "errors": summary.errors,
                  "sigterm_ignored": sigterm_ignored}))
"""


def test_runs_in_a_process_with_sigint_ignored_leave_no_process_behind(tmp_path):
    """As `cmd &` in a script, nohup and cron start it: SIGINT ignored, no terminal, its own
    session. Step output capture used `tail -F` children stopped with SIGTERM; in such a process
    they ignored it, each step waited 30 s per stream and left them orphaned. A run there must
    finish like any other and leave no process behind."""
    env = make_env(tmp_path)
    env["PARTNERSHIPS_TEST_MARK"] = str(tmp_path)
    assert cli(env, "seed").returncode == 0

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=ignore_sigint,
        start_new_session=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["sigterm_ignored"]  # the condition the old log capture could not survive
    assert outcome["success"], outcome["errors"]
    assert processes_with(f"PARTNERSHIPS_TEST_MARK={tmp_path}") == []


def test_a_killed_cli_run_is_found_dead_and_resumed(tmp_path):
    """`partnerships run` SIGKILLed mid-step leaves its run STARTED; the next command sees its
    process is gone and marks it failed, and `partnerships resume` finishes it as a new run of
    the same root run."""
    from partnerships_orchestrator_tests.e2e.test_stack import SLOW, Gate

    gate = Gate()
    try:
        env = make_env(tmp_path)
        env["PARTNERSHIPS_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
        (tmp_path / "playbooks" / "slow.yaml").write_text(SLOW.format(url=gate.url))
        running = subprocess.Popen(
            [str(BIN / "partnerships"), "run", "e2e-slow", "--json"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert gate.arrived.wait(180), "the run never reached its webhook step"
        before = json.loads(cli(env, "runs", "--json").stdout)
        assert [r["status"] for r in before] == ["STARTED"]  # its process is alive
        running.kill()
        running.wait()
        [dead] = json.loads(cli(env, "runs", "--json").stdout)
        assert dead["status"] == "FAILURE" and dead["run_id"] == before[0]["run_id"]
        gate.opened.set()
        resumed = cli(env, "resume", dead["run_id"], "--json")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["success"] and summary["root_run_id"] == dead["run_id"]
        again = cli(env, "resume", dead["run_id"])
        assert again.returncode == 2
        assert f"was resumed by run {summary['run_id']}" in " ".join(again.stderr.split())
    finally:
        gate.close()
