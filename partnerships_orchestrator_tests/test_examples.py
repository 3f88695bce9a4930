"""The example playbooks in ``playbooks/``: valid, and green end to end on the demo warehouse.

Each playbook file runs in process (``Project.execute``) against a fresh copy of one seeded demo
warehouse, with every message going to the sandbox outbox. What each run should have sent is
derived from the warehouse itself (and, for the onboarding fit score, from the playbook's own
expression), never from hard-coded counts.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.expressions import evaluate
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.run_local import RunSummary
from partnerships_orchestrator.settings import Settings, load_settings
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.loader import load_catalog
from partnerships_orchestrator.spec.models import EvaluateStep, Playbook
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
TEMPLATES = REPO / "templates"
PLAYBOOK_FILES = sorted(
    p
    for p in PLAYBOOKS.iterdir()
    if p.suffix in (".yaml", ".yml", ".json")
    and any(
        d and d.get("kind", "playbook") == "playbook" for d in yaml.safe_load_all(p.read_text())
    )
)
UNRENDERED = re.compile(r"\{\{|\{%|\}\}|%\}")
OPEN_STAGES = "('prospecting', 'qualification', 'proposal', 'negotiation')"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seeded_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo warehouse (default size and seed, relative to today), seeded once per module."""
    path = tmp_path_factory.mktemp("demo") / "warehouse.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        ensure_schema(engine)
        seed_demo_data(engine)
    finally:
        engine.dispose()  # closes the last connection: the WAL is checkpointed into the file
    return path


@dataclass
class Env:
    settings: Settings
    warehouse: sa.Engine

    @property
    def state(self) -> StateStore:
        return StateStore(self.settings.state_url)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.warehouse.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


@pytest.fixture
def env(seeded_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    home = tmp_path / "home"
    home.mkdir()
    for file in seeded_warehouse.parent.glob(f"{seeded_warehouse.name}*"):
        shutil.copy(file, home / file.name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for name in ("PARTNER_WAREHOUSE_URL", "PARTNERSHIPS_TEMPLATES", "PARTNERSHIPS_PLAYBOOKS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(playbooks_dir=PLAYBOOKS, home=home)
    engine = create_engine_for(settings.warehouse_url)
    try:
        yield Env(settings, engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- helpers


def _playbook(playbook_id: str) -> Playbook:
    catalog = load_catalog([PLAYBOOKS], templates_dir=TEMPLATES, check_expressions=False)
    model = catalog.get(playbook_id)
    assert isinstance(model, Playbook), f"{playbook_id} did not load: {catalog.problems}"
    return model


def _since(days: int) -> str:
    """``days`` ago as the warehouse stores timestamps in SQLite (naive UTC text)."""
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _by_step(messages: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["step"] == step or m["step"].startswith(f"{step}[")]


def _item_statuses(summary: RunSummary, step: str) -> list[str]:
    return [status for key, status in summary.steps.items() if key.startswith(f"{step}[")]


def _money(amount: float) -> str:
    return f"USD {amount:,.0f}"


# ---------------------------------------------------------------- per-playbook expectations


def check_partner_onboarding(env: Env, summary: RunSummary, messages: list[dict[str, Any]]) -> None:
    playbook = _playbook("partner-onboarding")
    since_days = playbook.inputs["since_days"].default
    min_fit = playbook.inputs["min_fit"].default
    new = env.rows(
        "select * from partners where created_at >= :since and status != 'churned'",
        since=_since(since_days),
    )
    assert new, "the demo warehouse has partners created in the last week"
    scored = next(s for s in playbook.steps if s.id == "scored")
    assert isinstance(scored, EvaluateStep)
    fits = {p["id"]: evaluate(scored.assign["fit"], {"item": p}) for p in new}
    good = [p for p in new if fits[p["id"]] >= min_fit]
    assert good and len(good) < len(new), "the demo exercises both sides of the `when`"

    emails = _by_step(messages, "send_welcome")
    assert sorted(m["recipient"] for m in emails) == sorted(p["contact_email"] for p in good)
    assert {m["channel"] for m in emails} == {"email"}
    by_recipient = {m["recipient"]: m for m in emails}
    for partner in good:
        message = by_recipient[partner["contact_email"]]
        assert partner["name"] in message["subject"]
        assert partner["name"] in message["body"]
        assert partner["account_manager"] in message["body"]
    assert _item_statuses(summary, "send_welcome").count("skipped") == len(new) - len(good)
    assert _item_statuses(summary, "welcome") == ["succeeded"] * len(new)

    [slack] = _by_step(messages, "notify_partner_ops")
    assert (slack["channel"], slack["recipient"]) == ("slack", "#partner-ops")
    assert f"{len(new)} partner(s) joined" in slack["body"]
    assert f"{len(good)} welcomed by email" in slack["body"]
    for partner in new:
        assert partner["name"] in slack["body"]
    assert summary.steps["new_partners"] == summary.steps["notify_partner_ops"] == "succeeded"
    assert summary.dead_letters == 0


def check_weekly_pipeline_digest(
    env: Env, summary: RunSummary, messages: list[dict[str, Any]]
) -> None:
    playbook = _playbook("weekly-pipeline-digest")
    days, top = playbook.inputs["days"].default, playbook.inputs["top"].default
    open_deals = env.rows(
        "select d.name, d.amount, p.name as partner from deals d join partners p"
        f" on p.id = d.partner_id where d.stage in {OPEN_STAGES} and d.updated_at >= :since"
        " order by d.amount desc, d.id",
        since=_since(days),
    )
    assert open_deals, "the demo warehouse has open deals touched this week"
    total = sum(d["amount"] for d in open_deals)

    [slack] = _by_step(messages, "post_to_slack")
    assert (slack["channel"], slack["recipient"]) == ("slack", "#partnerships-leadership")
    body = slack["body"]
    assert f"**{len(open_deals)} open deals** worth **{_money(total)}**" in body
    assert "| Stage | Deals | Amount | Weighted |" in body
    for deal in open_deals[:top]:
        assert deal["name"] in body and deal["partner"] in body

    [email] = _by_step(messages, "email_leadership")
    assert (email["channel"], email["recipient"]) == ("email", "leadership@example.org")
    assert _money(total) in email["subject"]
    [attachment] = email["attachments"]
    pdf = Path(attachment)
    assert pdf.is_file() and pdf.is_relative_to(env.settings.artifacts_dir)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2_000
    assert set(summary.steps.values()) == {"succeeded"} and len(summary.steps) == 7
    # The two queries (and the two renderings) have no path between them: they run in parallel.
    levels = StepGraph.of(playbook).levels
    assert {"pipeline", "top_deals"} <= set(levels[0])
    assert any({"digest", "digest_pdf"} <= set(level) for level in levels)


def check_churn_risk_alert(env: Env, summary: RunSummary, messages: list[dict[str, Any]]) -> None:
    # The demo's churn-risk partners: active, health < 40, idle 45+ days, usage declining.
    at_risk = [
        p
        for p in env.rows(
            "select p.*,"
            " (select active_users from usage_monthly u where u.partner_id = p.id"
            "  order by month desc limit 1) as users_now,"
            " (select active_users from usage_monthly u where u.partner_id = p.id"
            "  order by month asc limit 1) as users_first"
            " from partners p where status = 'active' and health_score < 40"
            " and last_activity_at <= :idle",
            idle=_since(45),
        )
        if p["users_now"] < p["users_first"]
    ]
    assert at_risk, "the demo warehouse has churn-risk partners"

    emails = _by_step(messages, "email_account_manager")
    assert len(emails) == len(at_risk)
    for partner in at_risk:
        [email] = [m for m in emails if partner["name"] in (m["subject"] or "")]
        assert email["recipient"] == partner["account_manager_email"]
        assert partner["name"] in email["body"] and "| Health score |" in email["body"]
    posts = _by_step(messages, "post_account_channel")
    assert sorted(m["recipient"] for m in posts) == sorted(p["slack_channel"] for p in at_risk)
    assert all(m["channel"] == "slack" for m in posts)
    for partner in at_risk:
        assert any(partner["name"] in m["body"] for m in posts)

    # The CRM webhook cannot be reached: skipped, dead-lettered, and the run still succeeded.
    assert summary.steps["open_crm_tasks"] == "skipped"
    [dead] = env.state.dead_letters(run_id=summary.run_id)
    assert (dead["playbook"], dead["step"], dead["action"]) == (
        "churn-risk-alert",
        "open_crm_tasks",
        "skip",
    )
    assert "crm-hooks.partnerships.invalid" in dead["error"]
    assert dead["inputs"]["step"]["sign"] is True
    assert _item_statuses(summary, "email_account_manager") == ["succeeded"] * len(at_risk)


def check_event_follow_up(env: Env, summary: RunSummary, messages: list[dict[str, Any]]) -> None:
    event_id = _playbook("event-follow-up").inputs["event_id"].default
    [event] = env.rows("select * from events where id = :id", id=event_id)
    assert event["starts_at"] < _since(0), f"the default event {event_id} is in the past"
    registrations = env.rows(
        "select a.attended, c.first_name, c.email, c.phone, p.name as partner"
        " from event_attendance a join contacts c on c.id = a.contact_id"
        " join partners p on p.id = a.partner_id where a.event_id = :id",
        id=event_id,
    )
    came = [r for r in registrations if r["attended"]]
    missed = [r for r in registrations if not r["attended"]]
    assert came and missed, f"the default event {event_id} has attendees and no-shows"

    sms = _by_step(messages, "sms_thanks")
    assert sorted(m["recipient"] for m in sms) == sorted(r["phone"] for r in came)
    assert all(m["channel"] == "sms" and event["name"] in m["body"] for m in sms)
    emails = _by_step(messages, "email_no_show")
    assert sorted(m["recipient"] for m in emails) == sorted(r["email"] for r in missed)
    for row in missed:
        [email] = [m for m in emails if m["recipient"] == row["email"]]
        assert row["partner"] in email["body"] and f"Hi {row['first_name']}," in email["body"]
        assert f"/events/{event_id}/recording" in email["body"]
    assert _item_statuses(summary, "sms_thanks").count("skipped") == len(missed)
    assert _item_statuses(summary, "email_no_show").count("skipped") == len(came)

    [teams] = _by_step(messages, "teams_summary")
    assert (teams["channel"], teams["recipient"]) == ("teams", "partner-events")
    assert f"Registered: {len(registrations)}" in teams["body"]
    assert f"thanked by SMS: {len(came)}" in teams["body"]
    assert f"recording emailed: {len(missed)}" in teams["body"]
    assert summary.dead_letters == 0


CHECKS: dict[str, Callable[[Env, RunSummary, list[dict[str, Any]]], None]] = {
    "partner-onboarding": check_partner_onboarding,
    "weekly-pipeline-digest": check_weekly_pipeline_digest,
    "churn-risk-alert": check_churn_risk_alert,
    "event-follow-up": check_event_follow_up,
}


# ---------------------------------------------------------------- tests


def test_examples_validate_without_problems() -> None:
    catalog = load_catalog([PLAYBOOKS], templates_dir=TEMPLATES, check_expressions=True)
    assert [str(p) for p in catalog.problems] == []
    assert set(CHECKS) <= {p.id for p in catalog.playbooks()}


@pytest.mark.parametrize("file", PLAYBOOK_FILES, ids=lambda p: p.name)
def test_example_runs_green_on_demo_data(file: Path, env: Env) -> None:
    documents = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d]
    playbooks = [d for d in documents if d.get("kind", "playbook") == "playbook"]
    for document in playbooks:
        playbook_id = document["id"]
        summary = Project(env.settings).execute(playbook_id, {})
        assert summary.success, summary.errors
        assert not summary.errors
        assert "failed" not in summary.steps.values()
        messages = env.state.outbox(run_id=summary.run_id)
        assert messages, "every example sends something"
        assert summary.messages_sent == len(messages)
        for message in messages:
            assert message["playbook"] == playbook_id
            for text in (message["subject"] or "", message["body"], message["recipient"]):
                assert not UNRENDERED.search(text), f"un-rendered template in {message['step']}"
        check = CHECKS.get(playbook_id)
        if check is not None:
            check(env, summary, messages)


def test_webhook_payload_fills_event_follow_up_input() -> None:
    from partnerships_orchestrator.compiler.triggers import webhook_run_request

    playbook = _playbook("event-follow-up")
    entry = {"payload": {"event_id": "E003"}, "webhook_id": "msg_1", "received_at": None}
    request = webhook_run_request(playbook, entry)
    assert request.run_config == {"event_id": "E003"}


def test_onboarding_summary_still_posted_when_no_partner_is_a_good_fit(env: Env) -> None:
    summary = Project(env.settings).execute("partner-onboarding", {"min_fit": 101})
    assert summary.success
    [slack] = _by_step(env.state.outbox(run_id=summary.run_id), "notify_partner_ops")
    assert "0 welcomed by email" in slack["body"]


# ---------------------------------------------------------------- asset documents

ASSET_KINDS = ("sync", "dataset", "metrics", "report")


def test_asset_examples_cover_every_asset_kind() -> None:
    catalog = load_catalog([PLAYBOOKS], templates_dir=TEMPLATES)
    kinds = {d.model.kind for d in catalog.documents}
    assert set(ASSET_KINDS) <= kinds
    providers = {d.model.provider for d in catalog.documents if d.model.kind == "sync"}
    assert providers == {"hubspot", "salesforce"}


def test_asset_examples_materialize_green_on_demo_data(env: Env) -> None:
    """Every sync, dataset, metrics set and report example, materialized twice (the second run
    incremental) with the sandbox CRM: counts, numbers and the report derived from the data."""
    from pypdf import PdfReader

    from partnerships_orchestrator.materialize import materialize_assets
    from partnerships_orchestrator.project import Project

    first = materialize_assets(Project(env.settings), progress=False)
    assert first.success, first.as_dict()
    assert {o.status for o in first.assets.values()} == {"materialized"}
    # each sync table holds the sandbox CRM's records, once each
    for asset, outcome in first.assets.items():
        if asset.startswith(("hubspot_", "salesforce_")):
            provider, _, obj = asset.partition("_")
            rows = env.rows(f"select count(*) as n, count(distinct id) as ids from {asset}")[0]
            assert rows["n"] == rows["ids"] == outcome.numbers["records_seen"] > 0
    engagement = env.rows("select * from partner_engagement")
    live = env.rows("select count(*) as n from partners where status != 'churned'")[0]["n"]
    assert len(engagement) == live
    tiers = env.rows("select * from pipeline_by_tier order by tier_order")
    assert [t["tier"] for t in tiers] == ["gold", "silver", "bronze"]
    open_amount = env.rows(
        "select sum(amount) as s from hubspot_deals where not is_deleted "
        "and dealstage not in ('closedwon', 'closedlost')"
    )[0]["s"]
    assert sum(t["open_amount"] for t in tiers) == pytest.approx(open_amount)
    history = env.rows(
        "select metric, value from metric_history where metric = 'open_pipeline_usd'"
    )
    assert [h["value"] for h in history] == [pytest.approx(open_amount)]

    report = next(
        Path(p)
        for p in (env.settings.artifacts_dir / "reports" / "quarterly-partner-review").rglob(
            "*.pdf"
        )
    )
    text = "\n".join(page.extract_text() for page in PdfReader(report).pages)
    assert _money(open_amount) in text
    active = env.rows("select count(*) as n from partners where status = 'active'")[0]["n"]
    assert f"Active partners {active}" in text
    sent = {m["recipient"] for m in env.state.outbox()}
    assert {"leadership@example.org", "#partnerships-leadership"} <= sent

    second = materialize_assets(Project(env.settings), ["hubspot_deals"], progress=False)
    assert second.success
    deals = second.assets["hubspot_deals"].numbers
    assert 0 < deals["records_seen"] < first.assets["hubspot_deals"].numbers["records_seen"]
    assert deals["rows_deleted"] > 0  # the sandbox deletes a few records every generation
