"""Data quality checks of a dataset (`checks:`), run against its table after it is built.

Each returns a :class:`CheckOutcome`: passed or not, a message a person can act on (the
offending values, the columns the table does have), and numbers for the Dagster UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from partnerships_orchestrator.assets.writer import quote_ident
from partnerships_orchestrator.compiler.naming import safe
from partnerships_orchestrator.spec.models import Check

SAMPLE = 5


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_names(checks: Sequence[Check]) -> list[str]:
    """A Dagster name per check: `unique_id`, `row_count`, ... (numbered when repeated)."""
    names: list[str] = []
    for check in checks:
        base = safe(f"{check.type}_{check.column}" if check.column else check.type)
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _scalar(conn: sa.Connection, sql: str, **params: Any) -> Any:
    return conn.execute(sa.text(sql), params).scalar()


def _values(conn: sa.Connection, sql: str, **params: Any) -> list[Any]:
    return [r[0] for r in conn.execute(sa.text(sql), params)]


def run_check(
    engine: sa.Engine, table: str, columns: Sequence[str], check: Check, now: datetime | None = None
) -> CheckOutcome:
    """Evaluate one check on ``table`` (whose columns are ``columns``)."""
    if check.column is not None and check.column not in columns:
        return CheckOutcome(
            False,
            f"column `{check.column}` is not produced by the dataset; its columns are "
            + ", ".join(f"`{c}`" for c in columns),
            {"columns": ", ".join(columns)},
        )
    t, c = quote_ident(table), quote_ident(check.column or "")
    with engine.connect() as conn:
        if check.type == "unique":
            dupes = _values(
                conn,
                f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1 "  # nosec B608 # table and column quoted by _q; values bound
                f"ORDER BY {c} LIMIT {SAMPLE + 1}",
            )
            count = _scalar(
                conn,
                f"SELECT count(*) FROM (SELECT {c} FROM {t} WHERE {c} IS NOT NULL "  # nosec B608 # table and column quoted by _q; values bound
                f"GROUP BY {c} HAVING count(*) > 1) d",
            )
            return CheckOutcome(
                not dupes,
                "every value is unique"
                if not dupes
                else f"{count} value(s) of `{check.column}` appear more than once, e.g. "
                + _sample(dupes),
                {"duplicated_values": int(count or 0)},
            )
        if check.type == "not_null":
            nulls = int(_scalar(conn, f"SELECT count(*) FROM {t} WHERE {c} IS NULL") or 0)  # nosec B608 # table and column quoted by _q
            return CheckOutcome(
                nulls == 0,
                "no nulls" if nulls == 0 else f"{nulls} row(s) have no `{check.column}`",
                {"null_rows": nulls},
            )
        if check.type == "accepted_values":
            allowed = list(check.values or [])
            marks = ", ".join(f":v{n}" for n in range(len(allowed)))
            params = {f"v{n}": v for n, v in enumerate(allowed)}
            where = f"{c} IS NOT NULL AND {c} NOT IN ({marks})"
            bad = int(_scalar(conn, f"SELECT count(*) FROM {t} WHERE {where}", **params) or 0)  # nosec B608 # table and column quoted by _q; accepted values bound
            sample = _values(
                conn,
                f"SELECT DISTINCT {c} FROM {t} WHERE {where} LIMIT {SAMPLE + 1}",  # nosec B608 # table and column quoted by _q; accepted values bound
                **params,
            )
            return CheckOutcome(
                bad == 0,
                "every value is accepted"
                if bad == 0
                else f"{bad} row(s) have a `{check.column}` outside {_sample(allowed)}: "
                + _sample(sample),
                {"rejected_rows": bad},
            )
        rows = int(_scalar(conn, f"SELECT count(*) FROM {t}") or 0)  # nosec B608 # table quoted by _q
        if check.type == "row_count":
            low = check.min is not None and rows < check.min
            high = check.max is not None and rows > check.max
            bounds = f"between {check.min if check.min is not None else 0} and " + (
                str(check.max) if check.max is not None else "any number"
            )
            return CheckOutcome(
                not (low or high),
                f"{rows} row(s), expected {bounds}",
                {"rows": rows},
            )
        newest = _as_datetime(_scalar(conn, f"SELECT max({c}) FROM {t}"))  # nosec B608 # table and column quoted by _q
    limit = check.max_age_hours or 0.0
    if newest is None:
        return CheckOutcome(False, f"`{check.column}` has no values: nothing is fresh", {})
    age = ((now or datetime.now(UTC).replace(tzinfo=None)) - newest).total_seconds() / 3600
    return CheckOutcome(
        age <= limit,
        f"newest `{check.column}` is {age:.1f} h old (at most {limit:g} h allowed)",
        {"age_hours": round(age, 3), "newest": newest.isoformat()},
    )


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _sample(values: Sequence[Any]) -> str:
    shown = ", ".join(f"`{v}`" for v in values[:SAMPLE])
    return shown + (", ..." if len(values) > SAMPLE else "")
