"""The ``query`` step: rows from the warehouse, a dataset, or a CRM connector.

SQL runs through SQLAlchemy ``text()`` with bound parameters only; values are never spliced into
the SQL text. A query step reads: its transaction is never committed, and on PostgreSQL it is
a read-only transaction (``SET TRANSACTION READ ONLY``), so not even a statement that returns
rows (``INSERT ... RETURNING``, a data-modifying ``WITH``) can change the warehouse; tables are
written by `dataset` and `sync` documents.

Values are made plain for the expression language: ``Decimal`` becomes ``float``, and naive
datetimes (the warehouse stores naive UTC) become aware UTC so they compare with ``now()`` and
``run.started_at``. On SQLite, whose ``text()`` results carry no column types, strings in the
exact shapes SQLAlchemy stores ``DateTime`` and ``Date`` columns in are read back as datetimes
and dates, so rows look the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from partnerships_orchestrator.errors import ConnectorError, StepError, StepTimeout
from partnerships_orchestrator.expressions import render_value
from partnerships_orchestrator.spec.models import QueryStep
from partnerships_orchestrator.steps.context import StepContext

DATASET_PREFIX = "dataset:"
WAREHOUSE = "warehouse"
_SQLITE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
_SQLITE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PG_QUERY_CANCELED = "57014"
_PG_READ_ONLY_TRANSACTION = "25006"


def run(step: QueryStep, ctx: StepContext) -> dict[str, Any]:
    """Run the query; the output is ``{"rows": [...], "count": n}``."""
    if step.source == WAREHOUSE or step.source.startswith(DATASET_PREFIX):
        rows = _warehouse_rows(step, ctx)
    else:
        rows = _crm_rows(step, ctx)
    return {"rows": rows, "count": len(rows)}


# ---------------------------------------------------------------- warehouse and datasets


def _warehouse_rows(step: QueryStep, ctx: StepContext) -> list[dict[str, Any]]:
    engine = ctx.resources.warehouse()
    if step.sql is not None:
        statement: sa.Executable = sa.text(step.sql)
        params = render_value(step.params, ctx.scope)
    else:
        statement = table_select(_table_name(step), step, render_value(step.filters, ctx.scope))
        params = {}
    params = {name: bind_value(value, engine.dialect.name) for name, value in params.items()}
    try:
        with engine.connect() as conn:
            _read_only(conn)
            _apply_deadline(conn, step, ctx.deadline)
            result = conn.execute(statement, params)
            if not result.returns_rows:
                raise StepError(
                    f"query step `{step.id}`: the statement returned no rows",
                    hint="a query step reads; write tables with a `dataset` or `sync` document",
                )
            records = result.mappings().fetchmany(step.limit) if step.limit else result.mappings()
            sqlite = engine.dialect.name == "sqlite"
            return [_plain_row(record, sqlite=sqlite) for record in records]
    except StatementError as exc:
        raise _sql_error(step, exc) from None


def _table_name(step: QueryStep) -> str:
    """The table a `sql`-less query reads: the dataset's own table, or ``object``."""
    if step.source.startswith(DATASET_PREFIX):
        return step.source.removeprefix(DATASET_PREFIX)
    assert step.object is not None  # nosec B101 # invariant for mypy: the model requires `sql` or `object`
    return step.object


def table_select(table: str, step: QueryStep, filters: Mapping[str, Any]) -> sa.Select[Any]:
    """``select <properties or *> from "<table>" where <col = :value ...> limit n``, all quoted."""
    columns: list[sa.ColumnClause[Any]] = [sa.column(name) for name in step.properties or []]
    columns = columns or [sa.literal_column("*")]
    query = sa.select(*columns).select_from(sa.table(table))
    for name, value in filters.items():
        column: sa.ColumnClause[Any] = sa.column(name)
        is_list = isinstance(value, list | tuple)
        query = query.where(column.in_(value) if is_list else column == value)
    return query.limit(step.limit) if step.limit else query


def bind_value(value: Any, dialect: str) -> Any:
    """A parameter value the driver compares correctly with our stored columns."""
    if dialect != "sqlite":
        return value
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime storage
    if isinstance(value, date):
        return value.isoformat()
    return value


def _read_only(conn: Connection) -> None:
    """Make the step's transaction read-only where the database enforces it (PostgreSQL).

    It is the transaction's first statement, as PostgreSQL requires; the transaction is rolled
    back when the connection goes back to the pool, so the setting never outlives the step."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))


def _apply_deadline(conn: Connection, step: QueryStep, deadline: float | None) -> None:
    """Bound the statement by the step's deadline where the database can (PostgreSQL)."""
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StepTimeout(f"query step `{step.id}` ran out of time before its query started")
    if conn.dialect.name == "postgresql":
        # set_config(..., true) is SET LOCAL: it ends with this (never committed) transaction.
        ms = str(max(1, int(remaining * 1000)))
        conn.execute(sa.text("select set_config('statement_timeout', :ms, true)"), {"ms": ms})


def _sql_error(step: QueryStep, exc: StatementError) -> StepError:
    original = exc.orig if exc.orig is not None else exc
    lines = str(original).strip().splitlines()
    message = lines[0] if lines else type(original).__name__
    sqlstate = getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None
    if sqlstate == _PG_READ_ONLY_TRANSACTION:
        return StepError(
            f"query step `{step.id}` tried to change the warehouse: {message}",
            hint="a query step reads; write tables with a `dataset` or `sync` document",
        )
    if sqlstate == _PG_QUERY_CANCELED:
        return StepTimeout(
            f"query step `{step.id}` ran past its timeout: {message}",
            hint="raise `timeout_seconds` or make the query cheaper",
        )
    return StepError(
        f"query step `{step.id}` failed: {message}",
        hint="check the SQL against the warehouse schema and give every `:name` a value in `params`",
    )


# ---------------------------------------------------------------- CRM connectors


def _crm_rows(step: QueryStep, ctx: StepContext) -> list[dict[str, Any]]:
    client = ctx.resources.crm.get(step.source)
    if client is None:
        raise StepError(
            f"query step `{step.id}`: source `{step.source}` is not configured",
            hint="configure it in a `kind: connections` document",
        )
    if step.object is None:
        raise StepError(
            f"query step `{step.id}`: source `{step.source}` is a CRM and takes `object`, not `sql`",
            hint="use `object`, `filters` and `properties`, or query the synced tables with "
            "`source: warehouse`",
        )
    try:
        records = client.query(
            object=step.object,
            filters=render_value(step.filters, ctx.scope),
            properties=step.properties,
            limit=step.limit,
        )
    except ConnectorError as exc:
        raise StepError(f"query step `{step.id}`: {exc.message}", hint=exc.hint) from exc
    rows = [_plain_row(record, sqlite=False) for record in records]
    return rows[: step.limit] if step.limit else rows


# ---------------------------------------------------------------- values


def _plain_row(record: Mapping[Any, Any], *, sqlite: bool) -> dict[str, Any]:
    return {str(key): plain_value(value, sqlite=sqlite) for key, value in record.items()}


def plain_value(value: Any, *, sqlite: bool = False) -> Any:
    """A database value as plain Python the expression language and JSON storage understand."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    if sqlite and isinstance(value, str):
        return _sqlite_temporal(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return value


def _sqlite_temporal(value: str) -> Any:
    if _SQLITE_DATETIME.match(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if _SQLITE_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value
