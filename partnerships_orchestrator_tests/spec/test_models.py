"""Valid constructs load: one row per construct of the language, read as the models read it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from partnerships_orchestrator.spec.loader import load_catalog
from partnerships_orchestrator.spec.models import (
    CommunicateStep,
    Connections,
    CronTrigger,
    Dataset,
    DatasetTrigger,
    EvaluateStep,
    ManualTrigger,
    Metrics,
    OnError,
    Playbook,
    QueryStep,
    Report,
    Schedule,
    Sync,
    TemplateStep,
    WebhookStep,
    WebhookTrigger,
)

STEPS = "steps:\n  - {id: fetch, type: query, sql: select 1}\n"


def playbook(text: str) -> str:
    return f"id: construct\n{text}"


ROWS: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("no kind is a playbook", playbook(STEPS), lambda m: isinstance(m, Playbook)),
    ("kind playbook", "kind: playbook\n" + playbook(STEPS), lambda m: m.kind == "playbook"),
    (
        "cron trigger, UTC by default",
        playbook("triggers: [{type: cron, cron: '0 9 * * 1-5'}]\n" + STEPS),
        lambda m: isinstance(m.triggers[0], CronTrigger) and m.triggers[0].timezone == "UTC",
    ),
    (
        "cron trigger with a timezone",
        playbook(
            "triggers: [{type: cron, cron: '*/5 * * * *', timezone: Europe/Berlin}]\n" + STEPS
        ),
        lambda m: m.triggers[0].timezone == "Europe/Berlin",
    ),
    (
        "webhook trigger with a secret reference",
        playbook("triggers: [{type: webhook, secret: '${env:HOOK_SECRET}'}]\n" + STEPS),
        lambda m: (
            isinstance(m.triggers[0], WebhookTrigger)
            and m.triggers[0].secret == "${env:HOOK_SECRET}"
        ),
    ),
    (
        "dataset trigger on a sync object asset",
        "kind: sync\nid: hubspot\nprovider: hubspot\nobjects: [companies]\n---\n"
        + playbook("triggers: [{type: dataset, dataset: hubspot_companies}]\n" + STEPS),
        lambda m: isinstance(m.triggers[0], DatasetTrigger),
    ),
    (
        "manual trigger",
        playbook("triggers: [{type: manual}]\n" + STEPS),
        lambda m: isinstance(m.triggers[0], ManualTrigger),
    ),
    (
        "inputs of every type",
        playbook(
            "inputs:\n"
            "  a: {type: string, default: x, enum: [x, y]}\n"
            "  b: {type: integer, default: 7}\n"
            "  c: {type: number, default: 0.5}\n"
            "  d: {type: boolean, default: false}\n"
            "  e: {type: date, default: 2024-01-31}\n"
            "  f: {type: datetime, default: '2024-01-31T09:00:00Z'}\n"
            "  g: {type: list, default: [1, 2]}\n"
            "  h: {type: object, default: {k: v}}\n"
            "  i: {type: string, required: false}\n" + STEPS
        ),
        lambda m: m.inputs["e"].default == date(2024, 1, 31) and not m.inputs["i"].is_required,
    ),
    (
        "defaults and concurrency",
        playbook(
            "defaults: {on_error: {action: retry, max_attempts: 3, backoff: exponential}}\n"
            "concurrency: {max_runs: 1}\n" + STEPS
        ),
        lambda m: m.defaults.on_error.max_attempts == 3 and m.concurrency.max_runs == 1,
    ),
    (
        "query step with bound params",
        playbook(
            "inputs: {since_days: {type: integer, default: 7}}\n"
            "steps:\n"
            "  - id: fetch\n"
            "    type: query\n"
            "    sql: select * from partners where created_at >= :since\n"
            "    params: {since: '{{ run.started_at - days(inputs.since_days) }}'}\n"
        ),
        lambda m: isinstance(m.steps[0], QueryStep) and "since" in m.steps[0].params,
    ),
    (
        "query step on a CRM object",
        "kind: connections\nid: crm\nconnections: {hubspot: {token: '${env:HUBSPOT_TOKEN}'}}\n---\n"
        + playbook(
            "steps:\n  - {id: fetch, type: query, source: hubspot, object: contacts, "
            "properties: [email], filters: {lifecyclestage: customer}}\n"
        ),
        lambda m: m.steps[0].object == "contacts",
    ),
    (
        "evaluate step: assign and filter over rows",
        playbook(
            STEPS + "  - {id: fit, type: evaluate, depends_on: [fetch], "
            "assign: {score: 'row.deals * 2'}, filter: 'row.score > 1'}\n"
        ),
        lambda m: (
            isinstance(m.steps[1], EvaluateStep) and m.steps[1].assign == {"score": "row.deals * 2"}
        ),
    ),
    (
        "fan-out, mapped steps and collect",
        playbook(
            STEPS + "  - {id: each, type: evaluate, depends_on: [fetch], "
            "for_each: steps.fetch.output.rows, expression: item.id}\n"
            "  - {id: then, type: evaluate, depends_on: [each], expression: 'item.id + 1'}\n"
            "  - {id: all, type: evaluate, depends_on: [then], collect: true, "
            "expression: steps.then.output | length}\n"
        ),
        lambda m: m.steps[3].collect,
    ),
    (
        "template step, inline source with context",
        playbook(
            "steps:\n  - {id: t, type: template, format: text, "
            "source: '{{ greeting }}, {{ run.playbook }}', context: {greeting: Hello}}\n"
        ),
        lambda m: isinstance(m.steps[0], TemplateStep) and m.steps[0].format == "text",
    ),
    (
        "communicate step with when and on_error",
        playbook(
            STEPS + "  - {id: tell, type: communicate, depends_on: [fetch], channel: slack, "
            "to: '#partners', body: '{{ steps.fetch.output.count }} new', "
            "when: steps.fetch.output.count > 0, on_error: {action: skip}}\n"
        ),
        lambda m: (
            isinstance(m.steps[1], CommunicateStep)
            and m.steps[1].on_error == OnError.model_validate({"action": "skip"})
        ),
    ),
    (
        "webhook step: `json` is the body",
        playbook(
            "steps:\n  - {id: hook, type: webhook, url: 'https://hooks.example.org/x', "
            "method: PUT, headers: {X-Run: '{{ run.id }}'}, json: {a: 1}, "
            "expect_status: [200, 202], sign: true}\n"
        ),
        lambda m: isinstance(m.steps[0], WebhookStep) and m.steps[0].json_body == {"a": 1},
    ),
    (
        "owners and tags",
        playbook("owners: [partner-ops, leadership]\ntags: {team: partners}\n" + STEPS),
        lambda m: m.owners == ["partner-ops", "leadership"] and m.tags == {"team": "partners"},
    ),
    (
        "sync",
        "kind: sync\nid: crm\nprovider: salesforce\nobjects: [accounts]\n",
        lambda m: isinstance(m, Sync) and m.asset_ids() == ["crm_accounts"],
    ),
    (
        "dataset with checks and a schedule",
        "kind: dataset\nid: ds\nsql: select 1 as id\nchecks: [{type: unique, column: id}]\n"
        "schedule: {cron: '0 6 * * *', timezone: America/New_York}\n",
        lambda m: (
            isinstance(m, Dataset)
            and m.schedule == Schedule(cron="0 6 * * *", timezone="America/New_York")
        ),
    ),
    (
        "report",
        "kind: report\nid: rep\ntemplate: reports/quarterly_review.md.j2\nformats: [markdown, pdf]\n"
        "deliver: [{channel: email, to: [a@example.org], subject: Review}]\n",
        lambda m: isinstance(m, Report) and m.formats == ["markdown", "pdf"],
    ),
    (
        "metrics",
        "kind: metrics\nid: met\nmetrics: [{id: active, sql: select 1, target: 120}]\n",
        lambda m: isinstance(m, Metrics) and m.metrics[0].target == 120,
    ),
    (
        "connections keep secret references as text",
        "kind: connections\nid: conn\nconnections: {slack: {token: '${env:SLACK_BOT_TOKEN}'}}\n",
        lambda m: (
            isinstance(m, Connections)
            and m.connections["slack"]["token"] == "${env:SLACK_BOT_TOKEN}"
        ),
    ),
]


@pytest.mark.parametrize(("text", "check"), [row[1:] for row in ROWS], ids=[r[0] for r in ROWS])
def test_valid_construct_loads(tmp_path: Path, text: str, check: Callable[[Any], bool]) -> None:
    file = tmp_path / "construct.yaml"
    file.write_text(text)
    templates = Path(__file__).parent / "cases" / "templates"
    catalog = load_catalog([file], templates_dir=templates)
    assert catalog.problems == [], "\n".join(map(str, catalog.problems))
    assert check(catalog.documents[-1].model)
