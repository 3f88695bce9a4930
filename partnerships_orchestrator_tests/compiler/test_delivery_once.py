"""`communicate` sends at most once per (run, step, item, recipient), across retries and re-runs."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.state import StateStore

HALF_THEN_FAIL = """
id: announce
steps:
  - id: send
    type: communicate
    channel: email
    to: ["a@example.org", "b@example.org", "c@flaky.invalid", "d@example.org"]
    subject: "Partner summit"
    body: "See you there"
    on_error: {action: retry, max_attempts: 2, delay_seconds: 0}
"""


def test_retried_step_after_half_its_messages_sends_each_once(run_playbook, settings):
    result = run_playbook(HALF_THEN_FAIL)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1  # the first attempt failed at the third recipient
    outbox = StateStore(settings.state_url).outbox(run_id=result.run_id)
    recipients = [m["recipient"] for m in outbox]
    assert sorted(recipients) == [
        "a@example.org",
        "b@example.org",
        "c@flaky.invalid",
        "d@example.org",
    ]
    ledger = StateStore(settings.state_url).deliveries(result.run_id)
    assert {d["recipient"]: d["status"] for d in ledger} == dict.fromkeys(recipients, "sent")
    assert {d["recipient"]: d["attempts"] for d in ledger}["c@flaky.invalid"] == 2


def test_permanent_failure_keeps_what_was_sent_and_dead_letters(run_playbook, settings):
    result = run_playbook(HALF_THEN_FAIL.replace("c@flaky.invalid", "c@fail.invalid"))
    assert not result.success
    store = StateStore(settings.state_url)
    assert [m["recipient"] for m in store.outbox(run_id=result.run_id)] == [
        "a@example.org",
        "b@example.org",
    ]
    assert [d["action"] for d in store.dead_letters(run_id=result.run_id)] == ["failed"]


def _code_location(tmp_path: Path, settings: Settings, playbook: str) -> ReconstructableRepository:
    """A code location file for these settings, loaded the way Dagster's run workers load one."""
    (settings.playbooks_dir / "announce.yaml").write_text(playbook)
    module = tmp_path / f"location_{tmp_path.name}.py"
    module.write_text(
        textwrap.dedent(f"""
        from partnerships_orchestrator.compiler.location import build_repository
        from partnerships_orchestrator.settings import Settings
        from pathlib import Path
        defs = build_repository(Settings(playbooks_dir=Path({str(settings.playbooks_dir)!r}),
                                         templates_dir=Path({str(settings.templates_dir)!r}),
                                         home=Path({str(settings.home)!r})))
    """)
    )
    return ReconstructableRepository.for_file(str(module), "defs", working_directory=str(tmp_path))


def test_reexecuted_run_does_not_send_again(tmp_path, settings):
    recon = _code_location(
        tmp_path, settings, HALF_THEN_FAIL.replace("c@flaky.invalid", "c@example.org")
    )
    job = recon.get_reconstructable_job("announce")
    (tmp_path / "dagster").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        first = dg.execute_job(job, instance=instance)
        assert first.success
        second = dg.execute_job(
            job,
            instance=instance,
            reexecution_options=dg.ReexecutionOptions(parent_run_id=first.run_id),
        )
        assert second.success and second.run_id != first.run_id
    store = StateStore(settings.state_url)
    assert len(store.outbox()) == 4  # four recipients, nothing went out twice
    assert {d["root_run_id"] for d in store.deliveries()} == {first.run_id}


def test_multiprocess_executor_runs_independent_steps_at_the_same_time(tmp_path, settings, hooks):
    playbook = f"""
id: announce
executor: multiprocess
steps:
  - {{id: left, type: webhook, url: "{hooks.url}/meet", json: {{side: left}}}}
  - {{id: right, type: webhook, url: "{hooks.url}/meet", json: {{side: right}}}}
  - {{id: both, type: evaluate, depends_on: [left, right], expression: "[steps.left.output.json.met, steps.right.output.json.met]"}}
"""
    job = _code_location(tmp_path, settings, playbook).get_reconstructable_job("announce")
    (tmp_path / "dagster").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        with dg.execute_job(job, instance=instance) as result:
            assert result.success  # /meet answers 200 only when both steps wait there together
            both = result.output_for_node("both")["steps"]["both"]["output"]
        assert both == [True, True]


def test_reexecuted_fan_out_posts_each_item_once_and_retries_only_the_failed_one(
    tmp_path, settings, hooks
):
    playbook = f"""
id: announce
steps:
  - {{id: numbers, type: evaluate, expression: "range(12) | list"}}
  - id: post
    type: webhook
    depends_on: [numbers]
    for_each: steps.numbers.output
    url: "{hooks.url}/hook"
    json: {{item: "{{{{ item }}}}"}}
"""
    hooks.fail_first = 1  # the first call of the run answers 503: that item fails
    job = _code_location(tmp_path, settings, playbook).get_reconstructable_job("announce")
    (tmp_path / "dagster").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        with dg.execute_job(job, instance=instance) as first:
            assert not first.success
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(job, instance=instance, reexecution_options=options) as again:
            assert again.success
    posted = Counter(json.loads(call["body"])["item"] for call in hooks.calls)
    assert sorted(posted) == list(range(12))  # a lone `{{ }}` keeps the value's type
    assert sorted(posted.values()) == [1] * 11 + [2]  # only the failed item was posted again
