"""Redrive a dead letter: run its step again with the scope it had when it failed.

The step runs as it is defined now (a fixed template or URL is picked up), with the inputs,
item and upstream outputs it saw then, as part of the same root run: so a `communicate` step
does not send again what the delivery ledger says was delivered, and sends only the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from partnerships_orchestrator.compiler.job import step_timeout
from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.compiler.ops import step_resources
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.steps import runner_for
from partnerships_orchestrator.steps.context import SKIPPED, RunInfo, StepContext
from partnerships_orchestrator.store import codec

REDRIVABLE = ("skip", "abort", "retry_exhausted", "failed")


@dataclass
class Redriven:
    """What a redrive did."""

    letter_id: int
    playbook: str
    step: str
    output: Any


def redrive(project: Project, letter_id: int) -> Redriven:
    """Run the dead letter's step again; mark the letter redriven when it succeeds."""
    settings = project.settings
    state = project.state
    letter = state.dead_letter(letter_id)
    if letter is None:
        raise PartnershipsError(f"no dead letter {letter_id}", hint="`partnerships dead-letters`")
    _check_redrivable(letter)
    playbook = project.playbook(letter["playbook"]).model
    step_id = letter["step"].split("[", 1)[0]
    step = next((s for s in playbook.steps if s.id == step_id), None)
    if step is None:
        raise PartnershipsError(
            f"playbook `{playbook.id}` has no step `{step_id}` any more",
            hint="a dead letter is redriven through the step as it is defined now",
        )
    ctx = _context(settings, playbook, step, letter, project.resources)
    output = runner_for(step.type)(step, ctx)
    state.mark_redriven(letter_id)
    return Redriven(letter_id, playbook.id, letter["step"], None if output is SKIPPED else output)


def _check_redrivable(letter: dict[str, Any]) -> None:
    if letter["status"] == "redriven":
        raise PartnershipsError(f"dead letter {letter['id']} was redriven already")
    if letter["action"] not in REDRIVABLE:
        why = {
            "outcome_unknown": "whether the message arrived is unknown; sending it again could "
            "deliver it twice (check with the vendor)",
            "undelivered": "whether the message arrived is unknown; sending it again could "
            "deliver it twice (check with the vendor)",
            "refused": "it is an inbound webhook call that did not fit the playbook's inputs",
        }.get(letter["action"], f"its action is `{letter['action']}`")
        raise PartnershipsError(f"dead letter {letter['id']} cannot be redriven: {why}")
    if letter.get("scope") is None:
        raise PartnershipsError(
            f"dead letter {letter['id']} kept no scope to run its step with",
            hint="run the playbook again instead",
        )


def _context(
    settings: Settings, playbook: Any, step: Any, letter: dict[str, Any], resources: dict[str, Any]
) -> StepContext:
    recorded = letter.get("inputs") or {}
    started = recorded.get("run_started_at")
    run = RunInfo(
        id=f"redrive-{letter['id']}-of-{letter['run_id']}",
        root_id=recorded.get("root_run_id") or letter["run_id"],
        playbook=playbook.id,
        started_at=datetime.fromisoformat(started) if started else datetime.now(UTC),
    )
    ctx = StepContext(
        playbook=playbook,
        step=step,
        run=run,
        scope=codec.decode(letter["scope"]),
        settings=settings,
        resources=step_resources(resources[RESOURCE_KEY], resources, playbook),
        mapping_key=recorded.get("mapping_key"),
    )
    timeout = step_timeout(playbook, step)
    if timeout:
        ctx.deadline = time.monotonic() + timeout
    return ctx
