"""The expression scope that flows along a playbook's edges, one op output to the next.

Every op outputs its scope: ``inputs``, ``trigger``, ``run``, ``steps`` (each upstream step's
``output``, plus ``rows``/``count`` for queries) and, inside a fan-out, ``item``. Joining edges
merges scopes; a ``collect: true`` step turns each fanned-out step's output into the list of
per-item outputs, in item order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Scope = dict[str, Any]
_REGION = "_region"  # ids of the steps mapped under the current fan-out
SKIPPED_KEY = "_skipped"  # set on an item's scope once one of its steps was skipped


def root_scope(
    inputs: Mapping[str, Any], trigger: Mapping[str, Any], run: Mapping[str, Any]
) -> Scope:
    return {"inputs": dict(inputs), "trigger": dict(trigger), "run": dict(run), "steps": {}}


def step_entry(output: Any) -> dict[str, Any]:
    """What ``steps.<id>`` holds: ``output``, and ``rows``/``count`` when the output has them."""
    entry: dict[str, Any] = {"output": output}
    if isinstance(output, Mapping) and "rows" in output and "count" in output:
        entry["rows"] = output["rows"]
        entry["count"] = output["count"]
    return entry


def with_output(scope: Scope, step_id: str, output: Any, *, mapped: bool) -> Scope:
    """A copy of ``scope`` with this step's output added."""
    result = {**scope, "steps": {**scope["steps"], step_id: step_entry(output)}}
    if mapped:
        result[_REGION] = [*scope.get(_REGION, []), step_id]
    return result


def with_item(scope: Scope, item: Any, index: int) -> Scope:
    return {**scope, "item": item, "item_index": index, _REGION: []}


def merge(scopes: Sequence[Scope]) -> Scope:
    """Join the scopes arriving on several edges (all unmapped, or all for the same item)."""
    result: Scope = {**scopes[0], "steps": {}}
    region: list[str] = []
    for scope in scopes:
        result["steps"].update(scope["steps"])
        region.extend(s for s in scope.get(_REGION, []) if s not in region)
        if scope.get(SKIPPED_KEY):
            result[SKIPPED_KEY] = scope[SKIPPED_KEY]
    if _REGION in result:
        result[_REGION] = region
    return result


def collect(per_item: Sequence[Scope], others: Sequence[Scope], region: Sequence[str]) -> Scope:
    """The scope of a ``collect: true`` step: mapped outputs become lists, in item order.

    ``others`` holds the unmapped scopes (at least the fan-out's own scope, so inputs and the
    steps before the fan-out are known even when there were no items); ``region`` names the
    fanned-out steps upstream of the collecting step, each an empty list when nothing arrived.
    """
    result = merge(others)
    by_step: dict[str, dict[int, Any]] = {step_id: {} for step_id in region}
    for scope in per_item:
        index = scope.get("item_index", 0)
        for step_id in scope.get(_REGION, []):
            by_step.setdefault(step_id, {})[index] = scope["steps"][step_id]["output"]
    for step_id, outputs in by_step.items():
        result["steps"][step_id] = {"output": [outputs[i] for i in sorted(outputs)]}
    for key in ("item", "item_index", _REGION, SKIPPED_KEY):
        result.pop(key, None)
    return result


def public(scope: Scope) -> Scope:
    """The scope as expressions see it (internal bookkeeping removed)."""
    return {k: v for k, v in scope.items() if not k.startswith("_")}
