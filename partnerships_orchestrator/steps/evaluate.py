"""The `evaluate` step: one value (`expression`), or rows / the item with fields assigned or filtered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partnerships_orchestrator.compiler.naming import SKIP_MARKER
from partnerships_orchestrator.errors import StepError
from partnerships_orchestrator.expressions import evaluate
from partnerships_orchestrator.spec.models import EvaluateStep
from partnerships_orchestrator.steps.context import SKIPPED, StepContext


def run(step: EvaluateStep, ctx: StepContext) -> Any:
    scope = dict(ctx.scope)
    if step.expression is not None and not step.assign and step.filter is None:
        return evaluate(step.expression, scope)
    if step.rows is None and "item" in scope:  # inside a fan-out: work on the item
        if step.filter is not None and not evaluate(step.filter, {**scope, "row": scope["item"]}):
            ctx.log.info(
                f"{SKIP_MARKER} `{step.id}`: `filter: {step.filter}` is false for this item"
            )
            return SKIPPED
        return _assign(step, scope, scope["item"])
    rows = _rows(step, scope)
    if step.filter is not None:
        rows = [row for row in rows if evaluate(step.filter, {**scope, "item": row, "row": row})]
    result = [_assign(step, scope, row) for row in rows]
    if step.expression is not None:
        return evaluate(step.expression, {**scope, "rows": result})
    return result


def _assign(step: EvaluateStep, scope: Mapping[str, Any], row: Any) -> Any:
    """The row (or item) with each `assign` field added; expressions see it as `item` and `row`."""
    if not step.assign:
        return row
    local = {**scope, "item": row, "row": row}
    added = {name: evaluate(source, local) for name, source in step.assign.items()}
    if isinstance(row, Mapping):
        return {**row, **added}
    return {"value": row, **added}


def _direct_upstream_rows(step: EvaluateStep, scope: Mapping[str, Any]) -> list[Any] | None:
    steps = scope.get("steps", {})
    candidates = [steps[d]["rows"] for d in step.depends_on if d in steps and "rows" in steps[d]]
    return candidates[0] if len(candidates) == 1 else None


def _rows(step: EvaluateStep, scope: Mapping[str, Any]) -> list[Any]:
    """The rows to work on: the `rows` expression, else the single upstream query's rows."""
    if step.rows is not None:
        rows = evaluate(step.rows, scope)
    else:
        rows = _direct_upstream_rows(step, scope)
        if rows is None:
            raise StepError(
                f"step `{step.id}` has `assign`/`filter` but no rows to work on",
                hint="depend on exactly one query step, or say which rows with `rows:`",
            )
    if not isinstance(rows, list | tuple):
        raise StepError(f"`rows` of step `{step.id}` must be a list, got {type(rows).__name__}")
    return list(rows)
