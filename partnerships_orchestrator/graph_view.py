"""A playbook's compiled step graph as data and as text (`partnerships show`)."""

from __future__ import annotations

from typing import Any

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.job import step_policy, step_timeout
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.models import OnError, Playbook


def _policy_text(policy: OnError) -> str:
    if policy.action != "retry":
        return policy.action
    if policy.max_attempts <= 1:
        return "fail (no retry)"
    text = f"retry x{policy.max_attempts}, {policy.delay_seconds:g}s {policy.backoff}"
    return text + (f", jitter {policy.jitter}" if policy.jitter != "none" else "")


def describe_playbook(playbook: Playbook) -> dict[str, Any]:
    """The step graph as data: levels of steps that may run in parallel, and each step's rules."""
    graph = StepGraph.of(playbook)
    steps = []
    for step in playbook.steps:
        fanout = graph.fanout_of(step.id)
        steps.append(
            {
                "id": step.id,
                "type": step.type,
                "node": naming.node_name(fanout or step.id),  # a fan-out runs in one node
                "depends_on": list(graph.deps(step.id)),
                "when": step.when,
                "for_each": step.for_each,
                "per_item_of": fanout if fanout and fanout != step.id else None,
                "collect": step.collect,
                "on_error": _policy_text(step_policy(playbook, step)),
                "timeout_seconds": step_timeout(playbook, step),
            }
        )
    return {
        "id": playbook.id,
        "job": naming.job_name(playbook.id),
        "name": playbook.name,
        "description": playbook.description,
        "owners": playbook.owners,
        "tags": playbook.tags,
        "executor": playbook.executor,
        "max_runs": playbook.concurrency.max_runs if playbook.concurrency else None,
        "triggers": [t.model_dump(exclude_none=True) for t in playbook.triggers]
        or [{"type": "manual"}],
        "inputs": {k: v.model_dump(exclude_none=True) for k, v in playbook.inputs.items()},
        "levels": graph.levels,
        "steps": steps,
    }


def _step_line(step: dict[str, Any]) -> str:
    notes = [step["type"]]
    if step["depends_on"]:
        notes.append("after " + ", ".join(step["depends_on"]))
    if step["for_each"]:
        notes.append(f"fan-out: for each {step['for_each']}")
    elif step["per_item_of"]:
        notes.append(f"per item of {step['per_item_of']}")
    if step["collect"]:
        notes.append("collects items")
    if step["when"]:
        notes.append(f"when {step['when']}")
    notes.append(f"on error: {step['on_error']}")
    if step["timeout_seconds"]:
        notes.append(f"timeout {step['timeout_seconds']:g}s")
    return f"{step['id']}  ({'; '.join(notes)})"


def render_playbook(view: dict[str, Any]) -> str:
    """The step graph as text, one block per level of steps that may run in parallel."""
    lines = [f"{view['id']}: {view['name'] or ''}".rstrip(": "), f"  job: {view['job']}"]
    if view["description"]:
        lines.append(f"  {view['description'].strip()}")
    triggers = ", ".join(_trigger_text(t) for t in view["triggers"])
    lines.append(f"  triggers: {triggers}")
    if view["inputs"]:
        lines.append("  inputs: " + ", ".join(_input_text(k, v) for k, v in view["inputs"].items()))
    lines.append(
        f"  executor: {view['executor']}"
        + (f"; at most {view['max_runs']} run(s) at once" if view["max_runs"] else "")
    )
    steps = {s["id"]: s for s in view["steps"]}
    for n, level in enumerate(view["levels"], start=1):
        parallel = " (in parallel)" if len(level) > 1 else ""
        lines.append(f"level {n}{parallel}:")
        lines.extend(f"  - {_step_line(steps[sid])}" for sid in level)
    return "\n".join(lines)


def _trigger_text(trigger: dict[str, Any]) -> str:
    kind = trigger["type"]
    if kind == "cron":
        return f"cron `{trigger['cron']}` {trigger.get('timezone', 'UTC')}"
    if kind == "dataset":
        return f"after dataset `{trigger['dataset']}`"
    return kind


def _input_text(name: str, spec: dict[str, Any]) -> str:
    default = f"={spec['default']}" if "default" in spec else ""
    return f"{name}: {spec['type']}{default}"
