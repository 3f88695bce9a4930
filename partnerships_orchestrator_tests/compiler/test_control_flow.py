"""Each control-flow rule of the language, proven by a real Dagster execution."""

from __future__ import annotations

import dagster as dg
import pytest

from partnerships_orchestrator.compiler.fanout import retry_delay
from partnerships_orchestrator.compiler.inputs import check_inputs
from partnerships_orchestrator.compiler.job import build_job
from partnerships_orchestrator.connections import build_resources
from partnerships_orchestrator.errors import InputError
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.compiler.conftest import messages, playbook_from, step_events


def output(result: dg.ExecuteInProcessResult, playbook: str, step: str):
    return result.output_for_node(step)["steps"][step]["output"]


def test_independent_branches_share_a_level_and_join():
    from partnerships_orchestrator.spec.graph import StepGraph

    playbook = playbook_from("""
id: branches
steps:
  - {id: a, type: evaluate, expression: "1"}
  - {id: b, type: evaluate, expression: "2"}
  - {id: c, type: evaluate, depends_on: [a, b], expression: "steps.a.output + steps.b.output"}
""")
    assert StepGraph.of(playbook).levels == [["a", "b"], ["c"]]
    job = build_job(playbook, {})
    from dagster._core.execution.api import create_execution_plan

    levels = create_execution_plan(job).get_steps_to_execute_by_level()
    assert [sorted(s.key for s in level) for level in levels] == [
        ["a", "b"],
        ["c"],
    ]
    # the UI shows each node by its step id; op definitions stay unique in the code location
    assert job.graph.node_named("c").definition.name == "branches__c"


def test_join_sees_every_upstream_output(run_playbook):
    result = run_playbook("""
id: join
steps:
  - {id: a, type: evaluate, expression: "1"}
  - {id: b, type: evaluate, expression: "2"}
  - {id: c, type: evaluate, depends_on: [a, b], expression: "steps.a.output + steps.b.output"}
  - {id: d, type: evaluate, depends_on: [c], expression: "steps.a.output * 10 + steps.c.output"}
""")
    assert result.success
    assert output(result, "join", "d") == 13


def test_when_false_skips_the_step_and_what_needs_it_but_not_siblings(run_playbook, instance):
    result = run_playbook("""
id: cond
inputs: {go: {type: boolean, default: false}}
steps:
  - {id: start, type: evaluate, expression: "'s'"}
  - {id: gated, type: evaluate, depends_on: [start], when: "inputs.go", expression: "'g'"}
  - {id: after_gated, type: evaluate, depends_on: [gated], expression: "'x'"}
  - {id: sibling, type: evaluate, depends_on: [start], expression: "'sib'"}
""")
    assert result.success
    events = step_events(result)
    assert "STEP_SKIPPED" in events["after_gated"]
    assert output(result, "cond", "sibling") == "sib"
    assert any("[skipped] `gated`" in m for m in messages(instance, result))
    again = run_playbook(
        """
id: cond
inputs: {go: {type: boolean, default: false}}
steps:
  - {id: start, type: evaluate, expression: "'s'"}
  - {id: gated, type: evaluate, depends_on: [start], when: "inputs.go", expression: "'g'"}
  - {id: after_gated, type: evaluate, depends_on: [gated], expression: "steps.gated.output"}
""",
        {"go": True},
    )
    assert output(again, "cond", "after_gated") == "g"


FANOUT = """
id: fan
inputs: {n: {type: integer, default: 5}}
steps:
  - {id: nums, type: evaluate, expression: "range(inputs.n) | list"}
  - id: doubled
    type: evaluate
    depends_on: [nums]
    for_each: steps.nums.output
    assign: {double: "item * 2"}
  - id: even_only
    type: evaluate
    depends_on: [doubled]
    when: "item % 2 == 0"
    expression: "steps.doubled.output.double + 1"
  - id: gathered
    type: evaluate
    depends_on: [even_only]
    collect: true
    expression: "{'evens': steps.even_only.output, 'doubled': steps.doubled.output | map(attribute='double') | list, 'n': inputs.n}"
"""


def test_for_each_runs_downstream_steps_per_item_until_collect(run_playbook):
    result = run_playbook(FANOUT)
    assert result.success
    gathered = output(result, "fan", "gathered")
    assert gathered["evens"] == [1, 5, 9]  # skipped items are left out, item order kept
    assert gathered["doubled"] == [0, 2, 4, 6, 8]
    assert gathered["n"] == 5
    # the region runs in one node named by its `for_each` step, every item through each step
    assert len(result.output_for_node("doubled", "step_even_only")) == 5
    counts = {
        e.event_specific_data.step_output_handle.output_name: e.event_specific_data.metadata
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT" and e.step_key == "doubled"
    }
    assert counts["step_even_only"]["done"].value == 3
    assert counts["step_even_only"]["skipped"].value == 2
    assert counts["step_doubled"]["done"].value == 5


def test_collect_runs_once_with_empty_lists_when_there_are_no_items(run_playbook):
    result = run_playbook(FANOUT, {"n": 0})
    assert result.success
    assert output(result, "fan", "gathered") == {"evens": [], "doubled": [], "n": 0}


def test_retry_uses_dagster_retry_policy_with_backoff_then_succeeds(run_playbook, hooks):
    hooks.fail_first = 2
    result = run_playbook(f"""
id: retrying
steps:
  - id: call
    type: webhook
    url: "{hooks.url}/hook"
    json: {{hello: world}}
    on_error: {{action: retry, max_attempts: 3, delay_seconds: 0.05, backoff: exponential}}
""")
    assert result.success
    assert len(hooks.calls) == 3
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2
    waits = [e.event_specific_data.seconds_to_wait for e in retries]
    assert waits[1] > waits[0] >= 0.05  # exponential backoff
    job = build_job(
        playbook_from(f"""
id: retrying
steps:
  - id: call
    type: webhook
    url: "{hooks.url}/hook"
    on_error: {{action: retry, max_attempts: 3, delay_seconds: 0.05, backoff: exponential, jitter: full}}
"""),
        {},
    )
    policy = job.graph.node_named("call").definition.retry_policy
    assert policy.max_retries == 2 and policy.backoff == dg.Backoff.EXPONENTIAL
    assert policy.jitter == dg.Jitter.FULL and policy.delay == 0.05


@pytest.mark.parametrize("backoff", ["constant", "linear", "exponential"])
def test_an_item_inside_a_fan_out_waits_between_attempts_as_a_step_does(
    run_playbook, hooks, backoff
):
    """Items of a fan-out retry inside their step; their waits follow Dagster's own schedule."""
    hooks.fail_first = 2
    text = f"""
id: retrying
steps:
  - id: call
    type: webhook
    url: "{hooks.url}/hook"
    on_error: {{action: retry, max_attempts: 3, delay_seconds: 0.05, backoff: {backoff}}}
"""
    result = run_playbook(text)
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    step_waits = [e.event_specific_data.seconds_to_wait for e in retries]
    on_error = playbook_from(text).steps[0].on_error  # the policy a fan-out item runs under
    assert len(step_waits) == 2
    assert [retry_delay(on_error, n) for n in (1, 2)] == pytest.approx(step_waits)


def test_retries_exhausted_fail_the_step_and_write_a_dead_letter(run_playbook, hooks, state):
    hooks.fail_first = 10
    result = run_playbook(f"""
id: exhausted
steps:
  - id: call
    type: webhook
    url: "{hooks.url}/hook"
    on_error: {{action: retry, max_attempts: 2, delay_seconds: 0}}
""")
    assert not result.success
    assert len(hooks.calls) == 2
    [letter] = state.dead_letters(run_id=result.run_id)
    assert letter["action"] == "retry_exhausted" and letter["attempts"] == 2
    assert letter["step"] == "call" and "503" in letter["error"]
    assert letter["inputs"]["step"]["url"].endswith("/hook")


def test_skip_policy_records_and_skips_dependents_but_not_siblings(
    run_playbook, hooks, state, instance
):
    hooks.fail_first = 10
    result = run_playbook(f"""
id: skipping
steps:
  - {{id: start, type: evaluate, expression: "1"}}
  - id: call
    type: webhook
    depends_on: [start]
    url: "{hooks.url}/hook"
    on_error: {{action: skip}}
  - {{id: after_call, type: evaluate, depends_on: [call], expression: "2"}}
  - {{id: sibling, type: evaluate, depends_on: [start], expression: "3"}}
""")
    assert result.success
    assert "STEP_SKIPPED" in step_events(result)["after_call"]
    assert output(result, "skipping", "sibling") == 3
    [letter] = state.dead_letters(run_id=result.run_id)
    assert letter["action"] == "skip" and letter["step"] == "call"
    assert any("[skipped] `call` failed" in m for m in messages(instance, result))


def test_abort_fails_the_run_and_stops_steps_not_yet_started(run_playbook, hooks, state):
    hooks.fail_first = 10
    result = run_playbook(f"""
id: aborting
steps:
  - id: call
    type: webhook
    url: "{hooks.url}/hook"
    on_error: {{action: abort}}
  - {{id: unrelated, type: evaluate, expression: "1"}}
  - {{id: later, type: evaluate, depends_on: [unrelated], expression: "2"}}
""")
    assert not result.success
    assert len(hooks.calls) == 1  # abort never retries
    events = step_events(result)
    assert "STEP_SUCCESS" not in events.get("later", [])
    assert "STEP_FAILURE" in events["unrelated"] or "STEP_FAILURE" in events["later"]
    letters = state.dead_letters(run_id=result.run_id)
    assert [(d["step"], d["action"]) for d in letters] == [("call", "abort")]


def test_timeout_fails_the_attempt_and_applies_the_policy(run_playbook, hooks, state):
    result = run_playbook(f"""
id: timing
steps:
  - id: slow
    type: webhook
    url: "{hooks.url}/slow"
    timeout_seconds: 0.3
    on_error: {{action: skip}}
""")
    hooks.release.set()
    assert result.success
    [letter] = state.dead_letters(run_id=result.run_id)
    assert letter["error_type"] in ("StepTimeout", "StepError")
    assert "0.3" in letter["error"] or "timed out" in letter["error"].lower()


def test_expression_errors_are_not_retried(run_playbook, state):
    result = run_playbook("""
id: broken
steps:
  - id: bad
    type: evaluate
    expression: "inputs.missing"
    on_error: {action: retry, max_attempts: 3, delay_seconds: 0}
""")
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [letter] = state.dead_letters(run_id=result.run_id)
    assert "missing" in letter["error"]


def test_inputs_are_typed_run_config(settings):
    playbook = playbook_from("""
id: typed
inputs:
  since_days: {type: integer, default: 7}
  region: {type: string, enum: [EMEA, AMER]}
  when: {type: date, required: false}
steps:
  - {id: a, type: evaluate, expression: "inputs.since_days"}
""")
    job = build_job(playbook, build_resources(settings, None))
    fields = job.run_config_schema.config_type.fields
    assert set(fields) == {"since_days", "region", "when"}
    assert fields["since_days"].default_value == 7 and not fields["since_days"].is_required
    assert fields["region"].is_required
    with pytest.raises(dg.DagsterInvalidConfigError, match="since_days"):
        job.execute_in_process(run_config={"since_days": "seven", "region": "EMEA"})
    with pytest.raises(InputError, match="since_days.*integer"):
        check_inputs(playbook, {"since_days": "seven", "region": "EMEA"})
    with pytest.raises(InputError, match="unknown input `nope`"):
        check_inputs(playbook, {"nope": 1, "region": "EMEA"})
    with pytest.raises(InputError, match="missing required input `region`"):
        check_inputs(playbook, {})
    with pytest.raises(InputError, match="one of"):
        check_inputs(playbook, {"region": "MARS"})
    assert check_inputs(playbook, {"region": "EMEA", "since_days": "3"})["since_days"] == 3


def test_every_step_type_runs_in_one_playbook(run_playbook, hooks, settings):
    (settings.templates_dir / "note.md.j2").write_text(
        "# {{ title }}\n{% for p in rows %}- {{ p.name }}\n{% endfor %}"
    )
    result = run_playbook(f"""
id: all-types
steps:
  - id: gold
    type: query
    sql: "select id, name from partners where tier = :tier order by id limit 3"
    params: {{tier: gold}}
  - id: names
    type: evaluate
    depends_on: [gold]
    expression: "steps.gold.rows | map(attribute='name') | list"
  - id: note
    type: template
    depends_on: [gold]
    template: note.md.j2
    context: {{title: "Gold partners", rows: "{{{{ steps.gold.rows }}}}"}}
  - id: tell
    type: communicate
    depends_on: [note, names]
    channel: slack
    to: "#partner-ops"
    body: "{{{{ steps.note.output }}}}"
  - id: ping
    type: webhook
    depends_on: [tell]
    url: "{hooks.url}/hook"
    json: {{sent: "{{{{ steps.tell.output | length }}}}", names: "{{{{ steps.names.output }}}}"}}
""")
    assert result.success
    names = output(result, "all_types", "names")
    assert 1 <= len(names) <= 3
    outbox = StateStore(settings.state_url).outbox(run_id=result.run_id)
    assert [m["channel"] for m in outbox] == ["slack"]
    assert all(name in outbox[0]["body"] for name in names)
    import json

    assert json.loads(hooks.calls[0]["body"]) == {"sent": 1, "names": names}


def test_collect_still_runs_when_every_item_was_skipped(run_playbook):
    result = run_playbook(FANOUT.replace('when: "item % 2 == 0"', 'when: "item > 100"'))
    assert result.success
    gathered = output(result, "fan", "gathered")
    assert gathered["evens"] == [] and gathered["doubled"] == [0, 2, 4, 6, 8]


def test_filter_inside_a_fan_out_skips_the_item_and_its_dependents(run_playbook):
    result = run_playbook("""
id: filtered
steps:
  - {id: nums, type: evaluate, expression: "[1, 2, 3, 4]"}
  - {id: big, type: evaluate, depends_on: [nums], for_each: steps.nums.output, filter: "item > 2", assign: {half: "item / 2"}}
  - {id: next, type: evaluate, depends_on: [big], expression: "steps.big.output.half"}
  - {id: all, type: evaluate, depends_on: [next], collect: true, expression: "steps.next.output"}
""")
    assert output(result, "filtered", "all") == [1.5, 2.0]
