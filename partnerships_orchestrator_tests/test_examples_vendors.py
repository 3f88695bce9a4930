"""Every example playbook against the vendors' emulators, through a `kind: connections` document
whose secrets are environment references: nothing lands in the outbox, every message reaches the
vendor exactly once."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.emulators import sendgrid, slack, teams, twilio

ROOT = Path(__file__).resolve().parents[1]

CONNECTIONS = """
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {sendgrid}
    rate_limit: {{requests: 50, per_seconds: 1}}
  sms:
    provider: twilio
    account_sid: {twilio_sid}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    from: "{twilio_from}"
    base_url: {twilio}
    rate_limit: {{requests: 50, per_seconds: 1}}
  slack: {{token: "${{env:SLACK_BOT_TOKEN}}", base_url: {slack}, per_channel_interval_seconds: 0}}
  teams: {{webhook_url: "${{env:TEAMS_WEBHOOK_URL}}"}}
"""


@dataclass
class Vendors:
    sendgrid: sendgrid.SendGridEmulator
    twilio: twilio.TwilioEmulator
    slack: slack.SlackEmulator
    teams: teams.TeamsEmulator


@pytest.fixture(scope="module")
def vendors() -> Iterator[Vendors]:
    emulators = Vendors(
        sendgrid.SendGridEmulator(),
        twilio.TwilioEmulator(),
        slack.SlackEmulator(),
        teams.TeamsEmulator(),
    )
    servers = [e.serve() for e in vars(emulators).values()]
    yield emulators
    for server in servers:
        server.stop()


@pytest.fixture
def product(vendors: Vendors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    playbooks = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", playbooks)
    settings = Settings(
        playbooks_dir=playbooks, templates_dir=ROOT / "templates", home=tmp_path / "home"
    )
    engine = create_engine_for(settings.warehouse_url)
    ensure_schema(engine)
    seed_demo_data(engine)
    with engine.connect() as conn:
        channels = (
            conn.execute(sa.text("select distinct slack_channel from partners")).scalars().all()
        )
    for emulator in vars(vendors).values():
        emulator.reset()
    for name in [*channels, "#partner-ops", "#partnerships-leadership"]:
        vendors.slack.add_channel(name.removeprefix("#"))
    (playbooks / "connections.yaml").write_text(
        CONNECTIONS.format(
            sendgrid=vendors.sendgrid.base_url,
            twilio=vendors.twilio.base_url,
            twilio_sid=twilio.ACCOUNT_SID,
            twilio_from=twilio.FROM_NUMBER,
            slack=vendors.slack.base_url,
        )
    )
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid.API_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", twilio.AUTH_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", vendors.slack.issue_token())
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", vendors.teams.add_workflow("partner-events"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("PARTNER_WAREHOUSE_URL", raising=False)
    return settings


def delivered(vendors: Vendors) -> Counter[tuple[str, str]]:
    """(channel, recipient) of everything the vendors accepted."""
    seen: Counter[tuple[str, str]] = Counter()
    seen.update(("email", d.to) for d in vendors.sendgrid.state.delivered)
    seen.update(("sms", m.to) for m in vendors.twilio.state.messages)
    seen.update(("slack", "#" + m.channel_name) for m in vendors.slack.messages)
    seen.update(("teams", p.channel) for p in vendors.teams.posts)
    return seen


@pytest.mark.parametrize(
    "playbook",
    ["partner-onboarding", "weekly-pipeline-digest", "churn-risk-alert", "event-follow-up"],
)
def test_example_delivers_through_the_configured_vendors(product, vendors, playbook):
    summary = Project(product).execute(playbook, {})
    assert summary.success, summary.errors
    state = StateStore(product.state_url)
    assert state.outbox(run_id=summary.run_id) == []
    ledger = [d for d in state.deliveries(summary.run_id) if d["status"] == "sent"]
    assert ledger and summary.messages_sent == len(ledger)
    expected = Counter((d["channel"], d["recipient"]) for d in ledger)
    assert delivered(vendors) == expected  # each message reached its vendor exactly once
    assert {d["provider"] for d in ledger} <= {"sendgrid", "twilio", "slack", "teams"}


def test_connections_check_reports_each_vendor_without_secrets(product, vendors):
    results = {r["connection"]: r for r in Project(product).check()}
    assert {k: results[k]["provider"] for k in ("email", "sms", "slack", "teams")} == {
        "email": "sendgrid",
        "sms": "twilio",
        "slack": "slack",
        "teams": "teams",
    }
    assert all(results[k]["ok"] for k in ("email", "sms", "slack", "warehouse"))
    text = repr(results)
    for secret in (sendgrid.API_KEY, twilio.AUTH_TOKEN):
        assert secret not in text
    assert results["email"]["rate_limit"].startswith("50 per 1 s")
    assert (
        results["slack"]["rate_limit"] == "100 per minute in all"
    )  # per channel pacing is off here
    assert results["teams"]["ok"] is None  # a webhook cannot be checked without posting


CRM_PLAYBOOK = """
id: crm-customers
steps:
  - id: customers
    type: query
    source: hubspot
    object: contacts
    filters: {lifecyclestage: customer}
    properties: [email, lifecyclestage]
  - id: tell
    type: communicate
    depends_on: [customers]
    channel: slack
    to: "#partner-ops"
    body: "{{ steps.customers.count }} customers: {{ steps.customers.rows | map(attribute='email') | join(', ') }}"
"""


def test_a_query_step_reads_the_crm_through_its_connection(product, vendors, monkeypatch):
    from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator

    hubspot = HubSpotEmulator()
    with hubspot.serve():
        for n in range(250):
            stage = "customer" if n % 3 == 0 else "lead"
            hubspot.add_record("contacts", {"email": f"c{n}@example.com", "lifecyclestage": stage})
        monkeypatch.setenv("HUBSPOT_TOKEN", hubspot.issue_private_token())
        connections = product.playbooks_dir / "connections.yaml"
        connections.write_text(
            connections.read_text()
            + f'  hubspot: {{token: "${{env:HUBSPOT_TOKEN}}", base_url: {hubspot.base_url}}}\n'
        )
        (product.playbooks_dir / "crm.yaml").write_text(CRM_PLAYBOOK)
        summary = Project(product).execute("crm-customers", {})
    assert summary.success, summary.errors
    [message] = vendors.slack.messages
    assert message.text.startswith("84 customers: c0@example.com, c3@example.com")
    assert len(hubspot.requests("/crm/v3/objects/contacts/search")) == 1  # one page of 200 holds 84


def test_a_step_can_keep_to_the_outbox_while_its_channel_is_connected(product, vendors):
    (product.playbooks_dir / "rehearse.yaml").write_text(
        "id: rehearse\nsteps:\n"
        "  - {id: draft, type: communicate, channel: email, provider: outbox,"
        " to: ops@example.org, subject: Draft, body: Hello}\n"
        "  - {id: real, type: communicate, channel: email, provider: sendgrid,"
        " to: ops@example.org, subject: Final, body: Hello}\n"
    )
    summary = Project(product).execute("rehearse", {})
    assert summary.success, summary.errors
    [kept] = StateStore(product.state_url).outbox(run_id=summary.run_id)
    assert kept["subject"] == "Draft"
    assert [d.subject for d in vendors.sendgrid.state.delivered] == ["Final"]


def test_sync_examples_read_the_configured_crms(product, vendors, monkeypatch):
    """The HubSpot and Salesforce sync examples with `hubspot` and `salesforce` connections:
    every emulator record lands once; the report then reaches SendGrid and Slack, not the
    outbox; a configured connection that fails fails the sync, never falling back."""
    from partnerships_orchestrator.materialize import materialize_assets
    from partnerships_orchestrator.project import Project
    from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator
    from partnerships_orchestrator_tests.emulators.salesforce import SalesforceEmulator

    hubspot, salesforce = HubSpotEmulator(), SalesforceEmulator()
    with hubspot.serve(), salesforce.serve():
        for obj, count in (("contacts", 400), ("companies", 60), ("deals", 150)):
            hubspot.seed(obj, count)
        for obj, count in (("Account", 60), ("Contact", 300), ("Opportunity", 120)):
            salesforce.seed(obj, count)
        monkeypatch.setenv("HUBSPOT_TOKEN", hubspot.issue_private_token())
        monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "sf-client-secret-1")
        connections = product.playbooks_dir / "connections.yaml"
        connections.write_text(
            connections.read_text()
            + f'  hubspot: {{token: "${{env:HUBSPOT_TOKEN}}", base_url: {hubspot.base_url}}}\n'
            + f"  salesforce: {{login_url: {salesforce.base_url}, client_id: sf-client-1,"
            + ' client_secret: "${env:SALESFORCE_CLIENT_SECRET}"}\n'
        )
        summary = materialize_assets(Project(product), progress=False)
        assert summary.success, summary.as_dict()
        engine = create_engine_for(product.warehouse_url)
        with engine.connect() as conn:
            for table, emulator, obj in (
                ("hubspot_contacts", hubspot, "contacts"),
                ("hubspot_deals", hubspot, "deals"),
                ("salesforce_accounts", salesforce, "Account"),
                ("salesforce_opportunities", salesforce, "Opportunity"),
            ):
                landed = conn.execute(sa.text(f"select count(distinct id) from {table}")).scalar()
                assert (
                    landed == emulator.count(obj) == summary.assets[table].numbers["records_seen"]
                )
        engine.dispose()
        assert StateStore(product.state_url).outbox() == []
        assert ("email", "leadership@example.org") in delivered(vendors)
        assert any(channel == "slack" for channel, _ in delivered(vendors))

        monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-revoked")
        failed = materialize_assets(Project(product), ["hubspot_contacts"], progress=False)
    outcome = failed.assets["hubspot_contacts"]
    assert not failed.success and outcome.status == "failed"
    assert "hubspot" in (outcome.error or "").lower()
    assert "pat-na1-revoked" not in (outcome.error or "")  # the secret never reaches messages
