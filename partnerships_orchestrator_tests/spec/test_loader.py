"""Loading folders: what loads, what is reported, where, and how fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from partnerships_orchestrator.spec import expression_checks, source
from partnerships_orchestrator.spec.loader import (
    discover,
    load_catalog,
    validate_playbook_expressions,
)
from partnerships_orchestrator.spec.models import Playbook
from partnerships_orchestrator.spec.problems import SpecError, SpecProblem, format_path

CASES = Path(__file__).parent / "cases"
GOOD = CASES / "good"
TEMPLATES = CASES / "templates"

PLAYBOOK = "id: {id}\nsteps:\n  - {{id: fetch, type: query, sql: select 1}}\n"
BAD_EXPRESSIONS = """\
id: bad-expressions
steps:
  - {id: fetch, type: query, sql: select 1}
  - id: use
    type: evaluate
    depends_on: [fetch]
    expression: "steps.fetch.output +"
    when: "steps.nope.output"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- files and folders


def test_folders_are_read_recursively_sorted_and_hidden_files_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    for name in ("b.yaml", "a/c.yml", "a/d.json", ".hidden/e.yaml", "notes.md", "z.YAML"):
        write(folder, name, "")
    extra = write(tmp_path / "elsewhere", "x.yaml", "")
    found = [p.relative_to(tmp_path).as_posix() for p in discover([folder, extra, extra])]
    assert found == [
        "playbooks/a/c.yml",
        "playbooks/a/d.json",
        "playbooks/b.yaml",
        "playbooks/z.YAML",
        "elsewhere/x.yaml",
    ]


def test_a_path_that_does_not_exist_is_a_problem(tmp_path: Path) -> None:
    catalog = load_catalog([tmp_path / "missing.yaml"])
    assert [str(p) for p in catalog.problems] == [
        f"{tmp_path / 'missing.yaml'}:1:1: <document>: no such file or folder"
    ]


def test_the_spec_examples_load_into_a_catalog() -> None:
    catalog = load_catalog([GOOD], templates_dir=TEMPLATES)
    assert catalog.ok
    assert [p.id for p in catalog.playbooks()] == ["engagement-digest", "partner-onboarding"]
    assert [m.id for m in catalog.by_kind("report")] == ["quarterly-partner-review"]
    assert catalog.get("hubspot") is not None and catalog.get("nope") is None
    assert catalog.source_of("partner-health") == str(GOOD / "research.yaml")
    assert catalog.source_of("nope") is None
    assert catalog.asset_ids() == {
        "hubspot_contacts",
        "hubspot_companies",
        "hubspot_deals",
        "partner_engagement",
        "quarterly-partner-review",
        "partner-health",
    }
    research = [
        (d.model.id, d.index) for d in catalog.documents if d.file.endswith("research.yaml")
    ]
    assert research == [
        ("partner_engagement", 0),
        ("quarterly-partner-review", 1),
        ("partner-health", 2),
    ]


def test_one_bad_file_never_stops_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", PLAYBOOK.format(id="first"))
    bad = write(tmp_path, "b.yaml", "id: broken\nsteps: [\n")
    write(tmp_path, "c.yaml", PLAYBOOK.format(id="third"))
    catalog = load_catalog([tmp_path])
    assert [p.id for p in catalog.playbooks()] == ["first", "third"]
    assert list(catalog.invalid_files) == [str(bad)]
    with pytest.raises(SpecError) as raised:
        catalog.raise_for_problems()
    assert str(raised.value) == str(catalog.problems[0])


def test_a_file_with_one_bad_document_contributes_none(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "multi.yaml",
        PLAYBOOK.format(id="fine") + "---\n" + PLAYBOOK.format(id="also-fine") + "oops: 1\n",
    )
    catalog = load_catalog([file])
    assert catalog.documents == []
    (problem,) = catalog.problems
    assert (problem.line, problem.path, problem.message) == (8, "oops", "unknown key `oops`")


def test_problems_come_in_file_then_line_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "id: b\nsteps:\n  - {id: x, type: query, sql: s, dependson: []}\n")
    write(tmp_path, "a.yaml", "id: a\nsteps:\n  - {id: x, type: query, sql: s, bogus: 1}\nfoo: 2\n")
    catalog = load_catalog([tmp_path])
    assert [(Path(p.file).name, p.line) for p in catalog.problems] == [
        ("a.yaml", 3),
        ("a.yaml", 4),
        ("b.yaml", 3),
    ]


def test_duplicate_ids_across_files_name_both_and_keep_the_first(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", PLAYBOOK.format(id="same"))
    second = write(tmp_path, "b.yaml", "kind: dataset\nid: same\nsql: select 1\n")
    catalog = load_catalog([tmp_path])
    assert [d.file for d in catalog.documents] == [str(first)]
    (problem,) = catalog.problems
    assert str(problem) == (
        f"{second}:2:5: id: duplicate id `same`: the playbook in {first} has it too "
        "(ids are unique across the folder, whatever the kind; rename one)"
    )


def test_ids_that_differ_only_by_dash_and_underscore_collide(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", PLAYBOOK.format(id="partner-onboarding"))
    write(tmp_path, "b.yaml", PLAYBOOK.format(id="partner_onboarding"))
    (problem,) = load_catalog([tmp_path]).problems
    assert "both become the Dagster name `partner_onboarding`" in problem.message


# ---------------------------------------------------------------- JSON and YAML details


def test_json_files_hold_one_document_or_an_array_of_them(tmp_path: Path) -> None:
    docs = [
        {"kind": "dataset", "id": "one", "sql": "select 1"},
        {"kind": "dataset", "id": "two", "sql": "select 2", "sqll": "typo"},
    ]
    file = write(tmp_path, "docs.json", json.dumps(docs, indent=2))
    (problem,) = load_catalog([file]).problems
    assert (problem.line, problem.column, problem.path) == (11, 5, "sqll")
    file.write_text(json.dumps(docs[:1]))
    assert [d.model.id for d in load_catalog([file]).documents] == ["one"]


def test_json_duplicate_keys_are_found(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "dup.json",
        '{\n  "kind": "dataset",\n  "id": "d",\n  "id": "e",\n  "sql": "select 1"\n}',
    )
    (problem,) = load_catalog([file]).problems
    assert (problem.line, problem.column, problem.message) == (
        4,
        3,
        "duplicate key `id`: only the last one would be kept",
    )


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = (
        "id: merged\nsteps:\n"
        "  - {id: a, type: evaluate, expression: '1', on_error: &p {action: retry, max_attempts: 2}}\n"
        "  - {id: b, type: evaluate, expression: '2', on_error: {<<: *p, max_attempts: 5}}\n"
    )
    catalog = load_catalog([write(tmp_path, "merge.yaml", text)])
    assert catalog.problems == []
    second = catalog.documents[0].model.steps[1].on_error  # type: ignore[union-attr]
    assert (second.action, second.max_attempts) == ("retry", 5)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("id: r\nowners: &o [*o]\n", 2, 9, "found a recursive alias"),
        ("id: u\ntags: {[1]: 2}\n", 2, 8, "found unhashable key"),
        ("id: t\nname: !!python/object:os.system x\n", 2, 7, "could not determine a constructor"),
        ("id: d\nname: 'a'\n  b: c\n", 3, 3, "did not find expected key"),
    ],
    ids=["recursive alias", "unhashable key", "python tag", "bad indentation"],
)
def test_yaml_that_cannot_be_a_document_is_refused_where_it_goes_wrong(
    tmp_path: Path, text: str, line: int, column: int, message: str
) -> None:
    (problem,) = load_catalog([write(tmp_path, "bad.yaml", text)]).problems
    assert (problem.line, problem.column) == (line, column)
    assert problem.message.startswith("not valid YAML: ") and message in problem.message


def test_aliases_share_values_across_the_document(tmp_path: Path) -> None:
    text = (
        "kind: connections\nid: shared\nconnections:\n"
        "  email: &mail {provider: outbox}\n"
        "  sms: *mail\n"
        "---\nkind: connections\nid: other\nconnections: {email: {provider: outbox}}\n"
    )
    catalog = load_catalog([write(tmp_path, "a.yaml", text)])
    shared, other = (d.model for d in catalog.documents)
    assert shared.connections["sms"] == shared.connections["email"]  # type: ignore[union-attr]
    assert other.connections == {"email": {"provider": "outbox"}}  # type: ignore[union-attr]


def test_secret_references_are_not_expanded_and_positions_stay_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONG_VALUE", "x" * 100)
    text = (
        "kind: connections\nid: env\n"
        'connections: {warehouse: {url: "${env:LONG_VALUE}"}}\n'
        "bogus: ${env:LONG_VALUE}\n"
    )
    catalog = load_catalog([write(tmp_path, "env.yaml", text)])
    (problem,) = catalog.problems
    assert (problem.line, problem.column) == (4, 1)


def test_an_empty_file_or_document_is_nothing(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "comments.yaml", "# nothing yet\n---\n")
    catalog = load_catalog([tmp_path])
    assert (catalog.documents, catalog.problems) == ([], [])


# ---------------------------------------------------------------- expression checks on demand


def test_the_worker_mode_never_parses_jinja(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: str) -> None:
        raise AssertionError(f"parsed {source!r}")

    monkeypatch.setattr(expression_checks, "expression_uses", refuse)
    monkeypatch.setattr(expression_checks, "template_uses", refuse)
    file = write(tmp_path, "bad.yaml", BAD_EXPRESSIONS)
    catalog = load_catalog([file, GOOD], templates_dir=TEMPLATES, check_expressions=False)
    assert catalog.problems == []
    assert len(catalog.playbooks()) == 3


def test_graph_problems_are_found_in_worker_mode_too(tmp_path: Path) -> None:
    file = write(tmp_path, "cycle.yaml", (CASES / "bad" / "cycle.yaml").read_text())
    (problem,) = load_catalog([file], check_expressions=False).problems
    assert "dependency cycle" in problem.message


def test_expressions_of_one_playbook_can_be_checked_later(tmp_path: Path) -> None:
    file = write(tmp_path, "bad.yaml", BAD_EXPRESSIONS)
    eager = load_catalog([file]).problems
    lazy_catalog = load_catalog([file], check_expressions=False)
    (playbook,) = lazy_catalog.playbooks()
    lazy = validate_playbook_expressions(playbook, lazy_catalog)
    assert lazy == eager
    assert [(p.line, p.path) for p in lazy] == [(7, "steps[1].expression"), (8, "steps[1].when")]


# ---------------------------------------------------------------- the problem type


def test_a_problem_renders_as_file_line_col_path_message_hint() -> None:
    problem = SpecProblem("p.yaml", 3, 5, "steps[2].dependson", "unknown key `dependson`", "x")
    assert str(problem) == "p.yaml:3:5: steps[2].dependson: unknown key `dependson` (x)"
    assert str(SpecProblem("p.yaml", 1, 1, "id", "bad")) == "p.yaml:1:1: id: bad"
    assert problem.as_dict() == {
        "file": "p.yaml",
        "line": 3,
        "column": 5,
        "path": "steps[2].dependson",
        "message": "unknown key `dependson`",
        "hint": "x",
    }
    error = SpecError([problem, SpecProblem("q.yaml", 1, 1, "id", "bad")])
    assert str(error).splitlines() == [str(problem), "q.yaml:1:1: id: bad"]


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "<document>"),
        (("steps", 2, "depends_on", 0), "steps[2].depends_on[0]"),
        (("inputs", "since_days", "default"), "inputs.since_days.default"),
        (("steps", 0, "headers", "X-Api-Key"), "steps[0].headers.X-Api-Key"),
        (("tags", "team name"), 'tags["team name"]'),
    ],
)
def test_paths_read_like_python(loc: tuple[str | int, ...], path: str) -> None:
    assert format_path(loc) == path


# ---------------------------------------------------------------- speed


def generated_playbook(n: int) -> str:
    return (
        f"id: generated-{n}\n"
        "triggers: [{type: cron, cron: '0 9 * * 1-5', timezone: Europe/Berlin}]\n"
        "inputs: {since_days: {type: integer, default: 7}}\n"
        "steps:\n"
        "  - {id: s0, type: query, sql: 'select * from t where d >= :since', "
        f"params: {{since: '{{{{ run.started_at - days(inputs.since_days + {n}) }}}}'}}}}\n"
        + "".join(
            f"  - {{id: s{i}, type: evaluate, depends_on: [s{i - 1}], "
            f"expression: 'steps.s{i - 1}.output.count + {n}', when: 'inputs.since_days > {i}'}}\n"
            for i in range(1, 10)
        )
    )


@pytest.mark.parametrize("check_expressions", [False, True])
def test_valid_files_are_never_reparsed_for_positions(
    tmp_path: Path, check_expressions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parse fast, locate only on error: the costly positioned parse (a SourceMap) is built for
    the one file with a problem, never for the 300 valid ones. Seconds are measured in
    benchmarks/compile.py, not here."""
    for n in range(300):
        write(tmp_path, f"p{n:04d}.yaml", generated_playbook(n))
    write(tmp_path, "zz-broken.yaml", "id: broken\nsteps:\n  - {id: a, type: nope}\n")
    mapped: list[str] = []
    original = source.SourceMap.__init__

    def counting(self: source.SourceMap, text: str, file: str) -> None:
        mapped.append(Path(file).name)
        original(self, text, file)

    monkeypatch.setattr(source.SourceMap, "__init__", counting)
    catalog = load_catalog([tmp_path], check_expressions=check_expressions)
    assert len(catalog.playbooks()) == 300
    assert all(isinstance(p, Playbook) and len(p.steps) == 10 for p in catalog.playbooks())
    assert [p.file.rsplit("/", 1)[-1] for p in catalog.problems] == ["zz-broken.yaml"]
    assert set(mapped) == {"zz-broken.yaml"}
