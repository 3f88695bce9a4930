"""The `partnerships` command, through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from partnerships_orchestrator.cli import main

GOOD = """
id: cli-demo
name: CLI demo
inputs:
  tier: {type: string, default: gold}
  limit: {type: integer, default: 2}
steps:
  - id: partners
    type: query
    sql: "select id, name, contact_email from partners where tier = :tier order by id limit :limit"
    params: {tier: "{{ inputs.tier }}", limit: "{{ inputs.limit }}"}
  - id: count
    type: evaluate
    depends_on: [partners]
    expression: "steps.partners.count"
  - id: hello
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.rows
    channel: email
    to: "{{ item.contact_email }}"
    subject: "Hi {{ item.name }}"
    body: "Hello"
  - id: broken_hook
    type: webhook
    depends_on: [count]
    url: "http://10.0.0.1/never"
    on_error: {action: skip}
"""

BAD = """id: cli-bad
steps:
  - id: a
    type: evaluate
    expression: "1"
  - id: b
    type: evaluate
    dependson: [a]
    expression: "2"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "playbooks" / "cli-demo.yaml").write_text(GOOD)
    monkeypatch.setenv("PARTNERSHIPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PARTNERSHIPS_PLAYBOOKS", str(tmp_path / "playbooks"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("PARTNERSHIPS_TEMPLATES", raising=False)
    result = CliRunner().invoke(main, ["seed"])
    assert result.exit_code == 0, result.output
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_validate_passes_good_files_and_locates_problems(project):
    code, out = invoke("validate")
    assert code == 0
    bad = project / "playbooks" / "cli-bad.yaml"
    bad.write_text(BAD)
    code, out = invoke("validate")
    assert code == 1
    line = next(text for text in out.splitlines() if "dependson" in text)
    assert line.startswith(f"{bad}:8:5: steps[1].dependson: unknown key `dependson`")
    assert "depends_on" in line  # the did-you-mean hint
    code, out = invoke("validate", "--json")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert problems[0]["line"] == 8 and problems[0]["file"].endswith("cli-bad.yaml")


def test_list_and_show(project):
    code, out = invoke("list", "--json")
    assert code == 0
    [doc] = json.loads(out)["documents"]
    assert doc["id"] == "cli-demo" and doc["steps"] == 4 and doc["triggers"] == ["manual"]
    code, out = invoke("show", "cli-demo")
    assert code == 0
    assert "level 2 (in parallel):" in out
    assert "hello  (communicate; after partners; fan-out: for each steps.partners.rows" in out
    assert "broken_hook  (webhook; after count; on error: skip)" in out
    code, out = invoke("show", "cli-demo", "--json")
    assert json.loads(out)["levels"] == [["partners"], ["count", "hello"], ["broken_hook"]]
    code, out = invoke("show", "nope")
    assert code == 2 and "cli-demo" in out


def test_run_prints_a_summary_and_the_outbox_lists_the_messages(project):
    code, out = invoke("run", "cli-demo", "--input", "tier=silver", "--input", "limit=3", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["success"] and summary["messages_sent"] == 3
    assert "broken_hook" not in summary["outputs"]  # skipped steps have no output
    assert summary["steps"]["broken_hook"] == "skipped" and summary["dead_letters"] == 1
    assert summary["counts"]["failed"] == 0
    code, out = invoke("outbox", "--json", "--run", summary["run_id"])
    messages = json.loads(out)
    assert [m["subject"][:3] for m in messages] == ["Hi "] * 3
    assert {m["step"].split("[")[0] for m in messages} == {"hello"}
    code, out = invoke("dead-letters", "--json")
    [letter] = json.loads(out)
    assert letter["step"] == "broken_hook" and "10.0.0.1" in letter["error"]


def test_run_refuses_bad_inputs_before_starting(project):
    code, out = invoke("run", "cli-demo", "--input", "limit=many")
    assert code == 2 and "input `limit` needs an integer, got 'many'" in out
    code, out = invoke("run", "cli-demo", "--input", "colour=red")
    assert code == 2 and "unknown input `colour`" in out


def test_schema_is_json(project):
    code, out = invoke("schema")
    schema = json.loads(out)
    assert code == 0 and schema["$id"] == "urn:partnerships-orchestrator:schema:document"
    assert set(schema["properties"]["kind"]["enum"]) == {
        "playbook",
        "sync",
        "dataset",
        "report",
        "metrics",
        "connections",
    }


def test_entry_point_is_installed(project):
    exe = Path(sys.executable).parent / "partnerships"
    done = subprocess.run([str(exe), "run", "cli-demo", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "steps: 4 succeeded, 1 skipped, 0 failed; messages sent: 2" in done.stdout.replace(
        "\n", " "
    )


def test_an_invalid_connections_document_stops_deliveries_instead_of_using_the_outbox(project):
    (project / "playbooks" / "connections.yaml").write_text(
        "kind: connections\nid: default\nconnections:\n  email: {provider: sendgird}\n"
    )
    code, out = invoke("run", "cli-demo", "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["messages_sent"] == 0
    assert any(
        "email connection is unavailable" in e and "sendgird" in e for e in summary["errors"]
    )
    code, out = invoke("outbox", "--json")
    assert json.loads(out) == []
    code, out = invoke("connections", "check", "--json")
    assert code == 1
    assert any(
        r["connection"] == "connections" and "sendgird" in r["detail"] for r in json.loads(out)
    )


FLAKY = """
id: cli-flaky
steps:
  - id: tell
    type: communicate
    channel: email
    to: [a@example.org, b@example.org, c@flaky.invalid]
    subject: "Summit"
    body: "See you there"
    on_error: {action: skip}
"""


def test_a_dead_letter_is_redriven_without_sending_twice(project):
    (project / "playbooks" / "cli-flaky.yaml").write_text(FLAKY)
    code, out = invoke("run", "cli-flaky", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["messages_sent"] == 2 and summary["dead_letters"] == 1
    code, out = invoke("dead-letters", "--json", "--playbook", "cli-flaky")
    [letter] = json.loads(out)
    assert (letter["step"], letter["action"], letter["status"]) == ("tell", "skip", "open")

    code, out = invoke("dead-letters", "redrive", str(letter["id"]), "--json")
    assert code == 0, out
    receipts = json.loads(out)["output"]
    assert [(r["to"], r["status"]) for r in receipts] == [
        ("a@example.org", "already_sent"),
        ("b@example.org", "already_sent"),
        ("c@flaky.invalid", "sent"),
    ]
    code, out = invoke("outbox", "--json")
    assert sorted(m["recipient"] for m in json.loads(out)) == [
        "a@example.org",
        "b@example.org",
        "c@flaky.invalid",
    ]
    code, out = invoke("dead-letters", "--json", "--playbook", "cli-flaky")
    assert json.loads(out)[0]["status"] == "redriven"
    code, out = invoke("dead-letters", "redrive", str(letter["id"]))
    assert code == 2 and "redriven already" in out


FAILS_UNTIL_FIXED = """
id: cli-resume
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
    subject: "Hi {{ item.name }}"
    body: "Hello"
  - id: check
    type: query
    depends_on: [hello]
    collect: true
    sql: "select count(*) as n from fixme"
    on_error: {action: retry, max_attempts: 1}
"""


def test_a_failed_run_says_why_and_is_resumed_without_sending_twice(project):
    import re
    import sqlite3

    (project / "playbooks" / "cli-resume.yaml").write_text(FAILS_UNTIL_FIXED)
    code, out = invoke("run", "cli-resume")
    assert code == 1
    flat = " ".join(out.split())
    assert "error: check:" in flat and "no such table: fixme" in flat
    [run_id] = re.findall(r"resume: `partnerships resume ([0-9a-f-]{36})`", flat)
    code, out = invoke("runs", "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(out)] == [(run_id, "FAILURE")]
    # the playbook changed in a way the failed run's inputs no longer fit: refused, with why
    (project / "playbooks" / "cli-resume.yaml").write_text(
        FAILS_UNTIL_FIXED.replace("steps:", "inputs:\n  must: {type: string}\nsteps:", 1)
    )
    code, out = invoke("resume", run_id)
    assert code == 2 and f"run {run_id} cannot be resumed" in " ".join(out.split())
    (project / "playbooks" / "cli-resume.yaml").write_text(FAILS_UNTIL_FIXED)
    with sqlite3.connect(project / "home" / "warehouse.db") as conn:
        conn.execute("create table fixme (x integer)")
    code, out = invoke("resume", run_id, "--json")
    assert code == 0, out
    summary = json.loads(out[out.index("{") :])
    assert summary["success"] and summary["parent_run_id"] == run_id
    assert summary["steps"] == {"check": "succeeded"}  # only what failed ran again
    code, out = invoke("outbox", "--json")
    assert len(json.loads(out[out.index("[") :])) == 2  # nothing sent twice


def test_up_postgres_puts_storage_state_and_warehouse_in_that_database(monkeypatch):
    from partnerships_orchestrator.cli import use_postgres

    for name in ("DAGSTER_POSTGRES_URL", "PARTNERSHIPS_DATABASE_URL", "PARTNER_WAREHOUSE_URL"):
        monkeypatch.setenv(name, "unset")  # recorded, so the test's changes are undone after it
        monkeypatch.delenv(name)
    use_postgres("postgresql://po@db.test/po")

    assert os.environ["DAGSTER_POSTGRES_URL"] == "postgresql://po@db.test/po"
    assert os.environ["PARTNERSHIPS_DATABASE_URL"] == "postgresql://po@db.test/po"
    assert os.environ["PARTNER_WAREHOUSE_URL"] == "postgresql://po@db.test/po"


def test_up_postgres_keeps_a_warehouse_set_apart(monkeypatch):
    from partnerships_orchestrator.cli import use_postgres

    monkeypatch.setenv("PARTNER_WAREHOUSE_URL", "postgresql://po@warehouse.test/dw")
    for name in ("DAGSTER_POSTGRES_URL", "PARTNERSHIPS_DATABASE_URL"):
        monkeypatch.setenv(name, "unset")  # recorded, so the test's changes are undone after it
        monkeypatch.delenv(name)
    use_postgres("postgresql://po@db.test/po")

    assert os.environ["PARTNER_WAREHOUSE_URL"] == "postgresql://po@warehouse.test/dw"
    assert os.environ["PARTNERSHIPS_DATABASE_URL"] == "postgresql://po@db.test/po"


def test_up_postgres_tests_leave_the_environment_as_they_found_it():
    assert os.environ.get("DAGSTER_POSTGRES_URL") != "postgresql://po@db.test/po"
    assert os.environ.get("PARTNERSHIPS_DATABASE_URL") != "postgresql://po@db.test/po"
