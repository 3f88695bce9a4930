"""A metrics set: each metric's SQL run for one number, appended to ``metric_history``.

The values of one run are appended in one transaction, so the history never holds half a run.
:func:`judge` turns a value and the metric's ``target`` / ``thresholds`` into check verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa

from partnerships_orchestrator.errors import StepError
from partnerships_orchestrator.spec.models import Metric, Metrics
from partnerships_orchestrator.store.schema import schema_lock
from partnerships_orchestrator.warehouse import metric_history

Severity = Literal["warn", "error"]


@dataclass(frozen=True)
class MetricValue:
    id: str
    value: float | None
    target: float | None


@dataclass(frozen=True)
class Verdict:
    check: str  # `target` or `thresholds`
    passed: bool
    severity: Severity
    description: str


def _number(metric: Metric, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return None if math.isnan(number) else number
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StepError(
            f"metric `{metric.id}` returned {value!r}, not a number",
            hint="its SQL must select one numeric value (e.g. `select count(*) from ...`)",
        ) from None


def compute(engine: sa.Engine, metrics: Metrics, run_id: str) -> list[MetricValue]:
    """Run every metric's SQL and append the values to ``metric_history`` (one transaction)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    values: list[MetricValue] = []
    with engine.begin() as conn:
        schema_lock(conn)  # workers computing at once never race the table's creation
        metric_history.create(conn, checkfirst=True)
        for metric in metrics.metrics:
            try:
                row = conn.execute(sa.text(metric.sql)).first()
            except sa.exc.DBAPIError as exc:
                reason = str(exc.orig).strip().splitlines()[0]
                raise StepError(
                    f"metric `{metric.id}` of `{metrics.id}` failed: {reason}",
                    hint="run its SQL against the warehouse to see why",
                ) from None
            if row is not None and len(row) != 1:
                raise StepError(
                    f"metric `{metric.id}` of `{metrics.id}` returned {len(row)} columns",
                    hint="select exactly one value",
                )
            values.append(
                MetricValue(metric.id, _number(metric, row[0] if row else None), metric.target)
            )
        conn.execute(
            metric_history.insert(),
            [
                {
                    "metrics_set": metrics.id,
                    "metric": v.id,
                    "value": v.value,
                    "target": v.target,
                    "computed_at": now,
                    "run_id": run_id,
                }
                for v in values
            ],
        )
    return values


def _good(metric: Metric, value: float, level: float) -> bool:
    return value >= level if metric.higher_is_better else value <= level


def judge(metric: Metric, value: float | None) -> list[Verdict]:
    """The target and threshold verdicts of one value (none for a metric without them)."""
    side = "at least" if metric.higher_is_better else "at most"
    verdicts: list[Verdict] = []
    if metric.target is not None:
        ok = value is not None and _good(metric, value, metric.target)
        verdicts.append(
            Verdict(
                "target",
                ok,
                "warn",
                f"{metric.id} = {_show(value)}, target {side} {metric.target:g}",
            )
        )
    levels = metric.thresholds
    if levels is not None and (levels.warn is not None or levels.error is not None):
        if value is None:
            verdicts.append(Verdict("thresholds", False, "error", f"{metric.id} has no value"))
        elif levels.error is not None and not _good(metric, value, levels.error):
            verdicts.append(
                Verdict(
                    "thresholds",
                    False,
                    "error",
                    f"{metric.id} = {value:g} crossed its error threshold ({side} {levels.error:g})",
                )
            )
        elif levels.warn is not None and not _good(metric, value, levels.warn):
            verdicts.append(
                Verdict(
                    "thresholds",
                    False,
                    "warn",
                    f"{metric.id} = {value:g} crossed its warning threshold ({side} {levels.warn:g})",
                )
            )
        else:
            verdicts.append(
                Verdict("thresholds", True, "error", f"{metric.id} = {value:g}: within thresholds")
            )
    return verdicts


def _show(value: float | None) -> str:
    return "no value" if value is None else f"{value:g}"
