"""Bulk sends through a playbook: Dagster's re-execution from failure finishes them exactly once,
and a timed-out step sends nothing after it was reported failed (real runs, loopback vendors)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from pydantic import TypeAdapter

from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.connections import build_resources
from partnerships_orchestrator.connectors.sendgrid import SendGridEmail
from partnerships_orchestrator.dispatch import in_flight
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import Connections, Playbook
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.emulators import sendgrid as sg
from partnerships_orchestrator_tests.emulators import twilio as tw
from partnerships_orchestrator_tests.emulators.core import FaultAction

BULK = """
id: bulk
inputs: {{n: {{type: integer, default: {n}}}}}
steps:
  - {{id: people, type: evaluate, expression: "range(inputs.n) | list"}}
  - id: greet
    type: communicate
    depends_on: [people]
    for_each: steps.people.output
    when: "item % 10 != 7"
    channel: email
    to: "p{{{{ item }}}}@example.com"
    subject: "Hello p{{{{ item }}}}"
    body: "Dear partner {{{{ item }}}}"
  - id: tally
    type: evaluate
    depends_on: [greet]
    collect: true
    expression: "steps.greet.output | length"
"""

CONNECTIONS = """
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {sendgrid}
    rate_limit: {{requests: {rate}, per_seconds: 1}}
    max_attempts: 2
    backoff_seconds: 0.01
  sms:
    provider: twilio
    account_sid: {sid}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    from: "{sms_from}"
    base_url: {twilio}
"""


@pytest.fixture
def project(
    tmp_path: Path,
    sendgrid: sg.SendGridEmulator,
    twilio: tw.TwilioEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "templates").mkdir()
    monkeypatch.setenv("SENDGRID_API_KEY", sg.API_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", tw.AUTH_TOKEN)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    return Settings(
        playbooks_dir=tmp_path / "playbooks",
        templates_dir=tmp_path / "templates",
        home=tmp_path / "home",
    )


def _write(
    settings: Settings,
    sendgrid: sg.SendGridEmulator,
    twilio: tw.TwilioEmulator,
    playbook: str,
    rate: int = 1000,
) -> None:
    (settings.playbooks_dir / "connections.yaml").write_text(
        CONNECTIONS.format(
            sendgrid=sendgrid.base_url,
            twilio=twilio.base_url,
            sid=tw.ACCOUNT_SID,
            sms_from=tw.FROM_NUMBER,
            rate=rate,
        )
    )
    (settings.playbooks_dir / "bulk.yaml").write_text(playbook)


def _location(settings: Settings) -> Path:
    """A code location file for these settings, loaded the way Dagster's run workers load one."""
    module = settings.playbooks_dir.parent / "location.py"
    module.write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        from partnerships_orchestrator.compiler.location import build_repository
        from partnerships_orchestrator.settings import Settings
        defs = build_repository(Settings(playbooks_dir=Path({str(settings.playbooks_dir)!r}),
                                         templates_dir=Path({str(settings.templates_dir)!r}),
                                         home=Path({str(settings.home)!r})))
        """)
    )
    return module


def _job(module: Path) -> dg.ReconstructableJob:
    recon = ReconstructableRepository.for_file(str(module), "defs", str(module.parent))
    return recon.get_reconstructable_job("bulk")


WORKER = """
import sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
job = ReconstructableRepository.for_file(sys.argv[1], "defs", sys.argv[2]).get_reconstructable_job("bulk")
with dg.DagsterInstance.get() as instance:
    dg.execute_job(job, instance=instance)
"""


def _expected(n: int) -> set[str]:
    return {f"p{i}@example.com" for i in range(n) if i % 10 != 7}


def test_reexecution_from_failure_after_a_killed_run_delivers_the_rest_exactly_once(
    project: Settings, sendgrid: sg.SendGridEmulator, twilio: tw.TwilioEmulator
) -> None:
    n = 300
    _write(project, sendgrid, twilio, BULK.format(n=n), rate=100)
    module = _location(project)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(module), str(module.parent)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert sendgrid.wait_for_deliveries(60, timeout=60), "the first run never got going"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    delivered_at_kill = len(sendgrid.state.delivered)
    assert delivered_at_kill < len(_expected(n))  # killed part-way through the fan-out

    with dg.DagsterInstance.get() as instance:
        [killed] = instance.get_runs()
        instance.report_run_failed(killed)  # what run monitoring does for a dead worker
        options = dg.ReexecutionOptions.from_failure(killed.run_id, instance)
        with dg.execute_job(_job(module), instance=instance, reexecution_options=options) as again:
            assert again.success
            tally = again.output_for_node("tally")["steps"]["tally"]["output"]

    state = StateStore(project.state_url)
    unknown = [
        d for d in state.dead_letters(run_id=again.run_id) if d["action"] == "outcome_unknown"
    ]
    unknown_to = {d["inputs"]["recipient"] for d in unknown}
    counts = Counter(d.to for d in sendgrid.state.delivered)
    assert max(counts.values()) == 1  # nothing was sent twice
    missing = _expected(n) - set(counts)
    assert missing <= unknown_to  # only a request in flight at the kill may be missing...
    # ...at most one per request in flight: as many as keep 100/s (dispatch.in_flight)
    assert len(unknown) <= in_flight(
        SendGridEmail(
            api_key="k", sender="s@example.org", rate_limit={"requests": 100, "per_seconds": 1}
        )
    )
    assert set(counts) <= _expected(n)  # `when` still skips per item
    assert tally == len(_expected(n))  # collect sees every item, skipped ones left out
    ledger = Counter(d["status"] for d in state.deliveries(killed.run_id))
    assert ledger["sent"] + ledger["pending"] == len(_expected(n))
    assert ledger["pending"] == len(unknown)


def test_reexecution_from_failure_after_failed_items_sends_only_those(
    project: Settings, sendgrid: sg.SendGridEmulator, twilio: tw.TwilioEmulator
) -> None:
    n = 40
    _write(project, sendgrid, twilio, BULK.format(n=n))
    sendgrid.fail_recipient("p3@example.com", times=2)  # both attempts answered 500
    job = _job(_location(project))
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(job, instance=instance) as first:
            assert not first.success
        assert set(Counter(d.to for d in sendgrid.state.delivered)) == _expected(n) - {
            "p3@example.com"
        }
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(job, instance=instance, reexecution_options=options) as again:
            assert again.success
    assert Counter(d.to for d in sendgrid.state.delivered) == Counter(_expected(n))
    state = StateStore(project.state_url)
    # the failed item has one dead letter however often it failed, naming the latest run
    [letter] = state.dead_letters(playbook="bulk")
    assert (letter["step"], letter["run_id"]) == ("greet[3]", first.run_id)


def test_a_bulk_send_uses_the_batch_api_and_keeps_a_ledger_row_per_item(
    project: Settings, sendgrid: sg.SendGridEmulator, twilio: tw.TwilioEmulator
) -> None:
    n = 250
    same_content = BULK.format(n=n).replace('subject: "Hello p{{ item }}"', 'subject: "News"')
    same_content = same_content.replace('body: "Dear partner {{ item }}"', 'body: "Dear partner"')
    _write(project, sendgrid, twilio, same_content)
    playbook = TypeAdapter(Playbook).validate_python(yaml.safe_load(same_content))
    connections = TypeAdapter(Connections).validate_python(
        yaml.safe_load((project.playbooks_dir / "connections.yaml").read_text())
    )
    job = build_job(playbook, build_resources(project, connections))
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success
    assert len(sendgrid.requests("/v3/mail/send")) == 1  # one request for all 225 messages
    assert Counter(d.to for d in sendgrid.state.delivered) == Counter(_expected(n))
    ledger = StateStore(project.state_url).deliveries(result.run_id)
    assert len(ledger) == len(_expected(n)) and {d["status"] for d in ledger} == {"sent"}
    assert {d["item_key"] for d in ledger} == {str(i) for i in range(n) if i % 10 != 7}


SLOW_SMS = """
id: bulk
steps:
  - id: text
    type: communicate
    channel: sms
    to: ["+15550001", "+15550002", "+15550003", "+15550004", "+15550005", "+15550006"]
    body: "Doors open at nine"
    timeout_seconds: 1
"""


def test_a_timed_out_step_sends_nothing_after_it_was_reported_failed(
    project: Settings, sendgrid: sg.SendGridEmulator, twilio: tw.TwilioEmulator
) -> None:
    _write(project, sendgrid, twilio, SLOW_SMS)
    twilio.add_fault(path="/2010-04-01", action=FaultAction.DELAY, delay_seconds=0.4, times=None)
    playbook = TypeAdapter(Playbook).validate_python(yaml.safe_load(SLOW_SMS))
    connections = TypeAdapter(Connections).validate_python(
        yaml.safe_load((project.playbooks_dir / "connections.yaml").read_text())
    )
    job = build_job(playbook, build_resources(project, connections))
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "timeout" in str(failure.event_specific_data.error.message)
    at_failure = len(twilio.requests("/2010-04-01", method="POST"))
    assert 1 <= at_failure < 6
    time.sleep(1.5)  # longer than the 0.4 s a request takes: a send still going would land now
    assert len(twilio.requests("/2010-04-01", method="POST")) == at_failure
    ledger = StateStore(project.state_url).deliveries(result.run_id)
    assert len(ledger) == at_failure  # claimed only what left
