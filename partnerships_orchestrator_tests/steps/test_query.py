"""The query step against a real SQLite warehouse, plus CRM source dispatch."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from partnerships_orchestrator.errors import ConnectorError, StepError, StepTimeout
from partnerships_orchestrator.spec.models import QueryStep
from partnerships_orchestrator.steps import query
from partnerships_orchestrator_tests.postgres import create_database
from partnerships_orchestrator_tests.steps.conftest import MakeContext


def make_step(**fields: Any) -> QueryStep:
    return QueryStep.model_validate({"id": "q", "type": "query", **fields})


def ids(output: dict[str, Any]) -> list[str]:
    return [row["id"] for row in output["rows"]]


def test_param_values_are_bound_never_spliced(make_ctx: MakeContext, warehouse: Engine) -> None:
    hostile = "x'; drop table partners; --"
    step = make_step(
        sql="select id from partners where name = :name", params={"name": "{{ inputs.name }}"}
    )
    output = query.run(step, make_ctx(step, inputs={"name": hostile}))
    assert output == {"rows": [], "count": 0}
    with warehouse.connect() as conn:
        assert conn.execute(sa.text("select count(*) from partners")).scalar() == 3


@pytest.mark.parametrize(
    ("op", "since", "expected"),
    [
        (">=", datetime(2024, 1, 10, 12, 0, tzinfo=UTC), ["p2", "p3"]),
        (">=", datetime(2024, 1, 10, 14, 0, tzinfo=timezone(timedelta(hours=2))), ["p2", "p3"]),
        (">", datetime(2024, 1, 10, 12, 0, tzinfo=UTC), ["p3"]),  # microseconds always written
        (">=", datetime(2024, 1, 10, 12, 0), ["p2", "p3"]),  # naive is taken as UTC
        (">=", date(2024, 1, 10), ["p2", "p3"]),
        (">=", "{{ datetime('2024-01-11T12:00:00Z') - days(1) }}", ["p2", "p3"]),
        (">=", "{{ run.started_at - days(30) }}", ["p3"]),
    ],
)
def test_datetime_params_compare_with_naive_utc_columns_on_sqlite(
    make_ctx: MakeContext, op: str, since: Any, expected: list[str]
) -> None:
    step = make_step(
        sql=f"select id from partners where created_at {op} :since order by id",
        params={"since": "{{ inputs.since }}" if not isinstance(since, str) else since},
    )
    assert ids(query.run(step, make_ctx(step, inputs={"since": since}))) == expected


def test_rows_are_plain_python_with_aware_datetimes_and_dates(make_ctx: MakeContext) -> None:
    step = make_step(sql="select * from partners where id = :id", params={"id": "p1"})
    [row] = query.run(step, make_ctx(step))["rows"]
    assert row == {
        "id": "p1",
        "name": "Acme",
        "tier": "gold",
        "amount": 1200.5,
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "signed_on": date(2024, 1, 2),
    }
    assert type(row["amount"]) is float


@pytest.mark.parametrize(("limit", "count"), [(1, 1), (2, 2), (10, 3), (None, 3)])
def test_limit_caps_rows(make_ctx: MakeContext, limit: int | None, count: int) -> None:
    step = make_step(sql="select id from partners order by id", limit=limit)
    output = query.run(step, make_ctx(step))
    assert output["count"] == count == len(output["rows"])


@pytest.mark.parametrize(
    ("sql", "params", "fragment"),
    [
        ("selec id from partners", {}, 'near "selec": syntax error'),
        ("select * from no_such_table", {}, "no such table: no_such_table"),
        ("select * from partners where id = :id", {}, "bind parameter 'id'"),
        ("create table scratch (x int)", {}, "returned no rows"),
    ],
)
def test_sql_error_is_one_line_naming_the_step(
    make_ctx: MakeContext, sql: str, params: dict[str, Any], fragment: str
) -> None:
    step = make_step(id="new_partners", sql=sql, params=params)
    with pytest.raises(StepError) as caught:
        query.run(step, make_ctx(step))
    message = str(caught.value)
    assert "query step `new_partners`" in message
    assert fragment in message
    assert "\n" not in message
    assert caught.value.hint


def test_dataset_source_runs_its_sql_on_the_warehouse(make_ctx: MakeContext) -> None:
    step = make_step(
        source="dataset:gold-partners", sql='select id from "gold-partners" order by id'
    )
    assert ids(query.run(step, make_ctx(step))) == ["p1", "p3"]


def test_dataset_source_without_sql_selects_the_quoted_table(make_ctx: MakeContext) -> None:
    # QueryStep's validator still demands `sql` or `object`; build the bare form directly.
    step = QueryStep.model_construct(id="q", type="query", source="dataset:gold-partners", limit=1)
    output = query.run(step, make_ctx(step))
    assert output["count"] == 1
    assert output["rows"][0]["id"] in {"p1", "p3"}


def test_object_query_on_warehouse_binds_filters_and_quotes_names(make_ctx: MakeContext) -> None:
    step = make_step(
        object="partners", filters={"tier": "{{ inputs.tier }}"}, properties=["id", "name"]
    )
    output = query.run(step, make_ctx(step, inputs={"tier": "gold"}))
    assert sorted(output["rows"], key=lambda r: r["id"]) == [
        {"id": "p1", "name": "Acme"},
        {"id": "p3", "name": "Initech"},
    ]


def test_object_name_cannot_inject_sql(make_ctx: MakeContext, warehouse: Engine) -> None:
    step = make_step(object='partners"; drop table partners; --')
    with pytest.raises(StepError, match="no such table"):
        query.run(step, make_ctx(step))
    assert sa.inspect(warehouse).has_table("partners")


def test_unconfigured_crm_source_names_it_and_points_to_connections(
    make_ctx: MakeContext,
) -> None:
    step = make_step(source="hubspot", object="contacts")
    with pytest.raises(StepError) as caught:
        query.run(step, make_ctx(step))
    assert "`hubspot`" in caught.value.message
    assert caught.value.hint == "configure it in a `kind: connections` document"


class RecordingCrm:
    """A CRM client stand-in: returns fixed records and remembers the call."""

    def __init__(self, records: list[dict[str, Any]], fail: bool = False) -> None:
        self.records, self.fail, self.calls = records, fail, []

    def query(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(kwargs)
        if self.fail:
            raise ConnectorError("hubspot answered 401", hint="check the token")
        return self.records


def test_crm_source_calls_client_with_rendered_filters(make_ctx: MakeContext) -> None:
    crm = RecordingCrm([{"id": str(n), "score": n} for n in range(5)])
    step = make_step(
        source="hubspot",
        object="contacts",
        filters={"lifecyclestage": "{{ inputs.stage }}"},
        properties=["email"],
        limit=2,
    )
    output = query.run(step, make_ctx(step, inputs={"stage": "lead"}, crm={"hubspot": crm}))
    assert crm.calls == [
        {
            "object": "contacts",
            "filters": {"lifecyclestage": "lead"},
            "properties": ["email"],
            "limit": 2,
        }
    ]
    assert output == {"rows": [{"id": "0", "score": 0}, {"id": "1", "score": 1}], "count": 2}


def test_crm_connector_error_becomes_step_error(make_ctx: MakeContext) -> None:
    step = make_step(source="hubspot", object="contacts")
    ctx = make_ctx(step, crm={"hubspot": RecordingCrm([], fail=True)})
    with pytest.raises(StepError, match=r"query step `q`: hubspot answered 401"):
        query.run(step, ctx)


def test_expired_deadline_times_out_before_querying(make_ctx: MakeContext) -> None:
    step = make_step(sql="select 1 as one")
    with pytest.raises(StepTimeout):
        query.run(step, make_ctx(step, deadline=time.monotonic() - 1))
    assert query.run(step, make_ctx(step, deadline=time.monotonic() + 30))["rows"] == [{"one": 1}]


@pytest.fixture(scope="module")
def pg_warehouse(postgres_url: str) -> Iterator[Engine]:
    """The same ``partners`` table on a real PostgreSQL."""
    url = create_database(postgres_url, f"query_ro_{uuid.uuid4().hex[:10]}")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table partners (id text primary key, name text not null)"))
        conn.execute(sa.text("insert into partners values ('P1', 'Acme'), ('P2', 'Globex')"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "insert into partners values ('P9', 'Mallory') returning id",
        "with gone as (delete from partners returning id) select count(*) from gone",
        "update partners set name = 'x' returning id",
    ],
)
def test_query_steps_on_postgresql_cannot_change_the_warehouse(
    make_ctx: MakeContext, pg_warehouse: Engine, sql: str
) -> None:
    step = make_step(id="sneaky", sql=sql)
    ctx = make_ctx(step)
    ctx.resources = dataclasses.replace(ctx.resources, warehouse=lambda: pg_warehouse)

    with pytest.raises(StepError) as caught:
        query.run(step, ctx)

    assert "query step `sneaky` tried to change the warehouse" in str(caught.value)
    assert "read-only transaction" in str(caught.value)
    with pg_warehouse.connect() as conn:
        rows = conn.execute(sa.text("select id, name from partners order by id")).all()
    assert [tuple(r) for r in rows] == [("P1", "Acme"), ("P2", "Globex")]


def test_query_steps_on_postgresql_still_read(make_ctx: MakeContext, pg_warehouse: Engine) -> None:
    step = make_step(sql="select id from partners where name = :n", params={"n": "Globex"})
    ctx = make_ctx(step)
    ctx.resources = dataclasses.replace(ctx.resources, warehouse=lambda: pg_warehouse)

    assert ids(query.run(step, ctx)) == ["P2"]
