"""Demo data: sizes, realism relative to ``today``, integrity, determinism, idempotence."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.warehouse import (
    TABLES,
    activities,
    contacts,
    deals,
    event_attendance,
    events,
    partners,
    usage_monthly,
)
from partnerships_orchestrator.warehouse import create_engine_for as engine_for
from partnerships_orchestrator_tests.postgres import create_database

TODAY = date(2025, 1, 15)  # January: the usage months cross a year boundary
MIDNIGHT = datetime(2025, 1, 15)
WEEK_AGO = MIDNIGHT - timedelta(days=7)
STALE = MIDNIGHT - timedelta(days=30)
Dump = dict[str, list[tuple[Any, ...]]]


def _dump(engine: sa.Engine) -> Dump:
    """Every row of every table, in primary-key order."""
    with engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key))]
            for t in TABLES
        }


def _rows(engine: sa.Engine, table: sa.Table) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table)))


def _seeded(**kwargs: Any) -> sa.Engine:
    engine = engine_for("sqlite://")
    seed_demo_data(engine, **kwargs)
    return engine


@pytest.fixture(scope="module")
def warehouse() -> sa.Engine:
    return _seeded(today=TODAY)


@pytest.fixture(scope="module")
def by_table(warehouse: sa.Engine) -> dict[str, list[sa.Row[Any]]]:
    return {t.name: _rows(warehouse, t) for t in TABLES}


def test_seeding_a_file_warehouse_gives_counts_in_range(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'home' / 'warehouse.db'}")
    counts = seed_demo_data(engine, today=TODAY)
    assert counts["partners"] == 300
    assert 600 <= counts["contacts"] <= 1500
    assert 300 <= counts["deals"] <= 1000
    assert 20 <= counts["events"] <= 30
    assert 200 <= counts["event_attendance"] <= 1200
    assert counts["activities"] >= 600
    assert counts == {name: len(rows) for name, rows in _dump(engine).items()}


def test_partner_mix(by_table: dict[str, list[sa.Row[Any]]]) -> None:
    rows = by_table["partners"]
    tiers = Counter(p.tier for p in rows)
    assert 0.10 <= tiers["gold"] / len(rows) <= 0.20
    assert tiers["silver"] and tiers["bronze"]
    assert {p.status for p in rows} == {"active", "prospect", "churned"}
    assert {p.region for p in rows} == {"EMEA", "AMER", "APAC"}
    assert [p.id for p in rows][:2] == ["P0001", "P0002"]
    assert len({p.name for p in rows}) == len(rows)
    recent = [p for p in rows if p.created_at >= WEEK_AGO]
    assert 5 <= len(recent) <= 15
    risk = [p for p in rows if p.status == "active" and p.health_score < 40]
    assert 10 <= len(risk) <= 20
    assert all(p.last_activity_at < STALE for p in risk)
    healthy = [p for p in rows if p.status == "active" and p.health_score >= 40]
    assert all(p.last_activity_at >= MIDNIGHT - timedelta(days=14) for p in healthy)
    assert all(0 <= p.health_score <= 100 for p in rows)


def test_values_are_fake_and_well_formed(by_table: dict[str, list[sa.Row[Any]]]) -> None:
    domain = re.compile(r"^[a-z0-9-]+\.example\.(com|org|net)$")
    for p in by_table["partners"]:
        host = p.website.removeprefix("https://")
        assert domain.match(host), p.website
        assert p.contact_email.endswith("@" + host)
        assert re.fullmatch(r"\+1555\d{7}", p.contact_phone)
        assert re.fullmatch(r"#partner-[a-z0-9-]+", p.slack_channel)
        assert p.account_manager_email.endswith("@partnerships.example.com")
    hosts = {p.id: p.website.removeprefix("https://") for p in by_table["partners"]}
    for c in by_table["contacts"]:
        assert c.email == c.email.lower() and c.email.endswith("@" + hosts[c.partner_id])
        assert re.fullmatch(r"\+1555\d{7}", c.phone)


def test_contacts_deals_and_usage_shapes(by_table: dict[str, list[sa.Row[Any]]]) -> None:
    per_partner = Counter(c.partner_id for c in by_table["contacts"])
    assert set(per_partner.values()) <= {2, 3, 4, 5}
    primaries = {c.partner_id: c for c in by_table["contacts"] if c.is_primary}
    assert len(primaries) == len(by_table["partners"])
    for p in by_table["partners"]:
        assert p.contact_email == primaries[p.id].email
        assert p.contact_name == f"{primaries[p.id].first_name} {primaries[p.id].last_name}"
    for d in by_table["deals"]:
        assert d.currency == "USD" and isinstance(d.amount, float) and d.amount > 0
        assert d.created_at <= d.updated_at
        closed = d.stage in ("closed_won", "closed_lost")
        assert (d.close_date <= TODAY) if closed else (d.close_date > TODAY)
    assert sum(d.updated_at >= WEEK_AGO for d in by_table["deals"]) >= 10
    months = [date(2024, m, 1) for m in range(7, 13)]
    usage: dict[str, list[sa.Row[Any]]] = {}
    for u in sorted(by_table["usage_monthly"], key=lambda u: u.month):
        usage.setdefault(u.partner_id, []).append(u)
    active = {p.id: p for p in by_table["partners"] if p.status == "active"}
    assert set(usage) == set(active)
    for partner_id, series in usage.items():
        assert [u.month for u in series] == months
        if active[partner_id].health_score < 40:
            assert series[-1].active_users < series[0].active_users
            assert series[-1].api_calls < series[0].api_calls


def test_last_activity_comes_from_activities(by_table: dict[str, list[sa.Row[Any]]]) -> None:
    latest: dict[str, datetime] = {}
    for a in by_table["activities"]:
        latest[a.partner_id] = max(a.occurred_at, latest.get(a.partner_id, a.occurred_at))
    assert {p.id: p.last_activity_at for p in by_table["partners"]} == latest


def test_events_recent_and_upcoming_with_attendance(
    by_table: dict[str, list[sa.Row[Any]]],
) -> None:
    attendance = Counter((a.event_id, a.attended) for a in by_table["event_attendance"])
    recent = [
        e for e in by_table["events"] if MIDNIGHT - timedelta(days=14) <= e.starts_at < MIDNIGHT
    ]
    upcoming = [e for e in by_table["events"] if e.starts_at >= MIDNIGHT]
    assert len(recent) >= 3 and len(upcoming) >= 3
    assert all(attendance[(e.id, True)] > 0 for e in recent)
    assert all(attendance[(e.id, False)] > 0 and not attendance[(e.id, True)] for e in upcoming)
    starts = {e.id: e.starts_at for e in by_table["events"]}
    capacity = Counter(a.event_id for a in by_table["event_attendance"])
    assert all(capacity[e.id] <= e.capacity for e in by_table["events"])
    assert all(a.registered_at < starts[a.event_id] for a in by_table["event_attendance"])
    assert {e.type for e in by_table["events"]} <= {"webinar", "conference", "workshop", "meetup"}


def test_no_past_fact_is_in_the_future(by_table: dict[str, list[sa.Row[Any]]]) -> None:
    stamps = [
        *(
            v
            for p in by_table["partners"]
            for v in (p.created_at, p.updated_at, p.last_activity_at)
        ),
        *(c.created_at for c in by_table["contacts"]),
        *(v for d in by_table["deals"] for v in (d.created_at, d.updated_at)),
        *(a.occurred_at for a in by_table["activities"]),
        *(a.registered_at for a in by_table["event_attendance"]),
    ]
    assert max(stamps) < MIDNIGHT


def test_referential_integrity_with_joins(warehouse: sa.Engine) -> None:
    fks = [
        (contacts, contacts.c.partner_id, partners.c.id),
        (deals, deals.c.partner_id, partners.c.id),
        (activities, activities.c.partner_id, partners.c.id),
        (usage_monthly, usage_monthly.c.partner_id, partners.c.id),
        (event_attendance, event_attendance.c.partner_id, partners.c.id),
        (event_attendance, event_attendance.c.contact_id, contacts.c.id),
        (event_attendance, event_attendance.c.event_id, events.c.id),
    ]
    with warehouse.connect() as conn:
        for child, column, target in fks:
            orphans = sa.select(sa.func.count()).select_from(
                child.outerjoin(target.table, column == target)
            )
            assert conn.execute(orphans.where(target.is_(None))).scalar_one() == 0, column
        mismatched = sa.select(sa.func.count()).select_from(
            event_attendance.join(contacts, event_attendance.c.contact_id == contacts.c.id)
        )
        assert (
            conn.execute(
                mismatched.where(event_attendance.c.partner_id != contacts.c.partner_id)
            ).scalar_one()
            == 0
        )
        recent_attendees = (
            sa.select(partners.c.name, contacts.c.email, events.c.name)
            .select_from(event_attendance.join(events).join(contacts).join(partners))
            .where(events.c.starts_at >= MIDNIGHT - timedelta(days=14))
            .where(events.c.starts_at < MIDNIGHT, event_attendance.c.attended.is_(True))
        )
        assert len(conn.execute(recent_attendees).all()) >= 10


def test_same_seed_and_today_give_identical_rows_others_differ(warehouse: sa.Engine) -> None:
    reference = _dump(warehouse)
    assert _dump(_seeded(today=TODAY)) == reference
    assert _dump(_seeded(today=TODAY, seed=8))["partners"] != reference["partners"]
    shifted = _dump(_seeded(today=TODAY + timedelta(days=1)))["partners"]
    assert shifted != reference["partners"]


def test_seeding_is_idempotent_unless_reset() -> None:
    engine = _seeded(today=TODAY, partners=40)
    before = _dump(engine)
    counts = seed_demo_data(engine, today=TODAY, seed=99, partners=80)
    assert counts["partners"] == 40 and _dump(engine) == before
    counts = seed_demo_data(engine, today=TODAY, seed=99, partners=80, reset=True)
    assert counts["partners"] == 80 and _dump(engine) != before


def test_default_today_is_the_current_date() -> None:
    engine = _seeded(partners=60)
    midnight = datetime.combine(date.today(), datetime.min.time())
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(partners.c.created_at))).scalar_one()
    assert midnight - timedelta(days=7) <= newest < midnight


def test_same_schema_and_seed_on_postgresql(postgres_url: str, warehouse: sa.Engine) -> None:
    engine = engine_for(create_database(postgres_url, f"demo_{uuid.uuid4().hex[:12]}"))
    try:
        seed_demo_data(engine, today=TODAY)
        assert _dump(engine) == _dump(warehouse)
        assert seed_demo_data(engine, today=TODAY, seed=1)["partners"] == 300
    finally:
        engine.dispose()
