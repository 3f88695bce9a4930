"""The JSON Schema (draft 2020-12) of a playbook document, for editors (``partnerships schema``).

Generated from the pydantic models, never written by hand. pydantic renders a discriminated union
as ``oneOf`` plus OpenAPI's ``discriminator`` keyword, which JSON Schema validators ignore; with
``oneOf`` an editor reports every branch's complaints at once and, worse, a playbook without
``kind`` must match by elimination. So each tagged union is rewritten as ``if``/``then`` on its
tag: the tag gets an ``enum`` (completion, and one clear error for an unknown kind or step type),
and only the chosen branch's keys are checked. A branch whose tag has a default (``playbook``)
also applies when the tag is absent.

Use it from YAML with ``# yaml-language-server: $schema=<path to the printed schema>``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from partnerships_orchestrator.spec.models import Document

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:partnerships-orchestrator:schema:document"
SCHEMA_TITLE = "Partnerships Orchestrator document"
_REF_PREFIX = "#/$defs/"


def document_schema() -> dict[str, Any]:
    """The JSON Schema of any document kind, by alias (``json``, not ``json_body``)."""
    raw = TypeAdapter(Document).json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs")
    defs = {name: _rewrite(node, defs) for name, node in sorted(defs.items())}
    root = _rewrite(raw, defs)
    kinds = root["properties"]["kind"]["enum"]
    description = (
        "A playbooks/ document: one of the kinds "
        + ", ".join(f"`{k}`" for k in kinds)
        + f"; `kind` defaults to `{root['properties']['kind']['default']}` when absent. "
        "Generated from the pydantic models (`partnerships schema`)."
    )
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": SCHEMA_TITLE,
        "description": description,
        **root,
        "$defs": defs,
    }


def _rewrite(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with tagged unions as ``if``/``then`` and Markdown descriptions for editors."""
    if isinstance(node, list):
        return [_rewrite(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "oneOf" in node and "discriminator" in node:
        return _tagged_union(node, defs)
    result = {key: _rewrite(value, defs) for key, value in node.items()}
    if isinstance(result.get("description"), str):  # a schema's text, not a property named so
        result.setdefault("markdownDescription", result["description"])
    return result


def _tagged_union(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One ``if``/``then`` per member of a discriminated union, keyed on its tag property."""
    tag = node["discriminator"]["propertyName"]
    tag_of = {ref: value for value, ref in node["discriminator"]["mapping"].items()}
    refs = [member["$ref"] for member in node["oneOf"]]
    tags = [tag_of[ref] for ref in refs]
    defaults = [
        tag_of[ref]
        for ref in refs
        if "default" in defs[ref.removeprefix(_REF_PREFIX)]["properties"][tag]
    ]
    branches = []
    for ref, value in zip(refs, tags, strict=True):
        condition: dict[str, Any] = {"properties": {tag: {"const": value}}}
        if value not in defaults:
            condition["required"] = [tag]  # without the tag, only the default branch applies
        branches.append({"if": condition, "then": {"$ref": ref}})
    tag_schema: dict[str, Any] = {"type": "string", "enum": tags}
    text = "One of " + ", ".join(f"`{t}`" for t in tags) + "."
    if defaults:
        tag_schema["default"] = defaults[0]
        text += f" `{defaults[0]}` when absent."
    tag_schema["description"] = tag_schema["markdownDescription"] = text
    result: dict[str, Any] = {"type": "object", "properties": {tag: tag_schema}}
    if not defaults:
        result["required"] = [tag]
    result["allOf"] = branches
    return result
