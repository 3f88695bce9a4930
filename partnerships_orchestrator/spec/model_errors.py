"""Pydantic validation errors rewritten for people who write playbooks.

Pydantic reports paths with union tags inside (``playbook.steps.0.query.sql``) and messages about
Python types. Here each error becomes a :class:`Finding` at the user's own path
(``steps[0].sql``), naming the offending value and what would be valid, with a "did you mean"
taken from the model's own keys and choices.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from partnerships_orchestrator.spec.models import KINDS, STEP_TYPES, Document
from partnerships_orchestrator.spec.problems import Finding, Loc, format_path
from partnerships_orchestrator.spec.suggest import did_you_mean, listing, show

TRIGGER_TYPES = ("cron", "webhook", "dataset", "manual")
_TAGGED_LISTS = {"steps": ("step type", STEP_TYPES), "triggers": ("trigger type", TRIGGER_TYPES)}
_MEMBER_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "`true` or `false`",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "list[any]": "a list",
    "dict[str,any]": "a mapping",
}
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "`true` or `false`",
    "bool_parsing": "`true` or `false`",
    "list_type": "a list",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}


def document_models() -> dict[str, type[BaseModel]]:
    """The model of each ``kind``."""
    union = get_args(Document)[0]
    return {get_args(model.model_fields["kind"].annotation)[0]: model for model in get_args(union)}


DOCUMENT_MODELS = document_models()
_MISSING = object()


@dataclass(frozen=True)
class _Error:
    """One pydantic error at the user's path; ``members`` names union alternatives tried."""

    loc: Loc
    value: Any
    members: tuple[str, ...]
    detail: ErrorDetails


def findings_from(
    exc: ValidationError, data: dict[str, Any], file: str, index: int
) -> list[Finding]:
    """One finding per problem pydantic found in document ``data``."""
    findings: list[Finding] = []
    grouped: dict[Loc, list[_Error]] = {}
    for detail in exc.errors():
        error = _user_error(detail, data)
        if error.members:  # alternatives of one union: one problem for the value
            grouped.setdefault(error.loc, []).append(error)
        else:
            findings.append(_finding(error, data, file, index))
    for loc, errors in grouped.items():
        findings.append(_union_finding(loc, errors, file, index))
    return findings


def _user_error(detail: ErrorDetails, data: dict[str, Any]) -> _Error:
    """Strip union tags and member names from pydantic's path, walking the data alongside."""
    parts = list(detail["loc"])
    if parts and parts[0] in KINDS and data.get("kind") == parts[0]:
        parts = parts[1:]
    loc: list[str | int] = []
    node: Any = data
    members: list[str] = []
    tag_skipped = False
    for position, part in enumerate(parts):
        if members:
            continue
        if not tag_skipped and _is_tag(loc, node, part):
            tag_skipped = True
            continue
        child = _child_value(node, part, missing=_MISSING)
        if child is not _MISSING:
            loc.append(part)
            node = child
        elif detail["type"] == "missing" and position == len(parts) - 1:
            loc.append(part)
        else:
            members.append(str(part))
    return _Error(tuple(loc), node, tuple(members), detail)


def _is_tag(loc: list[str | int], node: Any, part: str | int) -> bool:
    """Is ``part`` the discriminator tag pydantic puts after ``steps[i]`` / ``triggers[i]``?"""
    return (
        len(loc) == 2
        and loc[0] in _TAGGED_LISTS
        and isinstance(loc[1], int)
        and isinstance(node, dict)
        and node.get("type") == part
    )


def short_path(loc: Loc) -> str:
    """The path from its last key on: ``steps[3].channel`` -> ``channel``, ``steps[6]``."""
    keys = [n for n, part in enumerate(loc) if isinstance(part, str)]
    return format_path(loc[keys[-1] :] if keys else loc)


def _finding(error: _Error, data: dict[str, Any], file: str, index: int) -> Finding:
    kind = error.detail["type"]
    loc, value = error.loc, error.value
    if kind == "extra_forbidden":
        return _unknown_key(loc, data, file, index)
    if kind == "union_tag_invalid":
        return _unknown_tag(loc, value, file, index)
    if kind == "union_tag_not_found":
        return _missing_tag(loc, value, file, index)
    if kind == "missing":
        return _missing_key(loc, data, file, index)
    message, hint = _describe(error, data)
    return Finding(file, index, loc, message, hint)


def _unknown_key(loc: Loc, data: dict[str, Any], file: str, index: int) -> Finding:
    key = str(loc[-1])
    model = model_at(loc[:-1], data)
    keys = field_keys(model) if model else []
    return Finding(
        file, index, loc, f"unknown key `{key}`", did_you_mean(key, keys, "valid keys"), "key"
    )


def _unknown_tag(loc: Loc, value: Any, file: str, index: int) -> Finding:
    tag = str(value.get("kind" if not loc else "type")) if isinstance(value, dict) else str(value)
    if not loc:
        hint = did_you_mean(tag, KINDS, "kinds", always_list=True)
        return Finding(file, index, ("kind",), f"unknown kind `{tag}`", hint)
    label, choices = _TAGGED_LISTS.get(str(loc[0]), ("type", ()))
    hint = did_you_mean(tag, choices, f"{label}s", always_list=True)
    return Finding(file, index, (*loc, "type"), f"unknown {label} `{tag}`", hint)


def _missing_tag(loc: Loc, value: Any, file: str, index: int) -> Finding:
    label, choices = _TAGGED_LISTS.get(str(loc[0]) if loc else "", ("kind", KINDS))
    if not isinstance(value, dict):
        message = f"`{short_path(loc)}` must be a mapping with a `type`, got {show(value)}"
        return Finding(file, index, loc, message, f"{label}s: {listing(choices)}")
    hint = f"add `type:` with one of {listing(choices)}"
    return Finding(file, index, loc, "missing required key `type`", hint)


def _missing_key(loc: Loc, data: dict[str, Any], file: str, index: int) -> Finding:
    key = str(loc[-1])
    model = model_at(loc[:-1], data)
    field = model.model_fields.get(key) if model else None
    hint = field.description if field is not None else None
    return Finding(file, index, loc, f"missing required key `{key}`", hint)


def _describe(error: _Error, data: dict[str, Any]) -> tuple[str, str | None]:
    """Message and hint for a value of the wrong type or outside its constraints."""
    detail, loc, value = error.detail, error.loc, error.value
    kind, where = detail["type"], short_path(loc)
    if kind == "value_error":
        return (detail["msg"].removeprefix("Value error, "), None)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(detail.get("ctx", {}).get("expected", "")))
        return (
            f"invalid value {show(value)} for `{where}`",
            did_you_mean(str(value), choices, "valid values", always_list=True),
        )
    if kind == "string_pattern_mismatch":
        return _pattern_problem(loc, value, data)
    if kind == "too_short" and detail.get("ctx", {}).get("min_length") == 1:
        return (f"`{where}` must not be empty", None)
    if kind in _EXPECTED:
        return (f"invalid value {show(value)} for `{where}`: expected {_EXPECTED[kind]}", None)
    message = detail["msg"]
    return (f"invalid value {show(value)} for `{where}`: {message[:1].lower()}{message[1:]}", None)


def _pattern_problem(loc: Loc, value: Any, data: dict[str, Any]) -> tuple[str, str | None]:
    model = model_at(loc[:-1], data)
    field = model.model_fields.get(str(loc[-1])) if model else None
    hint = field.description if field is not None and field.description else None
    if loc and loc[-1] == "id":
        suggestion = re.sub(r"[^a-z0-9_-]+", "-", str(value).lower()).strip("-_")
        hint = "use lower-case letters, digits, `-` and `_`" + (
            f", e.g. `{suggestion}`" if suggestion else ""
        )
        return (f"invalid id {show(value)}", hint)
    return (f"invalid value {show(value)} for `{short_path(loc)}`", hint)


def _union_finding(loc: Loc, errors: list[_Error], file: str, index: int) -> Finding:
    members = dict.fromkeys(error.members[0] for error in errors)
    expected = " or ".join(_MEMBER_NAMES.get(m.replace(" ", "").lower(), m) for m in members)
    value = errors[0].value
    message = f"invalid value {show(value)} for `{short_path(loc)}`: expected {expected}"
    return Finding(file, index, loc, message)


# ---------------------------------------------------------------- the model at a path


def model_at(loc: Loc, data: dict[str, Any]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` of document ``data``."""
    kind = data.get("kind", "playbook")
    annotation: Any = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
    node: Any = data
    for part in loc:
        annotation = _resolve(annotation, node)
        annotation = _child_annotation(annotation, part)
        node = _child_value(node, part)
        if annotation is None:
            return None
    model = _resolve(annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def field_keys(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts, as users write them (aliases where set)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _child_value(node: Any, part: str | int, missing: Any = None) -> Any:
    """``node[part]`` for a mapping key or a list index, else ``missing``."""
    if isinstance(node, dict):
        return node.get(part, missing)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return missing


def _child_annotation(annotation: Any, part: str | int) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and isinstance(part, int):
        return args[0] if args else None
    if origin is dict and isinstance(part, str):
        return args[1] if len(args) == 2 else None
    return None


def _resolve(annotation: Any, node: Any) -> Any:
    """Unwrap ``Annotated``, ``Optional`` and (discriminated) unions for the value ``node``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is types.UnionType:
            annotation = _pick_member(get_args(annotation), node)
        else:
            return annotation


def _pick_member(members: tuple[Any, ...], node: Any) -> Any:
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if isinstance(node, dict):
        for model in models:
            for tag in ("type", "kind"):
                field = model.model_fields.get(tag)
                if field is not None and node.get(tag) in get_args(field.annotation):
                    return model
        if len(models) == 1:
            return models[0]
    for member in members:
        if member is not type(None) and _fits(member, node):
            return member
    return None


def _fits(member: Any, node: Any) -> bool:
    origin = get_origin(member) or member
    if origin is list:
        return isinstance(node, list)
    if origin is dict:
        return isinstance(node, dict)
    return False
