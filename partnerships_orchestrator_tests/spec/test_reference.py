"""The generated language reference and the editors' JSON Schema agree with the models.

``jsonschema`` is not a dependency, so the schema is checked by a small validator for exactly the
keywords the generated schema uses; a test fails if the schema starts using any other keyword.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from partnerships_orchestrator.expressions import FILTERS, HELPERS
from partnerships_orchestrator.spec.models import Document, DocumentBase, Model
from partnerships_orchestrator.spec.reference import (
    GENERATE_COMMAND,
    anchor,
    nested_models,
    render_reference,
    tagged_union,
)
from partnerships_orchestrator.spec.schema import document_schema
from partnerships_orchestrator.spec.source import JSON_SUFFIXES, YAML_SUFFIXES, parse_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE_FILE = REPO / "docs" / "language-reference.md"
PLAYBOOKS = REPO / "playbooks"
DOCUMENT = TypeAdapter(Document)


@pytest.fixture(scope="module")
def reference() -> str:
    return render_reference()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return document_schema()


# ---------------------------------------------------------------- the models, walked


def all_models() -> list[type[BaseModel]]:
    """Every model a document can contain, bases included, in discovery order."""
    union = tagged_union(Document)
    assert union is not None
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = list(union.members)
    while todo:
        model = todo.pop(0)
        if model in found:
            continue
        found.append(model)
        todo += [b for b in model.__mro__[1:] if _is_language_model(b)]
        for field in model.model_fields.values():
            for nested in nested_models(field.annotation):
                todo += list(getattr(nested, "members", [nested]))
    return found


def _is_language_model(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, Model) and cls is not Model


def declaring_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """The most basic language model in ``model``'s ancestry that has field ``name``."""
    owners = [c for c in model.__mro__ if _is_language_model(c) and name in c.model_fields]
    return owners[-1]


def section(reference: str, model: type[BaseModel]) -> str:
    start = reference.index(f'<a id="{anchor(model)}"></a>')
    end = reference.find('<a id="', start + 1)
    return reference[start : end if end != -1 else None]


MODELS = all_models()


# ---------------------------------------------------------------- the reference


def test_committed_reference_matches_the_models(reference: str) -> None:
    committed = REFERENCE_FILE.read_text(encoding="utf-8") if REFERENCE_FILE.exists() else ""
    assert committed == reference, (
        f"{REFERENCE_FILE.relative_to(REPO)} is out of date with the models; "
        f"regenerate it with `{GENERATE_COMMAND}`"
    )


def test_reference_is_deterministic(reference: str) -> None:
    assert render_reference() == reference


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_row_in_its_models_table(reference: str, model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        key = field.alias or name
        text = section(reference, declaring_model(model, name))
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, f"{model.__name__}.{name}: no single row for `{key}`"
        if field.description:
            assert " ".join(field.description.split()) in rows[0].replace("\\|", "|")
        if get_origin(field.annotation) is Literal:
            for value in get_args(field.annotation):
                assert f"`{value}`" in rows[0], f"{model.__name__}.{name}: `{value}` not listed"


def test_aliases_are_shown_instead_of_python_names(reference: str) -> None:
    assert "| `json` |" in reference
    assert "json_body" not in reference


def test_every_kind_has_a_section(reference: str) -> None:
    union = tagged_union(Document)
    assert union is not None
    for model in union.members:
        assert f'<a id="{anchor(model)}"></a>\n\n## kind: `' in reference
    assert f'<a id="{anchor(DocumentBase)}"></a>' in reference


def test_every_helper_and_filter_is_listed(reference: str) -> None:
    for name in HELPERS:
        assert re.search(rf"^- `{name}\(", reference, re.M), name
    for name in FILTERS:
        assert f"`value | {name}" in reference, name


def test_every_link_points_to_a_section(reference: str) -> None:
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', reference))
    anchors |= {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", reference, re.M)}
    targets = set(re.findall(r"\]\(#([^)]+)\)", reference))
    assert targets <= anchors, f"links without a section: {sorted(targets - anchors)}"


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


# ---------------------------------------------------------------- the JSON Schema


class SchemaViolation(Exception):
    pass


_CHECKED = {
    "$ref", "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "if", "then", "else", "not",
}  # fmt: skip
_ANNOTATIONS = {
    "$schema", "$id", "$defs", "title", "description", "markdownDescription", "default",
}  # fmt: skip
_VALUES = {"default", "const", "enum"}  # hold instance values, not schemas
_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip


def validate(value: Any, node: dict[str, Any], root: dict[str, Any], path: str = "") -> None:
    """Raise :class:`SchemaViolation` where ``value`` breaks ``node`` (a subset of 2020-12)."""
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        validate(value, target, root, path)
    if "type" in node:
        wanted = _TYPES[node["type"]]
        is_bool = isinstance(value, bool)
        if not isinstance(value, wanted) or (is_bool and node["type"] in ("integer", "number")):
            raise SchemaViolation(f"{path or '/'}: not of type {node['type']}")
    if "enum" in node and value not in node["enum"]:
        raise SchemaViolation(f"{path}: {value!r} not one of {node['enum']}")
    if "const" in node and value != node["const"]:
        raise SchemaViolation(f"{path}: {value!r} is not {node['const']!r}")
    if isinstance(value, dict):
        _object(value, node, root, path)
    if isinstance(value, list):
        for n, item in enumerate(value):
            if "items" in node:
                validate(item, node["items"], root, f"{path}/{n}")
        if len(value) < node.get("minItems", 0) or len(value) > node.get("maxItems", len(value)):
            raise SchemaViolation(f"{path}: wrong number of items")
    if isinstance(value, str):
        if "pattern" in node and not re.search(node["pattern"], value):
            raise SchemaViolation(f"{path}: {value!r} does not match {node['pattern']}")
        if len(value) < node.get("minLength", 0) or len(value) > node.get("maxLength", len(value)):
            raise SchemaViolation(f"{path}: wrong length")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _number(value, node, path)
    _combinators(value, node, root, path)


def _object(value: dict[str, Any], node: dict[str, Any], root: dict[str, Any], path: str) -> None:
    for key in node.get("required", []):
        if key not in value:
            raise SchemaViolation(f"{path}: missing required `{key}`")
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], root, f"{path}/{key}")
        elif extra is False:
            raise SchemaViolation(f"{path}: unknown key `{key}`")
        elif isinstance(extra, dict):
            validate(item, extra, root, f"{path}/{key}")


def _number(value: float, node: dict[str, Any], path: str) -> None:
    bounds = (
        ("minimum", lambda b: value >= b),
        ("maximum", lambda b: value <= b),
        ("exclusiveMinimum", lambda b: value > b),
        ("exclusiveMaximum", lambda b: value < b),
    )
    for keyword, ok in bounds:
        if keyword in node and not ok(node[keyword]):
            raise SchemaViolation(f"{path}: {value} breaks {keyword} {node[keyword]}")


def _passes(value: Any, node: dict[str, Any], root: dict[str, Any], path: str) -> bool:
    try:
        validate(value, node, root, path)
    except SchemaViolation:
        return False
    return True


def _combinators(value: Any, node: dict[str, Any], root: dict[str, Any], path: str) -> None:
    for sub in node.get("allOf", []):
        validate(value, sub, root, path)
    if "anyOf" in node and not any(_passes(value, s, root, path) for s in node["anyOf"]):
        raise SchemaViolation(f"{path}: matches none of anyOf")
    if "oneOf" in node and sum(_passes(value, s, root, path) for s in node["oneOf"]) != 1:
        raise SchemaViolation(f"{path}: does not match exactly one of oneOf")
    if "not" in node and _passes(value, node["not"], root, path):
        raise SchemaViolation(f"{path}: matches a `not` schema")
    if "if" in node:
        branch = "then" if _passes(value, node["if"], root, path) else "else"
        if branch in node:
            validate(value, node[branch], root, path)


def schema_accepts(schema: dict[str, Any], document: Any) -> bool:
    return _passes(document, schema, schema, "")


def models_accept(document: Any) -> bool:
    """What the loader decides: a mapping without `kind` is validated as a playbook."""
    if isinstance(document, dict) and "kind" not in document:
        document = {"kind": "playbook", **document}
    try:
        DOCUMENT.validate_python(document)
    except ValidationError:
        return False
    return True


def _keywords(node: Any, under_map: bool = False) -> set[str]:
    """Every keyword used in a schema (names inside ``properties``/``$defs`` are not keywords)."""
    if isinstance(node, list):
        return set().union(*(_keywords(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set() if under_map else set(node)
    for key, value in node.items():
        if under_map or key not in _VALUES:
            found |= _keywords(value, under_map=not under_map and key in ("properties", "$defs"))
    return found


def test_schema_uses_only_keywords_the_test_validator_checks(schema: dict[str, Any]) -> None:
    assert _keywords(schema) <= _CHECKED | _ANNOTATIONS


def test_schema_is_draft_2020_12_with_id_title_and_description(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]


def _playbook_documents() -> list[Any]:
    suffixes = YAML_SUFFIXES + JSON_SUFFIXES
    files = sorted(p for p in PLAYBOOKS.rglob("*") if p.suffix.lower() in suffixes)
    return [
        pytest.param(doc, id=f"{path.relative_to(PLAYBOOKS)}#{n}")
        for path in files
        for n, doc in enumerate(parse_file(path.read_text(encoding="utf-8"), str(path)).documents)
    ]


@pytest.mark.parametrize("document", _playbook_documents())
def test_schema_accepts_every_document_under_playbooks(
    schema: dict[str, Any], document: Any
) -> None:
    assert schema_accepts(schema, document)


STEPS: list[dict[str, Any]] = [
    {"id": "rows", "type": "query", "sql": "select 1 as x where :a = :a", "params": {"a": 1}},
    {"id": "scored", "type": "evaluate", "depends_on": ["rows"], "for_each": "steps.rows.rows",
     "assign": {"fit": "item.x * 2"}},
    {"id": "text", "type": "template", "depends_on": ["scored"], "source": "hi {{ item.x }}"},
    {"id": "mail", "type": "communicate", "depends_on": ["text"], "channel": "email",
     "to": "a@example.org", "body": "{{ steps.text.output }}", "on_error": {"action": "skip"}},
    {"id": "hook", "type": "webhook", "depends_on": ["mail"], "collect": True,
     "url": "https://hooks.example.org/x", "json": {"n": "{{ steps.mail.output | length }}"},
     "expect_status": [200, 202], "on_error": {"action": "abort"}},
]  # fmt: skip
PLAYBOOK: dict[str, Any] = {
    "id": "partner-onboarding",
    "owners": ["partner-ops"],
    "triggers": [
        {"type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
        {"type": "webhook"},
        {"type": "dataset", "dataset": "hubspot_companies"},
        {"type": "manual"},
    ],
    "inputs": {"since_days": {"type": "integer", "default": 7}},
    "defaults": {"on_error": {"action": "retry", "max_attempts": 3, "backoff": "exponential"}},
    "concurrency": {"max_runs": 1},
    "steps": STEPS,
}


def _with(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**document, **changes}


def _step(n: int, **changes: Any) -> dict[str, Any]:
    return _with(PLAYBOOK, steps=[*STEPS[:n], {**STEPS[n], **changes}, *STEPS[n + 1 :]])


# One row per construct: (name, document, accepted). The models are the truth; the schema must
# say the same.
CASES: list[tuple[str, Any, bool]] = [
    ("playbook_without_kind", PLAYBOOK, True),
    ("playbook_with_kind", _with(PLAYBOOK, kind="playbook"), True),
    ("sync", {"kind": "sync", "id": "hubspot", "provider": "hubspot", "objects": ["contacts"],
              "properties": {"contacts": ["email"]}, "schedule": {"cron": "*/30 * * * *"}}, True),
    ("dataset", {"kind": "dataset", "id": "engagement", "sql": "select 1",
                 "checks": [{"type": "unique", "column": "id"}]}, True),
    ("report", {"kind": "report", "id": "review", "template": "r.md.j2", "formats": ["pdf"],
                "deliver": [{"channel": "email", "to": ["a@example.org"]}]}, True),
    ("metrics", {"kind": "metrics", "id": "health",
                 "metrics": [{"id": "active", "sql": "select 1", "target": 120}]}, True),
    ("connections", {"kind": "connections", "id": "default",
                     "connections": {"webhooks": {"allow_hosts": ["10.0.0.0/8"]}}}, True),
    ("unknown_top_level_key", _with(PLAYBOOK, retries=3), False),
    ("unknown_step_key", _step(0, dependson=["x"]), False),
    ("unknown_step_type", _step(1, type="shell"), False),
    ("step_without_type", {**PLAYBOOK, "steps": [{"id": "a", "sql": "select 1"}]}, False),
    ("unknown_trigger_type", _with(PLAYBOOK, triggers=[{"type": "email"}]), False),
    ("unknown_kind", _with(PLAYBOOK, kind="workflow"), False),
    ("kindless_document_with_sync_keys", {"id": "x", "provider": "hubspot",
                                          "objects": ["contacts"]}, False),
    ("sync_with_a_playbook_key", {"kind": "sync", "id": "x", "provider": "hubspot",
                                  "objects": ["c"], "steps": STEPS}, False),
    ("bad_id", _with(PLAYBOOK, id="Partner Onboarding"), False),
    ("no_steps", _with(PLAYBOOK, steps=[]), False),
    ("max_runs_above_limit", _with(PLAYBOOK, concurrency={"max_runs": 11}), False),
    ("unknown_on_error_action", _step(3, on_error={"action": "ignore"}), False),
    ("unknown_input_type", _with(PLAYBOOK, inputs={"a": {"type": "uuid"}}), False),
    ("not_a_mapping", ["id", "steps"], False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_schema_agrees_with_the_models(
    schema: dict[str, Any], document: Any, accepted: bool
) -> None:
    assert models_accept(document) is accepted, "the case table is wrong about the models"
    assert schema_accepts(schema, document) is accepted


def test_schema_accepts_a_playbook_without_kind(schema: dict[str, Any]) -> None:
    assert "kind" not in PLAYBOOK
    assert "kind" not in schema.get("required", [])
    assert schema_accepts(schema, PLAYBOOK)


def test_schema_rejects_unknown_keys_and_step_types(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaViolation, match="unknown key `retries`"):
        validate(_with(PLAYBOOK, retries=3), schema, schema)
    with pytest.raises(SchemaViolation, match="'shell' not one of"):
        validate(_step(1, type="shell"), schema, schema)
