"""Datasets and metrics compiled from documents and materialized by Dagster on SQLite and
PostgreSQL: lineage from the SQL, atomic replacement, each check type failing when it should,
blocking checks stopping what is downstream, metric values and their history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from partnerships_orchestrator.compiler.location import build_repository
from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator.spec.lineage import SqlProblem, tables_read
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator

Materialize = Callable[..., dg.ExecuteInProcessResult]


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("select * from partners", ["partners"]),
        (
            "with recent as (select * from deals where updated_at > '2024-01-01') "
            "select p.id, count(r.id) from partners p left join recent r on r.partner_id = p.id "
            "group by p.id",
            ["deals", "partners"],
        ),
        (
            "select id, (select count(*) from contacts c where c.partner_id = p.id) as people "
            "from partners p where p.id in (select partner_id from event_attendance)",
            ["contacts", "event_attendance", "partners"],
        ),
        (
            "select * from (select partner_id, sum(amount) as total from hubspot_deals group by 1) t",
            ["hubspot_deals"],
        ),
        (
            "with a as (select * from b_source), b as (select * from a) select * from b",
            ["b_source"],
        ),
        ("select * from analytics.partners", ["partners"]),
    ],
    ids=["table", "cte", "subqueries", "derived_table", "chained_ctes", "qualified"],
)
def test_lineage_reads_through_ctes_and_subqueries(sql: str, tables: list[str]) -> None:
    assert tables_read(sql) == tables


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("select id, from where", "Expected table name but got `where`"),
        ("delete from partners", "found DELETE"),
        ("select 1; select 2", "found 2"),
    ],
)
def test_lineage_refuses_what_is_not_one_query(sql: str, message: str) -> None:
    with pytest.raises(SqlProblem, match=message):
        tables_read(sql)


@pytest.fixture
def materialize(
    tmp_path: Path, warehouse_url: str, warehouse: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> Materialize:
    """Write documents to a playbooks folder, build the code location and materialize."""
    monkeypatch.setenv("PARTNER_WAREHOUSE_URL", warehouse_url)
    seed_demo_data(warehouse, partners=60)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    instance = dg.DagsterInstance.ephemeral()

    def repository() -> dg.RepositoryDefinition:
        return build_repository(load_settings(folder, tmp_path / "home"), strict=True)

    def run(documents: str, *select: str) -> dg.ExecuteInProcessResult:
        (folder / "assets.yaml").write_text(documents)
        repo = repository()
        job = repo.get_implicit_global_asset_job_def()
        if select:
            job = job.get_subset(asset_selection={dg.AssetKey(k) for k in select})
        return job.execute_in_process(instance=instance, raise_on_error=False)

    run.repository = repository  # type: ignore[attr-defined]
    run.instance = instance  # type: ignore[attr-defined]
    return run


def scalar(engine: sa.Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


TIER_COUNTS = """
kind: dataset
id: partners-by-tier
sql: |
  with live as (select * from partners where status != 'churned')
  select tier, count(*) as partners, max(updated_at) as newest
  from live group by tier
checks:
  - {type: unique, column: tier}
  - {type: not_null, column: partners}
  - {type: accepted_values, column: tier, values: [gold, silver, bronze]}
  - {type: row_count, min: 1, max: 3}
  - {type: freshness, column: newest, max_age_hours: 100000}
---
kind: dataset
id: top_tier
sql: select * from partners_by_tier where tier = 'gold'
"""


def test_dataset_materializes_with_lineage_metadata_and_passing_checks(
    materialize: Materialize, warehouse: sa.Engine
) -> None:
    result = materialize(TIER_COUNTS)
    assert result.success
    materialized = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert set(materialized) == {"partners_by_tier", "top_tier"}
    expected = scalar(
        warehouse, "select count(distinct tier) from partners where status != 'churned'"
    )
    assert materialized["partners_by_tier"]["dagster/row_count"].value == expected
    schema = materialized["partners_by_tier"]["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == ["tier", "partners", "newest"]
    assert scalar(warehouse, "select sum(partners) from partners_by_tier") == scalar(
        warehouse, "select count(*) from partners where status != 'churned'"
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "unique_tier": True,
        "not_null_partners": True,
        "accepted_values_tier": True,
        "row_count": True,
        "freshness_newest": True,
    }
    repo = materialize.repository()  # type: ignore[attr-defined]  # lineage from the SQL
    node = repo.asset_graph.get(dg.AssetKey("top_tier"))
    assert dg.AssetKey("partners_by_tier") in node.parent_keys
    assert (
        dg.AssetKey("partners") in repo.asset_graph.get(dg.AssetKey("partners_by_tier")).parent_keys
    )
    # no schedule: follows its upstreams; warehouse tables never hold it back
    condition = node.automation_condition
    assert condition is not None and "eager" in condition.get_label()
    assert not any(s.name.startswith("top_tier") for s in repo.schedule_defs)
    sensor = repo.get_sensor_def("partnerships_automation")  # runs without being switched on
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(repo.asset_graph)  # type: ignore[union-attr]
    assert targeted == {dg.AssetKey("partners_by_tier"), dg.AssetKey("top_tier")}
    assert "default_automation_condition_sensor" not in {s.name for s in repo.sensor_defs}


def test_dataset_with_a_schedule_gets_a_job_and_no_automation(materialize: Materialize) -> None:
    scheduled = TIER_COUNTS + 'schedule: {cron: "0 6 * * 1", timezone: Europe/Berlin}\n'
    assert materialize(scheduled, "partners_by_tier").success
    repo = materialize.repository()  # type: ignore[attr-defined]
    assert repo.asset_graph.get(dg.AssetKey("top_tier")).automation_condition is None
    schedule = repo.get_schedule_def("top_tier__assets__schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * 1", "Europe/Berlin")
    assert schedule.job_name == "top_tier__assets"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("{type: unique, column: region}", "appear more than once"),
        ("{type: not_null, column: website}", "row(s) have no `website`"),
        ("{type: accepted_values, column: tier, values: [gold]}", "outside `gold`"),
        ("{type: row_count, min: 100000}", "expected between 100000"),
        ("{type: row_count, max: 2}", "expected between 0 and 2"),
        ("{type: freshness, column: created_at, max_age_hours: 0.001}", "h old"),
        ("{type: not_null, column: no_such_column}", "column `no_such_column` is not produced"),
    ],
    ids=[
        "unique",
        "not_null",
        "accepted_values",
        "row_count_min",
        "row_count_max",
        "freshness",
        "unknown_column",
    ],
)
def test_each_check_type_fails_when_it_should(
    materialize: Materialize, warehouse: sa.Engine, check: str, message: str
) -> None:
    with warehouse.begin() as conn:  # some partners have no website
        conn.execute(sa.text("update partners set website = null where tier = 'bronze'"))
    documents = f"""
kind: dataset
id: checked
sql: select id, tier, region, website, created_at from partners
checks: [{check}]
"""
    result = materialize(documents)
    assert result.success  # a failing non-blocking check does not fail the run
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert message in (evaluation.description or "")


BLOCKED = """
kind: dataset
id: upstream_table
sql: select id, tier from partners
checks:
  - {type: accepted_values, column: tier, values: [gold], blocking: true}
---
kind: dataset
id: downstream_table
sql: select count(*) as n from upstream_table
"""


def test_blocking_check_stops_downstream_assets(materialize: Materialize) -> None:
    result = materialize(BLOCKED)
    assert not result.success
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == [
        "upstream_table"
    ]
    warned = materialize(BLOCKED.replace("blocking: true", "blocking: true, severity: warn"))
    assert warned.success  # a warning never blocks
    assert {e.asset_key.to_user_string() for e in warned.get_asset_materialization_events()} == {
        "upstream_table",
        "downstream_table",
    }


def test_failed_rebuild_keeps_the_previous_table_whole(
    materialize: Materialize, warehouse: sa.Engine
) -> None:
    good = (
        "kind: dataset\nid: gold_partners\nsql: select id, name from partners where tier = 'gold'\n"
    )
    assert materialize(good).success
    before = scalar(warehouse, "select count(*) from gold_partners")
    broken = good.replace("select id, name", "select id, name, 1 / 0 as boom, missing_column")
    failed = materialize(broken)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.to_string()
    assert "dataset `gold_partners`: the warehouse refused its SQL" in message
    assert "the previous table is unchanged" in message
    assert scalar(warehouse, "select count(*) from gold_partners") == before
    leftovers = [t for t in sa.inspect(warehouse).get_table_names() if "__building_" in t]
    assert leftovers == []


METRICS = """
kind: metrics
id: partner-health
metrics:
  - {id: active_partners, sql: "select count(*) from partners where status = 'active'", target: 100000}
  - id: gold_share
    sql: "select 1.0 * sum(case when tier = 'gold' then 1 else 0 end) / count(*) from partners"
    thresholds: {warn: 0.9, error: 0.0}
  - id: churned
    sql: "select count(*) from partners where status = 'churned'"
    higher_is_better: false
    thresholds: {warn: 100, error: 0}
  - {id: nothing, sql: "select sum(amount) from deals where amount < 0"}
"""


def test_metrics_record_values_history_and_severities(
    materialize: Materialize, warehouse: sa.Engine
) -> None:
    first = materialize(METRICS)
    assert first.success
    (event,) = first.get_asset_materialization_events()
    metadata = event.materialization.metadata
    active = scalar(warehouse, "select count(*) from partners where status = 'active'")
    churned = scalar(warehouse, "select count(*) from partners where status = 'churned'")
    assert metadata["active_partners"].value == active
    assert metadata["churned"].value == churned
    assert metadata["nothing"].value is None
    checks = {e.check_name: (e.passed, e.severity) for e in first.get_asset_check_evaluations()}
    assert checks == {
        "active_partners_target": (False, dg.AssetCheckSeverity.WARN),
        "gold_share_thresholds": (False, dg.AssetCheckSeverity.WARN),
        "churned_thresholds": (churned == 0, dg.AssetCheckSeverity.ERROR),
    }
    assert materialize(METRICS).success
    with warehouse.connect() as conn:
        history = conn.execute(
            sa.text(
                "select metric, count(*), count(distinct run_id) from metric_history "
                "where metrics_set = 'partner-health' group by metric order by metric"
            )
        ).all()
    assert [tuple(r) for r in history] == [
        ("active_partners", 2, 2),
        ("churned", 2, 2),
        ("gold_share", 2, 2),
        ("nothing", 2, 2),
    ]


TRIGGERED = (
    TIER_COUNTS
    + """
---
id: after-tiers
triggers: [{type: dataset, dataset: partners-by-tier}]
steps:
  - {id: tiers, type: query, sql: "select count(*) as n from partners_by_tier"}
"""
)


def test_dataset_trigger_runs_the_playbook_after_the_asset_materializes(
    materialize: Materialize,
) -> None:
    instance: dg.DagsterInstance = materialize.instance  # type: ignore[attr-defined]
    assert materialize(TRIGGERED, "partners_by_tier").success is True
    repo = materialize.repository()  # type: ignore[attr-defined]
    sensor = repo.get_sensor_def("after_tiers__after_partners_by_tier")
    assert sensor.asset_key == dg.AssetKey("partners_by_tier")  # `-` in the id: the same key
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
    (request,) = tick.run_requests or []
    assert "partners_by_tier" not in request.run_key  # keyed by the document id as written
    assert request.run_key.startswith("dataset:partners-by-tier:")
    cursor = tick.cursor
    again = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repo, cursor=cursor)
    )
    assert not again.run_requests  # one run per materialization
    assert materialize(TRIGGERED, "partners_by_tier").success
    third = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=repo, cursor=cursor)
    )
    assert len(third.run_requests or []) == 1


# the `kind: dataset` and `kind: metrics` examples of the language reference, verbatim, on the
# tables a `kind: sync` of HubSpot lands from the sandbox demo CRM (no connection configured)
SPEC_EXAMPLES = """
kind: sync
id: hubspot
provider: hubspot
objects: [companies, deals]
---
kind: dataset
id: partner_engagement
sql: |
  select c.id, c.name, count(d.id) as open_deals
  from hubspot_companies c left join hubspot_deals d on d.company_id = c.id
  group by c.id, c.name
checks:
  - {type: unique, column: id}
  - {type: not_null, column: name}
---
kind: metrics
id: partner-health
metrics:
  - {id: active_partners, sql: "select count(*) from partners where status = 'active'", target: 120}
  - {id: open_pipeline_usd, sql: "select sum(amount) from hubspot_deals where stage != 'closed'"}
"""


def test_spec_dataset_and_metrics_examples_materialize_on_the_sandbox_crm(
    materialize: Materialize, warehouse: sa.Engine
) -> None:
    from datetime import date

    from partnerships_orchestrator.assets.demo_crm import PARTNERS, SEED
    from partnerships_orchestrator.demo import generate_demo_rows

    result = materialize(SPEC_EXAMPLES)
    assert result.success
    source = generate_demo_rows(partners=PARTNERS, seed=SEED, today=date.today())
    # open_deals: every deal of the source counted at its partner's company, none lost
    with warehouse.connect() as conn:
        per_partner = dict(
            conn.execute(
                sa.text(
                    "select c.partner_key, e.open_deals from partner_engagement e "
                    "join hubspot_companies c on c.id = e.id"
                )
            ).all()
        )
    expected = {p["id"]: 0 for p in source["partners"]}
    for deal in source["deals"]:
        expected[deal["partner_id"]] += 1
    assert per_partner == expected
    assert sum(expected.values()) == len(source["deals"]) > 0
    assert 0 in expected.values() and max(expected.values()) > 1  # both cases covered
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["unique_id"] and checks["not_null_name"]
    # the metrics: active partners of the warehouse, the open pipeline of the source's deals
    metrics = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "partner_health"
    )
    active = scalar(warehouse, "select count(*) from partners where status = 'active'")
    assert active > 0
    assert metrics["active_partners"].value == active
    open_amount = sum(
        d["amount"] for d in source["deals"] if d["stage"] not in ("closed_won", "closed_lost")
    )
    closed = [d for d in source["deals"] if d["stage"] in ("closed_won", "closed_lost")]
    assert closed and open_amount > 0  # the filter has something to leave out
    assert metrics["open_pipeline_usd"].value == pytest.approx(float(open_amount))
    stages = scalar(warehouse, "select count(distinct stage) from hubspot_deals")
    assert stages == len({d["stage"] for d in source["deals"]} - {"closed_won", "closed_lost"}) + 1
    assert scalar(warehouse, "select count(*) from hubspot_deals where dealstage = 'closedwon'")


def test_spec_dataset_and_metrics_examples_materialize_through_a_hubspot_connection(
    materialize: Materialize,
    warehouse: sa.Engine,
    hubspot: HubSpotEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    companies = hubspot.seed("companies", 8)
    deals = hubspot.seed("deals", 230)  # amounts vary; stages cycle through one closed stage
    expected = dict.fromkeys(companies, 0)
    for n, deal in enumerate(deals[:220]):  # 10 deals without a company; 2 companies without deals
        company = companies[n % 6]
        hubspot.associate("deals", deal, "companies", company, primary=True)
        expected[company] += 1
    hubspot.associate("deals", deals[1], "companies", companies[0])  # lower id, not primary
    monkeypatch.setenv("HUBSPOT_TOKEN", hubspot.issue_private_token())
    connection = (
        "kind: connections\nid: default\nconnections:\n"
        f'  hubspot: {{token: "${{env:HUBSPOT_TOKEN}}", base_url: {hubspot.base_url}}}\n---\n'
    )
    result = materialize(connection + SPEC_EXAMPLES)
    assert result.success
    with warehouse.connect() as conn:
        per_company = dict(
            conn.execute(sa.text("select id, open_deals from partner_engagement")).all()
        )
    assert per_company == expected
    with hubspot.lock:
        records = [hubspot.state.objects["deals"][int(d)].properties for d in deals]
    open_amount = sum(
        float(p["amount"] or 0)
        for p in records
        if p["dealstage"] not in ("closedwon", "closedlost")
    )
    assert 0 < open_amount < sum(float(p["amount"] or 0) for p in records)
    metrics = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "partner_health"
    )
    assert metrics["open_pipeline_usd"].value == pytest.approx(open_amount)
    assert metrics["active_partners"].value == scalar(
        warehouse, "select count(*) from partners where status = 'active'"
    )
    sync = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "hubspot_deals"
    )
    assert sync["sandbox"].value is False
