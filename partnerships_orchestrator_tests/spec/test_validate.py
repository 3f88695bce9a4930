"""Every class of bad input: a small file beside what its one message must say.

Each row names a file under ``cases/bad/``, loaded together with the valid documents of
``cases/good/`` (so dataset references have something to resolve against), and pins the
problem's line, column and path, the substrings of its message (the offending value included)
and of its hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from partnerships_orchestrator.spec.loader import load_catalog

CASES = Path(__file__).parent / "cases"
GOOD = CASES / "good"
TEMPLATES = CASES / "templates"
GOOD_DOCUMENTS = 7


@dataclass(frozen=True)
class Case:
    file: str
    line: int
    column: int
    path: str
    message: tuple[str, ...]
    hint: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.file


CASES_TABLE = [
    # -- the spec's "Bad input" list
    Case(
        "not_yaml.yaml",
        5,
        10,
        "<document>",
        ("not valid YAML", "quoted scalar starts here and is never closed", "end of stream"),
        ('closing `"`',),
    ),
    Case(
        "unclosed_quote.yaml",
        8,
        17,
        "<document>",
        ("not valid YAML", "quoted scalar starts here and is never closed"),
        ("closing `'`",),
    ),
    Case(
        "unclosed_bracket.yaml",
        4,
        5,
        "<document>",
        ("not valid YAML", "flow mapping starts here and is never closed", "expected ',' or '}'"),
        ("closing `}`",),
    ),
    Case("not_json.json", 5, 3, "<document>", ("not valid JSON", "Expecting value")),
    Case(
        "unknown_key.yaml",
        8,
        5,
        "steps[1].dependson",
        ("unknown key `dependson`",),
        ("did you mean `depends_on`?",),
    ),
    Case("unknown_key.json", 4, 57, "steps[0].limt", ("unknown key `limt`",), ("`limit`",)),
    Case(
        "second_document.yaml",
        8,
        33,
        "metrics[0].tagret",
        ("unknown key `tagret`",),
        ("did you mean `target`?",),
    ),
    Case(
        "unknown_kind.yaml",
        1,
        7,
        "kind",
        ("unknown kind `playbok`",),
        ("did you mean `playbook`?", "`sync`", "`connections`"),
    ),
    Case(
        "unknown_step_type.yaml",
        4,
        11,
        "steps[0].type",
        ("unknown step type `querry`",),
        ("did you mean `query`?", "`evaluate`", "`webhook`"),
    ),
    Case(
        "unknown_trigger_type.yaml",
        3,
        11,
        "triggers[0].type",
        ("unknown trigger type `crn`",),
        ("did you mean `cron`?", "`manual`"),
    ),
    Case(
        "duplicate_doc_id.yaml",
        6,
        5,
        "id",
        ("duplicate id `twice`", "playbook in", "duplicate_doc_id.yaml"),
        ("unique across the folder",),
    ),
    Case(
        "duplicate_step_id.yaml",
        4,
        10,
        "steps[1].id",
        ("duplicate step id `fetch`",),
        ("`steps[0]` already has it",),
    ),
    Case(
        "depends_on_unknown.yaml",
        8,
        18,
        "steps[1].depends_on[0]",
        ("`depends_on` names no step `scord`",),
        ("did you mean `scored`?",),
    ),
    Case(
        "cycle.yaml",
        4,
        66,
        "steps[1].depends_on[1]",
        ("dependency cycle: a -> c -> b -> a",),
        ("each step depends on the next",),
    ),
    Case(
        "expression_syntax.yaml",
        9,
        17,
        "steps[1].expression",
        ("expression `steps.fetch.output.count >` does not parse", "unexpected 'end of template'"),
    ),
    Case(
        "template_syntax.yaml",
        7,
        14,
        "steps[0].subject",
        ("template `Hello {{ run.id` does not parse", "end of print statement"),
    ),
    Case(
        "unknown_step_ref.yaml",
        11,
        11,
        "steps[1].body",
        ("unknown step `scord`", "{{ steps.scord.output }}"),
        ("did you mean `scored`?",),
    ),
    Case(
        "missing_template.yaml",
        5,
        15,
        "steps[0].template",
        ("template file `messages/welcom.md.j2` not found",),
        ("did you mean `messages/welcome.md.j2`?",),
    ),
    Case(
        "unknown_dataset_trigger.yaml",
        3,
        30,
        "triggers[0].dataset",
        ("unknown dataset `hubspot_compnies`",),
        ("did you mean `hubspot_companies`?",),
    ),
    # -- files that are not documents
    Case("not_utf8.yaml", 1, 1, "<document>", ("not UTF-8 text",)),
    Case("not_a_mapping.yaml", 1, 1, "<document>", ("must be a mapping", "a-list")),
    Case(
        "duplicate_key.yaml",
        6,
        5,
        "steps[0].sql",
        ("duplicate key `sql`", "only the last one would be kept"),
        ("first given at line 5, column 5",),
    ),
    # -- shapes the models refuse
    Case(
        "missing_key.yaml",
        3,
        5,
        "triggers[0].cron",
        ("missing required key `cron`",),
        ("Five-field cron expression",),
    ),
    Case(
        "missing_step_type.yaml",
        3,
        5,
        "steps[0]",
        ("missing required key `type`",),
        ("`query`", "`communicate`"),
    ),
    Case(
        "wrong_type.yaml",
        6,
        22,
        "steps[0].timeout_seconds",
        ("invalid value `soon` for `timeout_seconds`", "expected a number"),
    ),
    Case(
        "bad_choice.yaml",
        5,
        14,
        "steps[0].channel",
        ("invalid value `fax` for `channel`",),
        ("`email`", "`sms`", "`slack`", "`teams`"),
    ),
    Case(
        "bad_id.yaml",
        1,
        5,
        "id",
        ("invalid id `Partner Onboarding`",),
        ("lower-case letters", "`partner-onboarding`"),
    ),
    Case(
        "bad_recipients.yaml",
        6,
        9,
        "steps[0].to",
        ('invalid value `{"team": "ops"}` for `to`', "a string or a list of strings"),
    ),
    Case("sql_and_object.yaml", 3, 5, "steps[0]", ("`sql`", "`object`")),
    Case(
        "owners_not_list.yaml",
        2,
        9,
        "owners",
        ("invalid value `partner-ops` for `owners`", "expected a list"),
    ),
    # -- ids and the step graph
    Case(
        "step_id_collision.yaml",
        4,
        10,
        "steps[1].id",
        ("`send-welcome` collides with `send_welcome`", "Dagster op `send_welcome`"),
        ("rename one",),
    ),
    Case(
        "asset_collision.yaml",
        2,
        5,
        "id",
        ("asset `hubspot_contacts` is also made by the sync `hubspot`", "hubspot.yaml"),
    ),
    Case(
        "collect_and_for_each.yaml",
        8,
        14,
        "steps[1].collect",
        ("cannot both fan out (`for_each`) and `collect`",),
        ("split it in two",),
    ),
    Case(
        "nested_fanout.yaml",
        12,
        15,
        "steps[2].for_each",
        ("nested fan-out: `each_again` already runs once per item of `each`",),
        ("add a `collect: true` step first",),
    ),
    Case(
        "collect_without_fanout.yaml",
        7,
        14,
        "steps[1].collect",
        ("`collect: true` but `total` depends on no step that fans out",),
    ),
    Case(
        "two_fanouts.yaml",
        6,
        44,
        "steps[3].depends_on",
        ("`both` depends on steps of different fan-outs: `left`, `right`",),
    ),
    Case(
        "mapped_needs_own_collect.yaml",
        6,
        45,
        "steps[3].depends_on",
        ("`again` runs once per item of `each`", "`total`, which collects that same fan-out"),
        ("make `again` a `collect: true` step",),
    ),
    # -- expressions
    Case(
        "expression_braces.yaml",
        6,
        11,
        "steps[0].when",
        ("expression `{{ true }}` does not parse",),
        ("`when` takes a bare expression: drop the `{{ }}`",),
    ),
    Case(
        "not_upstream_ref.yaml",
        9,
        18,
        "steps[2].json.rows",
        ("step `other` is not upstream of `tell`",),
        ("add `other` to `depends_on` of `tell`",),
    ),
    Case(
        "unknown_input.yaml",
        8,
        21,
        "steps[0].params.since",
        ("unknown input `since_dys`",),
        ("did you mean `since_days`?",),
    ),
    Case(
        "unknown_name.yaml",
        8,
        10,
        "steps[1].url",
        ("unknown name `itme`",),
        ("did you mean `item`?",),
    ),
    Case(
        "item_outside_fanout.yaml",
        6,
        9,
        "steps[0].to",
        ("`item` is only defined inside a fan-out", "{{ item.email }}"),
        ("set `for_each` on `tell`",),
    ),
    Case(
        "row_outside_assign.yaml",
        7,
        17,
        "steps[1].expression",
        ("`row` is only defined in `assign` and `filter`", "row.count"),
    ),
    Case(
        "unknown_filter.yaml",
        7,
        17,
        "steps[1].expression",
        ("unknown filter `lenght`",),
        ("did you mean `length`?",),
    ),
    Case(
        "inline_template_name.yaml",
        5,
        13,
        "steps[0].source",
        ("unknown name `titel`",),
        ("did you mean `title`?",),
    ),
    Case(
        "sql_interpolated.yaml",
        7,
        10,
        "steps[0].sql",
        ("SQL text is never interpolated",),
        ("`:name` placeholders and `params`",),
    ),
    # -- references to templates and datasets
    Case(
        "missing_message_template.yaml",
        7,
        15,
        "steps[0].template",
        ("template file `messages/goodbye.md.j2` not found",),
    ),
    Case(
        "unknown_dataset_source.yaml",
        5,
        13,
        "steps[0].source",
        ("unknown dataset `partner_engagment`",),
        ("did you mean `partner_engagement`?",),
    ),
    Case(
        "unknown_report_data.yaml",
        4,
        28,
        "data[1]",
        ("unknown dataset `deal_velocity`",),
        ("known datasets and assets", "`hubspot_deals`"),
    ),
    # -- asset documents
    Case(
        "unknown_sync_object.yaml",
        4,
        21,
        "objects[1]",
        ("unknown salesforce object `opportunites`",),
        ("did you mean `opportunities`?",),
    ),
    Case(
        "unknown_sync_property.yaml",
        6,
        21,
        "properties.contacts[1]",
        ("unknown hubspot contacts property `lifecylestage`",),
        ("did you mean `lifecyclestage`?",),
    ),
    Case(
        "dataset_sql_syntax.yaml",
        3,
        6,
        "sql",
        ("SQL does not parse", "`where`", "line 1, column 21"),
        ("one SELECT",),
    ),
    Case(
        "dataset_unknown_table.yaml",
        3,
        6,
        "sql",
        ("reads table `partnrs`", "neither an asset nor a warehouse table"),
        ("did you mean `partners`?", "`sources`"),
    ),
    Case(
        "dataset_cycle.yaml",
        8,
        6,
        "sql",
        ("dependency cycle between assets: rank_input -> ranked_partners -> rank_input",),
        ("break the loop",),
    ),
    Case(
        "metric_unknown_table.yaml",
        4,
        30,
        "metrics[0].sql",
        ("reads table `hubspot_deal`",),
        ("did you mean `hubspot_deals`?",),
    ),
    Case(
        "dataset_replaces_warehouse_table.yaml",
        2,
        5,
        "id",
        ("`partners` would replace the warehouse table `partners`",),
        ("choose another id",),
    ),
    Case(
        "dataset_unknown_dep.yaml",
        4,
        8,
        "deps[0]",
        ("unknown dataset `hubspot_contact`",),
        ("did you mean `hubspot_contacts`?",),
    ),
    # -- schedules and inputs
    Case(
        "bad_cron.yaml",
        3,
        24,
        "triggers[0].cron",
        ("invalid cron `0 9 * *`",),
        ("five fields",),
    ),
    Case("bad_schedule_cron.yaml", 6, 9, "schedule.cron", ("invalid cron `61 * * * *`",)),
    Case(
        "bad_timezone.yaml",
        3,
        49,
        "triggers[0].timezone",
        ("unknown timezone `Europe/Berln`",),
        ("did you mean `Europe/Berlin`?",),
    ),
    Case(
        "default_wrong_type.yaml",
        3,
        40,
        "inputs.since_days.default",
        ("default `seven` of input `since_days` is not an integer",),
        ("`type: integer`",),
    ),
    Case(
        "default_not_in_enum.yaml",
        6,
        14,
        "inputs.tier.default",
        ("default `bronze` of input `tier` is not one of its `enum`",),
        ("`gold`", "`silver`"),
    ),
    Case(
        "cron_required_input.yaml",
        5,
        15,
        "inputs.partner_id",
        ("required input `partner_id` has no default", "cron trigger"),
        ("give it a `default`",),
    ),
]


def test_every_bad_file_has_a_row() -> None:
    assert {case.file for case in CASES_TABLE} == {p.name for p in (CASES / "bad").iterdir()}


@pytest.mark.parametrize("case", CASES_TABLE, ids=str)
def test_bad_file_gets_one_located_problem(case: Case) -> None:
    bad = CASES / "bad" / case.file
    catalog = load_catalog([GOOD, bad], templates_dir=TEMPLATES)

    assert [p.file for p in catalog.problems] == [str(bad)], "\n".join(map(str, catalog.problems))
    problem = catalog.problems[0]
    assert (problem.line, problem.column, problem.path) == (case.line, case.column, case.path)
    assert str(problem).startswith(f"{bad}:{case.line}:{case.column}: {case.path}: ")
    for text in case.message:
        assert text in problem.message
    for text in case.hint:
        assert problem.hint is not None and text in problem.hint
    assert catalog.invalid_files == {str(bad): catalog.problems}
    assert len(catalog.documents) == GOOD_DOCUMENTS  # the bad file hides nothing else


def test_the_good_folder_has_no_problems() -> None:
    catalog = load_catalog([GOOD], templates_dir=TEMPLATES)
    assert catalog.problems == []
    assert len(catalog.documents) == GOOD_DOCUMENTS


MANY_PROBLEMS = """\
id: many-problems
triggers:
  - {type: cron, cron: "0 9 * *"}
steps:
  - id: fetch
    type: query
    sql: select 1
    dependson: [nothing]
  - id: score
    type: evaluate
    depends_on: [fetch, judge]
    expression: "steps.judge.output +"
  - id: judge
    type: evaluate
    depends_on: [score, fetc]
    expression: "steps.score.output"
"""


def test_one_file_reports_all_its_problems_in_line_order(tmp_path: Path) -> None:
    bad = tmp_path / "many.yaml"
    bad.write_text(MANY_PROBLEMS)
    catalog = load_catalog([bad])
    assert [(p.line, p.path, p.message.split(":")[0]) for p in catalog.problems] == [
        (3, "triggers[0].cron", "invalid cron `0 9 * *`"),
        (8, "steps[0].dependson", "unknown key `dependson`"),
        (11, "steps[1].depends_on[1]", "dependency cycle"),
        (12, "steps[1].expression", "expression `steps.judge.output +` does not parse"),
        (15, "steps[2].depends_on[1]", "`depends_on` names no step `fetc`"),
    ]


def test_a_broken_step_still_counts_in_the_graph(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        "id: broken-step\n"
        "steps:\n"
        "  - {id: fetch, type: query, depends_on: [nope]}\n"
        "  - {id: use, type: evaluate, depends_on: [fetch], expression: steps.fetch.output}\n"
    )
    problems = load_catalog([bad]).problems
    assert [p.path for p in problems] == ["steps[0]", "steps[0].depends_on[0]"]
    assert problems[0].message.startswith("a query step needs")  # the model's own words
    assert problems[1].message == "`depends_on` names no step `nope`"  # no cascade from `use`


@pytest.mark.parametrize(
    ("expression", "ok"),
    [
        ("steps.fetch.output.rows | length > 0", True),
        ("steps['fetch'].output.count", True),
        ("inputs.since_days * 2 and now() > days(1) + run.started_at", True),
        ("trigger.payload.id in [1, 2]", True),
        ("range(3) | list", True),
        ("steps.fetch.output }} {{ 1", False),
        ("steps.later.output", False),
        ("inputs.nope", False),
        ("undefined_name", False),
        ("inputs.since_days is odder", False),
    ],
)
def test_when_expressions(tmp_path: Path, expression: str, ok: bool) -> None:
    file = tmp_path / "when.yaml"
    file.write_text(
        "id: when-check\n"
        "inputs: {since_days: {type: integer, default: 1}}\n"
        "steps:\n"
        "  - {id: fetch, type: query, sql: select 1}\n"
        f"  - {{id: gate, type: evaluate, depends_on: [fetch], expression: '1', when: {expression!r}}}\n"
        "  - {id: later, type: evaluate, depends_on: [gate], expression: '2'}\n"
    )
    catalog = load_catalog([file])
    assert catalog.ok is ok, "\n".join(map(str, catalog.problems))
    if not ok:
        assert [p.path for p in catalog.problems] == ["steps[1].when"]


def test_a_step_may_read_any_step_upstream_not_only_direct_ones(tmp_path: Path) -> None:
    file = tmp_path / "chain.yaml"
    file.write_text(
        "id: chain\n"
        "steps:\n"
        "  - {id: a, type: query, sql: select 1}\n"
        "  - {id: b, type: evaluate, depends_on: [a], expression: steps.a.output.count}\n"
        "  - {id: c, type: evaluate, depends_on: [b], expression: steps.a.output.count + 1}\n"
    )
    assert load_catalog([file]).problems == []


def test_a_reference_to_a_later_step_says_it_runs_after(tmp_path: Path) -> None:
    file = tmp_path / "later.yaml"
    file.write_text(
        "id: later\n"
        "steps:\n"
        "  - {id: a, type: query, sql: select 1, params: {x: '{{ steps.b.output }}'}}\n"
        "  - {id: b, type: evaluate, depends_on: [a], expression: '1'}\n"
    )
    (problem,) = load_catalog([file]).problems
    assert (problem.line, problem.column, problem.path) == (3, 53, "steps[0].params.x")
    assert problem.hint == "`b` runs after `a`; a step reads only steps it depends on"


def test_dashed_step_ids_need_brackets(tmp_path: Path) -> None:
    file = tmp_path / "dashed.yaml"
    file.write_text(
        "id: dashed\n"
        "steps:\n"
        "  - {id: new-partners, type: query, sql: select 1}\n"
        "  - {id: b, type: evaluate, depends_on: [new-partners], expression: steps.new-partners}\n"
    )
    problems = load_catalog([file]).problems
    (problem,) = [p for p in problems if p.message.startswith("unknown step `new`")]
    assert (
        problem.hint == "write `steps['new-partners']`: in `steps.new-partners` the `-` is a minus"
    )


def test_a_crm_query_needs_its_connection_configured(tmp_path: Path) -> None:
    file = tmp_path / "crm.yaml"
    file.write_text(
        "id: crm\nsteps:\n  - {id: fetch, type: query, source: salesforce, object: Account}\n"
    )
    (problem,) = load_catalog([file]).problems
    assert (problem.line, problem.column, problem.path) == (3, 38, "steps[0].source")
    assert "source `salesforce` is not configured in a connections document" in problem.message
    assert "kind: connections" in (problem.hint or "")
