"""Write N generated playbooks of 10 steps each into a folder (benchmark input).

    .venv/bin/python benchmarks/generate.py OUT_DIR [--count 100] [--trivial]

Every playbook has the same step graph (so that the hand-written Dagster baseline in
``handwritten.py`` can mirror it exactly), with a realistic mix of step types:

    partners (query) ──▶ scored (evaluate, for_each + assign) ──▶ message (template, inline)
                                        │                                │
                                        │                                ▼
                                        │            send (communicate email, `when`, on_error skip)
                                        ▼                                │
                         summary (evaluate, collect: true) ◀─────────────┘
                             │                   │
    deals (query) ─▶ pipeline (evaluate) ─▶ digest (template, fan-in) ─▶ notify (communicate slack)
                             │
                             └──▶ crm_sync (webhook, `when: inputs.push_to_crm`, default false:
                                  skipped, never executed; on_error abort)

Inputs (integer, string enum, boolean), cron + manual triggers, `defaults.on_error`, per-step
policies (retry with backoff, skip, abort) and a concurrency limit on some of them. Constants in
the expressions, SQL and texts differ per playbook (seeded by its number), so the expression
checker's per-text cache does not make a folder of copies look cheaper than real playbooks.

``--trivial`` writes the same graph with every step an `evaluate` of a small expression (no SQL,
no rendering, no delivery): what `run_overhead.py` compares with a hand-written job doing the
same trivial work.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

STEPS = 10
FANOUT_ITEMS = 3  # `inputs.batch` default: items the for_each step fans out over
REGIONS = ("AMER", "EMEA", "APAC")
TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Singapore", "UTC")
TEAMS = ("partner-ops", "alliances", "channel-sales", "partner-marketing", "solutions")


def playbook_id(n: int, trivial: bool = False) -> str:
    return f"{'triv' if trivial else 'gen'}-{n:04d}-partner-review"


def job_name(n: int, trivial: bool = False) -> str:
    """The Dagster job the playbook compiles to (`-` becomes `_`)."""
    return playbook_id(n, trivial).replace("-", "_")


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _header(n: int, rng: random.Random, trivial: bool) -> list[str]:
    region = rng.choice(REGIONS)
    lines = [
        f"# Generated benchmark playbook {n} (benchmarks/generate.py).",
        f"id: {playbook_id(n, trivial)}",
        f"name: Partner review {n}",
        f"description: Score {region} partners, welcome good fits, post a pipeline digest.",
        f"owners: [{rng.choice(TEAMS)}, {rng.choice(TEAMS)}]",
        f"tags: {{domain: generated, batch: \"{n // 100}\"}}",
        "triggers:",
    ]
    if n % 2 == 0:
        minute, hour = rng.randrange(60), rng.randrange(6, 11)
        lines.append(f"  - {{type: cron, cron: \"{minute} {hour} * * 1-5\", "
                     f"timezone: {rng.choice(TIMEZONES)}}}")
    lines += [
        "  - {type: manual}",
        "inputs:",
        f"  since_days: {{type: integer, default: {rng.randrange(7, 60)}, "
        "description: Look-back window in days.}",
        f"  batch: {{type: integer, default: {FANOUT_ITEMS}, description: Partners per run.}}",
        f"  min_fit: {{type: integer, default: {rng.randrange(30, 60)}, "
        "description: Fit score that earns the welcome email.}",
        f"  region: {{type: string, default: {region}, enum: [AMER, EMEA, APAC]}}",
        "  push_to_crm: {type: boolean, default: false, description: Also push the summary to the CRM.}",
        "defaults:",
        f"  on_error: {{action: retry, max_attempts: {rng.randrange(2, 4)}, "
        f"delay_seconds: {rng.choice((1, 2, 5))}, backoff: exponential}}",
        f"  timeout_seconds: {rng.choice((60, 120, 300))}",
    ]
    if n % 3 == 0:
        lines.append(f"concurrency: {{max_runs: {1 + n % 4}}}")
    return lines


def _real_steps(n: int, rng: random.Random) -> list[str]:
    gold, silver, bronze = rng.randrange(30, 50), rng.randrange(15, 30), rng.randrange(5, 15)
    weight = rng.choice((0.2, 0.25, 0.3, 0.35, 0.4))
    stages = rng.sample(["prospecting", "qualification", "proposal", "negotiation"], 3)
    channel = f"#partner-ops-{rng.choice(REGIONS).lower()}-{n % 17}"
    fit = (
        f"({{'gold': {gold}, 'silver': {silver}, 'bronze': {bronze}}}[item.tier] "
        f"+ (30 if item.industry in ['Software', 'IT Services', 'Cybersecurity'] else {rng.randrange(5, 15)}) "
        f"+ item.health_score * {weight}) | round | int"
    )
    track = f"{{'gold': 'white-glove-{n % 7}', 'silver': 'guided'}}.get(item.tier, 'self-serve')"
    return [
        "  - id: partners",
        "    type: query",
        "    sql: |",
        f"      -- playbook {n}: {rng.choice(('review', 'check-in', 'scoring'))} batch",
        "      select id, name, tier, industry, region, contact_name, contact_email, health_score",
        "      from partners",
        "      where region = :region and status != 'churned' and health_score >= :floor",
        "      order by health_score desc, id",
        "      limit :batch",
        "    params:",
        "      region: \"{{ inputs.region }}\"",
        "      batch: \"{{ inputs.batch }}\"",
        f"      floor: {rng.randrange(0, 20)}",
        "  - id: deals",
        "    type: query",
        "    sql: |",
        "      select stage, count(*) as deals, sum(amount) as amount",
        "      from deals",
        f"      where updated_at >= :since and stage in ('{stages[0]}', '{stages[1]}', '{stages[2]}')",
        "      group by stage order by stage",
        "    params:",
        "      since: \"{{ run.started_at - days(inputs.since_days) }}\"",
        "  - id: scored",
        "    type: evaluate",
        "    depends_on: [partners]",
        "    for_each: steps.partners.rows",
        "    assign:",
        f"      fit: {_q(fit)}",
        f"      track: {_q(track)}",
        "  - id: message",
        "    type: template",
        "    depends_on: [scored]",
        "    format: markdown",
        "    source: |",
        f"      Hello {{{{ item.contact_name }}}}, ({n})",
        "",
        "      Welcome to the {{ item.tier }} track: your fit score is {{ steps.scored.output.fit }}"
        f" and your partner manager will reach out within {rng.randrange(2, 10)} days.",
        "      {% if steps.scored.output.track != 'self-serve' %}You are on the "
        "{{ steps.scored.output.track }} track.{% endif %}",
        "  - id: send",
        "    type: communicate",
        "    depends_on: [message]",
        "    when: steps.scored.output.fit >= inputs.min_fit",
        "    channel: email",
        "    to: \"{{ item.contact_email }}\"",
        f"    subject: \"Welcome, {{{{ item.name }}}} (review {n})\"",
        "    body: \"{{ steps.message.output }}\"",
        "    on_error: {action: skip}",
        "  - id: summary",
        "    type: evaluate",
        "    depends_on: [scored, send]",
        "    collect: true",
        "    expression: >-",
        "      {'partners': steps.scored.output | length,",
        "       'welcomed': steps.send.output | sum(start=[]) | length,",
        f"       'best': (steps.scored.output | map(attribute='fit') | list + [{rng.randrange(0, 5)}]) | max}}",
        "  - id: pipeline",
        "    type: evaluate",
        "    depends_on: [deals]",
        "    expression: >-",
        "      {'deals': steps.deals.rows | sum(attribute='deals'),",
        f"       'amount': (steps.deals.rows | sum(attribute='amount')) * {rng.choice((1, 1.0, 0.9, 1.1))}}}",
        "  - id: digest",
        "    type: template",
        "    depends_on: [summary, pipeline]",
        "    format: markdown",
        "    source: |",
        f"      *Partner review {n}* ({{{{ inputs.region }}}}, last {{{{ inputs.since_days }}}} days)",
        "      - partners scored: {{ steps.summary.output.partners }}, welcomed: {{ steps.summary.output.welcomed }}",
        "      - best fit: {{ steps.summary.output.best }}",
        "      - open pipeline: {{ steps.pipeline.output.deals }} deals, {{ steps.pipeline.output.amount | money }}",
        "      {% for p in steps.scored.output %}- {{ p.name }} ({{ p.tier }}): fit {{ p.fit }}",
        "      {% endfor %}",
        "  - id: notify",
        "    type: communicate",
        "    depends_on: [digest]",
        "    channel: slack",
        f"    to: \"{channel}\"",
        f"    subject: Partner review {n}",
        "    body: \"{{ steps.digest.output }}\"",
        f"    on_error: {{action: retry, max_attempts: {rng.randrange(3, 6)}, delay_seconds: 2, "
        "backoff: exponential, jitter: full}",
        "  - id: crm_sync",
        "    type: webhook",
        "    depends_on: [summary]",
        "    when: inputs.push_to_crm",
        f"    url: \"https://crm.example.com/hooks/partner-review/{n}\"",
        "    json:",
        "      playbook: \"{{ run.playbook }}\"",
        "      partners: \"{{ steps.summary.output.partners }}\"",
        "      welcomed: \"{{ steps.summary.output.welcomed }}\"",
        "    sign: true",
        "    on_error: {action: abort}",
    ]


def _trivial_steps(n: int) -> list[str]:
    """The same graph, every step a small `evaluate` (the work is next to nothing)."""

    def ev(step: str, deps: list[str], expression: str, extra: str = "") -> list[str]:
        lines = [f"  - id: {step}", "    type: evaluate"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        if extra:
            lines.append(extra)
        return [*lines, f"    expression: {_q(expression)}"]

    return [
        *ev("partners", [], f"{{'rows': range(inputs.batch) | list, 'n': {n}}}"),
        *ev("deals", [], "{'amount': 1}"),
        "  - id: scored",
        "    type: evaluate",
        "    depends_on: [partners]",
        "    for_each: steps.partners.output.rows",
        "    expression: item + 1",
        *ev("message", ["scored"], "steps.scored.output * 2"),
        *ev("send", ["message"], "steps.message.output + 1",
            "    when: steps.scored.output >= 0\n    on_error: {action: skip}"),
        *ev("summary", ["scored", "send"], "steps.send.output | sum", "    collect: true"),
        *ev("pipeline", ["deals"], "steps.deals.output.amount"),
        *ev("digest", ["summary", "pipeline"], "steps.summary.output + steps.pipeline.output"),
        *ev("notify", ["digest"], "steps.digest.output",
            "    on_error: {action: retry, max_attempts: 3, delay_seconds: 2, backoff: exponential}"),
        *ev("crm_sync", ["summary"], "steps.summary.output",
            "    when: inputs.push_to_crm\n    on_error: {action: abort}"),
    ]


def playbook_yaml(n: int, *, trivial: bool = False) -> str:
    rng = random.Random(n)
    steps = _trivial_steps(n) if trivial else _real_steps(n, rng)
    return "\n".join([*_header(n, rng, trivial), "steps:", *steps]) + "\n"


def write_playbooks(folder: Path, count: int, *, trivial: bool = False, start: int = 0) -> list[Path]:
    """Write playbooks ``start .. start+count-1`` as ``<id>.yaml`` files; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(start, start + count):
        path = folder / f"{playbook_id(n, trivial)}.yaml"
        path.write_text(playbook_yaml(n, trivial=trivial), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--trivial", action="store_true", help="evaluate-only steps, same graph")
    args = parser.parse_args()
    paths = write_playbooks(args.out, args.count, trivial=args.trivial)
    print(f"wrote {len(paths)} playbooks of {STEPS} steps to {args.out}")


if __name__ == "__main__":
    main()
