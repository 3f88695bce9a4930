"""Realistic, deterministic demo data for the partner warehouse.

Everything is generated with ``random.Random(seed)`` and placed relative to ``today`` so playbooks
that look at "the last 7 days" find rows. All past timestamps fall strictly before ``today``
00:00 (naive UTC), so none is in the future whatever the time of day. Companies, people and
domains are invented (``*.example.com|org|net``); phone numbers are in the fictional +1 555 range.

The shape of the data:

* partners: gold ~15%, silver ~35%, bronze ~50%; ~3-4% created in the last 7 days (prospects in
  onboarding); ~5% churn-risk: active, health_score < 40, last activity 45+ days ago and usage
  declining month over month. Other active partners have health >= 45 and recent activity.
* contacts: 2-5 per partner, the first is primary and mirrored in ``partners.contact_*``.
* deals: 0-5 per partner; open deals close in the future, ~30% of them touched in the last week.
* events: 22-28, of which 5-7 in the last 14 days and 7-10 upcoming; attendance for each.
* activities: the source of ``partners.last_activity_at``.
* usage_monthly: the 6 complete months before ``today``'s month, for every active partner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from partnerships_orchestrator.warehouse import TABLES, ensure_schema
from partnerships_orchestrator.warehouse import partners as partners_table

Row = dict[str, Any]

PREFIXES = (
    "Acme", "Aurora", "Beacon", "Bluefin", "Brightwater", "Cedar", "Cobalt", "Copperleaf",
    "Driftwood", "Ember", "Fernway", "Foxglove", "Granite", "Harborline", "Ironbark", "Juniper",
    "Kestrel", "Lumen", "Maplestone", "Meridian", "Nimbus", "Oakridge", "Orchard", "Pinecrest",
    "Quarry", "Redwood", "Riverbend", "Saffron", "Silverline", "Stonebridge", "Summit",
    "Tidewater", "Trailhead", "Umber", "Vantage", "Willow", "Windmill", "Yarrow", "Zephyr",
    "Larkspur",
)  # fmt: skip
SUFFIX_INDUSTRY = {
    "Analytics": "Software", "Systems": "Software", "Labs": "Software", "Software": "Software",
    "Solutions": "IT Services", "Data": "Software", "Cloud": "IT Services",
    "Networks": "Telecommunications", "Logistics": "Logistics", "Health": "Healthcare",
    "Robotics": "Manufacturing", "Security": "Cybersecurity", "Media": "Media",
    "Energy": "Energy", "Consulting": "Professional Services", "Partners": "Professional Services",
    "Digital": "Marketing", "Works": "Manufacturing", "Foods": "Consumer Goods",
    "Finance": "Financial Services", "Learning": "Education", "Mobility": "Automotive",
    "Biotech": "Life Sciences", "Retail": "Retail", "Studio": "Media",
}  # fmt: skip
TLDS = ("example.com", "example.org", "example.net")
FIRST_NAMES = (
    "Aisha", "Alejandro", "Amara", "Anna", "Ben", "Carlos", "Chen", "Chloe", "Daniel", "Dmitri",
    "Elena", "Emma", "Farah", "Felix", "Grace", "Hana", "Hiroshi", "Ines", "Isaac", "Jonas",
    "Julia", "Kofi", "Laura", "Leila", "Lucas", "Maya", "Mei", "Mohammed", "Nadia", "Noah",
    "Olivia", "Omar", "Priya", "Rafael", "Ravi", "Rosa", "Sam", "Sara", "Sofia", "Tariq",
    "Thomas", "Yuki", "Zara", "Liam", "Ngozi", "Mateo", "Ingrid", "Arjun",
)  # fmt: skip
LAST_NAMES = (
    "Adeyemi", "Andersson", "Bauer", "Becker", "Brown", "Castillo", "Chen", "Costa", "Dubois",
    "Eriksen", "Fernandes", "Fischer", "Garcia", "Gupta", "Haddad", "Hansen", "Ito", "Jansen",
    "Kim", "Kowalski", "Lambert", "Larsen", "Lee", "Lopez", "Martin", "Meyer", "Moreau",
    "Murphy", "Nakamura", "Novak", "Okafor", "Patel", "Petrov", "Rossi", "Santos", "Schmidt",
    "Silva", "Singh", "Suzuki", "Tanaka", "Walsh", "Wang", "Weber", "Wright", "Yamamoto",
    "Zhang", "Mensah", "OConnor",
)  # fmt: skip
TITLES = (
    "VP Partnerships", "Head of Alliances", "Partner Manager", "CTO", "Director of Engineering",
    "Solutions Architect", "Marketing Manager", "Procurement Lead", "Customer Success Manager",
    "CEO", "Head of Product", "Channel Sales Director",
)  # fmt: skip
ACCOUNT_MANAGERS = (
    ("Alex", "Morgan"), ("Jordan", "Reyes"), ("Priya", "Raman"), ("Sam", "Whitaker"),
    ("Kenji", "Mori"), ("Lena", "Vogel"), ("Marcus", "Bell"), ("Sofia", "Marques"),
)  # fmt: skip
ACCOUNT_MANAGER_DOMAIN = "partnerships.example.com"
COUNTRIES = {
    "AMER": ("United States", "United States", "United States", "Canada", "Brazil", "Mexico"),
    "EMEA": ("United Kingdom", "Germany", "France", "Netherlands", "Sweden", "Spain", "Ireland",
             "South Africa"),
    "APAC": ("Japan", "Australia", "Singapore", "India", "South Korea", "New Zealand"),
}  # fmt: skip
DEAL_KINDS = (
    "Annual license", "Co-sell pilot", "Marketplace listing", "Expansion", "Renewal",
    "Integration services", "Referral agreement", "Enterprise bundle", "Training package",
)  # fmt: skip
ACTIVITY_SUMMARIES = {
    "email": ("Sent co-marketing brief", "Shared integration docs", "Followed up on pricing",
              "Sent quarterly newsletter", "Replied about certification"),
    "meeting": ("Quarterly business review", "Joint account planning", "Roadmap preview",
                "Executive sponsor sync", "Onboarding kickoff"),
    "call": ("Intro call", "Pipeline review call", "Technical discovery call",
             "Renewal check-in", "Escalation call"),
    "support_ticket": ("Ticket: SSO login failing", "Ticket: API rate limit questions",
                       "Ticket: webhook deliveries delayed", "Ticket: billing discrepancy",
                       "Ticket: sandbox access request"),
}  # fmt: skip
EVENT_TOPICS = (
    "Partner Summit", "Integration Deep Dive", "Co-selling Playbook", "Security and Compliance",
    "Product Roadmap", "Marketplace Launch", "AI in Partnerships", "Channel Growth",
    "Technical Certification", "Data Quality",
)  # fmt: skip
EVENT_CITIES = (
    "London", "Berlin", "Amsterdam", "Paris", "New York", "San Francisco", "Austin", "Toronto",
    "Sao Paulo", "Singapore", "Sydney", "Tokyo", "Bangalore",
)  # fmt: skip


@dataclass
class _Partner:
    """A partner while it is being generated; ``role`` drives every other choice."""

    role: str  # recent | risk | active | prospect | churned
    name: str
    slug: str
    domain: str
    industry: str
    created_at: datetime
    id: str = ""
    activity: list[Row] = field(default_factory=list)
    contact_rows: list[Row] = field(default_factory=list)


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A random instant in [start, end), to the minute, moved into working hours when it fits."""
    if end <= start:
        return start
    moment = start + (end - start) * rng.random()
    if not 8 <= moment.hour < 19:
        moment = moment.replace(hour=8 + moment.hour % 11)
    moment = moment.replace(second=0, microsecond=0)
    return min(max(moment, start), end - timedelta(minutes=1))


def _company_names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """``count`` unique (name, industry) pairs."""
    combos = [(p, s) for p in PREFIXES for s in SUFFIX_INDUSTRY]
    rng.shuffle(combos)
    names = []
    for i in range(count):
        prefix, suffix = combos[i % len(combos)]
        extra = f" {i // len(combos) + 1}" if i >= len(combos) else ""
        names.append((f"{prefix} {suffix}{extra}", SUFFIX_INDUSTRY[suffix]))
    return names


def _roles(rng: random.Random, count: int) -> list[str]:
    recent = min(count, max(1, round(count * rng.uniform(0.025, 0.045))))
    risk = min(count - recent, max(1, round(count * rng.uniform(0.04, 0.06))))
    rest = rng.choices(("active", "prospect", "churned"), (72, 18, 10), k=count - recent - risk)
    roles = ["recent"] * recent + ["risk"] * risk + rest
    rng.shuffle(roles)
    return roles


CREATED_DAYS_AGO = {
    "recent": (1, 7),
    "risk": (240, 1500),
    "active": (230, 1500),
    "prospect": (8, 120),
    "churned": (300, 1500),
}


def _draft_partners(rng: random.Random, count: int, base: datetime) -> list[_Partner]:
    """Partners with names and creation times, ids assigned in creation order."""
    drafts = []
    for role, (name, industry) in zip(_roles(rng, count), _company_names(rng, count), strict=True):
        slug = name.lower().replace(" ", "-")
        low, high = CREATED_DAYS_AGO[role]
        created = _between(rng, base - timedelta(days=high), base - timedelta(days=low))
        domain = f"{slug}.{rng.choice(TLDS)}"
        drafts.append(_Partner(role, name, slug, domain, industry, created))
    drafts.sort(key=lambda p: (p.created_at, p.name))
    for number, draft in enumerate(drafts, start=1):
        draft.id = f"P{number:04d}"
    return drafts


def _phone(rng: random.Random) -> str:
    return f"+1555{rng.randrange(10**7):07d}"


def _contacts(rng: random.Random, p: _Partner, base: datetime, next_id: int) -> list[Row]:
    rows: list[Row] = []
    used: set[str] = set()
    for i in range(rng.randint(2, 5)):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower()
        while local in used:
            local = f"{first}.{last}{rng.randint(2, 99)}".lower()
        used.add(local)
        rows.append(
            {
                "id": f"C{next_id + i:05d}",
                "partner_id": p.id,
                "first_name": first,
                "last_name": last,
                "email": f"{local}@{p.domain}",
                "phone": _phone(rng),
                "title": rng.choice(TITLES),
                "is_primary": i == 0,
                "created_at": p.created_at if i == 0 else _between(rng, p.created_at, base),
            }
        )
    return rows


# (how many, days-ago window) of activities per role; "active" also gets one in the last 14 days.
ACTIVITY_PLAN = {
    "recent": ((1, 3), (0, 7)),
    "risk": ((2, 6), (45, 200)),
    "active": ((3, 11), (1, 150)),
    "prospect": ((1, 4), (1, 120)),
    "churned": ((1, 5), (120, 400)),
}


def _activities(rng: random.Random, p: _Partner, base: datetime) -> list[Row]:
    (low, high), (near, far) = ACTIVITY_PLAN[p.role]
    windows = [(near, far)] * rng.randint(low, high)
    if p.role == "active":
        windows.append((1, 14))
    rows: list[Row] = []
    for near_days, far_days in windows:
        start = max(p.created_at, base - timedelta(days=far_days))
        end = max(start, base - timedelta(days=near_days, minutes=1))
        kind = rng.choices(("email", "meeting", "call", "support_ticket"), (40, 20, 25, 15))[0]
        rows.append(
            {
                "partner_id": p.id,
                "type": kind,
                "occurred_at": _between(rng, start, end),
                "summary": rng.choice(ACTIVITY_SUMMARIES[kind]),
            }
        )
    rows.sort(key=lambda r: r["occurred_at"])
    return rows


HEALTH = {
    "recent": (50, 80),
    "risk": (8, 38),
    "active": (45, 98),
    "prospect": (40, 75),
    "churned": (3, 30),
}
AMOUNTS = {"gold": (50_000, 400_000), "silver": (15_000, 120_000), "bronze": (3_000, 40_000)}


def _partner_row(rng: random.Random, p: _Partner) -> Row:
    region = rng.choices(("AMER", "EMEA", "APAC"), (45, 35, 20))[0]
    am_first, am_last = rng.choice(ACCOUNT_MANAGERS)
    primary = p.contact_rows[0]
    last_activity = p.activity[-1]["occurred_at"] if p.activity else None
    return {
        "id": p.id,
        "name": p.name,
        "tier": rng.choices(("gold", "silver", "bronze"), (15, 35, 50))[0],
        "status": {"recent": "prospect", "risk": "active"}.get(p.role, p.role),
        "industry": p.industry,
        "region": region,
        "country": rng.choice(COUNTRIES[region]),
        "website": f"https://{p.domain}",
        "contact_name": f"{primary['first_name']} {primary['last_name']}",
        "contact_email": primary["email"],
        "contact_phone": primary["phone"],
        "account_manager": f"{am_first} {am_last}",
        "account_manager_email": f"{am_first}.{am_last}@{ACCOUNT_MANAGER_DOMAIN}".lower(),
        "slack_channel": f"#partner-{p.slug}"[:80],
        "created_at": p.created_at,
        "updated_at": max(p.created_at, last_activity or p.created_at),
        "last_activity_at": last_activity,
        "health_score": rng.randint(*HEALTH[p.role]),
    }


STAGE_WEIGHTS = {
    "active": (12, 12, 14, 12, 35, 15),
    "risk": (5, 5, 10, 10, 35, 35),
    "recent": (60, 30, 10, 0, 0, 0),
    "prospect": (40, 35, 20, 5, 0, 0),
    "churned": (0, 0, 0, 0, 40, 60),
}
DEAL_COUNTS = {
    "active": (1, 5),
    "risk": (1, 3),
    "recent": (0, 2),
    "prospect": (0, 2),
    "churned": (0, 2),
}
STAGES = ("prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost")


def _deals(rng: random.Random, p: _Partner, partner: Row, base: datetime) -> list[Row]:
    rows = []
    for _ in range(rng.randint(*DEAL_COUNTS[p.role])):
        stage = rng.choices(STAGES, STAGE_WEIGHTS[p.role])[0]
        created = _between(rng, p.created_at, base - timedelta(hours=1))
        if stage.startswith("closed"):
            updated = _between(rng, created, base)
            close_date = updated.date()
        else:
            recent_touch = rng.random() < 0.3
            floor = max(created, base - timedelta(days=7)) if recent_touch else created
            updated = _between(rng, floor, base)
            close_date = base.date() + timedelta(days=rng.randint(7, 120))
        low, high = AMOUNTS[partner["tier"]]
        rows.append(
            {
                "partner_id": p.id,
                "name": f"{p.name} - {rng.choice(DEAL_KINDS)}",
                "amount": float(round(rng.uniform(low, high), -2)),
                "currency": "USD",
                "stage": stage,
                "close_date": close_date,
                "owner": partner["account_manager"],
                "created_at": created,
                "updated_at": updated,
            }
        )
    return rows


def _month_starts(today: date, count: int = 6) -> list[date]:
    """First days of the ``count`` complete months before ``today``'s month, oldest first."""
    year, month = today.year, today.month
    starts = []
    for _ in range(count):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        starts.append(date(year, month, 1))
    return starts[::-1]


USERS = {"gold": (200, 1500), "silver": (50, 400), "bronze": (5, 120)}


def _usage(rng: random.Random, p: _Partner, partner: Row, months: list[date]) -> list[Row]:
    users = float(rng.randint(*USERS[partner["tier"]]))
    calls_per_user = rng.uniform(300, 1500)
    rows = []
    for month in months:
        rows.append(
            {
                "partner_id": p.id,
                "month": month,
                "active_users": max(1, round(users)),
                "api_calls": round(users * calls_per_user * rng.uniform(0.9, 1.1)),
            }
        )
        users *= rng.uniform(0.65, 0.85) if p.role == "risk" else rng.uniform(0.97, 1.08)
    return rows


EVENT_WINDOWS = (((5, 7), (-14, -1)), ((7, 10), (1, 90)))  # (how many, days from today)


def _events(rng: random.Random, base: datetime) -> list[Row]:
    spans = []
    for (low, high), span in EVENT_WINDOWS:
        spans += [span] * rng.randint(low, high)
    spans += [(-180, -15)] * (rng.randint(22, 28) - len(spans))
    rows = []
    for first, last in spans:
        kind = rng.choices(("webinar", "conference", "workshop", "meetup"), (40, 15, 25, 20))[0]
        day = base + timedelta(days=rng.randint(first, last))
        starts = day.replace(hour=rng.choice((9, 10, 14, 16, 17)))
        topic, city = rng.choice(EVENT_TOPICS), rng.choice(EVENT_CITIES)
        name, capacity, where = {
            "webinar": (f"{topic} Webinar", rng.choice((250, 500, 1000)), "Online"),
            "conference": (f"{topic} {city} {starts.year}", rng.choice((300, 500, 800)), city),
            "workshop": (f"{topic} Workshop - {city}", rng.choice((25, 30, 40)), city),
            "meetup": (f"Partner Meetup {city}", rng.choice((40, 60, 80)), city),
        }[kind]
        rows.append(
            {"name": name, "type": kind, "starts_at": starts, "city": where, "capacity": capacity}
        )
    rows.sort(key=lambda r: (r["starts_at"], r["name"]))
    for number, row in enumerate(rows, start=1):
        row["id"] = f"E{number:03d}"
    return rows


def _attendance(
    rng: random.Random, event_rows: list[Row], pool: list[Row], base: datetime
) -> list[Row]:
    """Registrations of contacts of active and prospect partners; past events record turnout."""
    rows = []
    for event in event_rows:
        deadline = min(event["starts_at"], base) - timedelta(hours=1)
        eligible = [c for c in pool if c["created_at"] < deadline - timedelta(days=1)]
        size = min(event["capacity"], len(eligible), rng.randint(12, 40))
        past = event["starts_at"] < base
        for contact in rng.sample(eligible, size):
            opens = min(event["starts_at"] - timedelta(days=30), deadline - timedelta(days=14))
            earliest = max(contact["created_at"], opens)
            rows.append(
                {
                    "event_id": event["id"],
                    "contact_id": contact["id"],
                    "partner_id": contact["partner_id"],
                    "registered_at": _between(rng, earliest, deadline),
                    "attended": past and rng.random() < 0.7,
                }
            )
    return rows


def generate_demo_rows(
    *, partners: int = 300, seed: int = 7, today: date | None = None
) -> dict[str, list[Row]]:
    """Rows per table name, in insert order, without touching a database."""
    if partners < 0:
        raise ValueError(f"partners must be >= 0, got {partners}")
    rng = random.Random(seed)  # nosec B311 # demo rows, seeded so they are reproducible
    today = today or date.today()
    base = datetime.combine(today, time())
    drafts = _draft_partners(rng, partners, base)
    out: dict[str, list[Row]] = {table.name: [] for table in TABLES}
    months = _month_starts(today)
    pool: list[Row] = []
    for p in drafts:
        p.contact_rows = _contacts(rng, p, base, len(out["contacts"]) + 1)
        p.activity = _activities(rng, p, base)
        partner = _partner_row(rng, p)
        out["partners"].append(partner)
        out["contacts"] += p.contact_rows
        out["deals"] += _deals(rng, p, partner, base)
        out["activities"] += p.activity
        if partner["status"] == "active":
            out["usage_monthly"] += _usage(rng, p, partner, months)
        if partner["status"] != "churned":
            pool += p.contact_rows
    for number, row in enumerate(out["deals"], start=1):
        row["id"] = f"D{number:05d}"
    for number, row in enumerate(out["activities"], start=1):
        row["id"] = f"A{number:06d}"
    out["events"] = _events(rng, base)
    out["event_attendance"] = _attendance(rng, out["events"], pool, base)
    return out


def _counts(conn: Connection) -> dict[str, int]:
    return {
        table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        for table in TABLES
    }


def seed_demo_data(
    engine: Engine,
    *,
    partners: int = 300,
    seed: int = 7,
    today: date | None = None,
    reset: bool = False,
) -> dict[str, int]:
    """Fill an empty warehouse (or any, with ``reset``) with demo data; return row counts."""
    ensure_schema(engine)
    with engine.begin() as conn:
        has_partners = conn.execute(sa.select(partners_table.c.id).limit(1)).first() is not None
        if has_partners and not reset:
            return _counts(conn)
        for table in reversed(TABLES):
            conn.execute(table.delete())
        rows = generate_demo_rows(partners=partners, seed=seed, today=today)
        for table in TABLES:
            if rows[table.name]:
                conn.execute(table.insert(), rows[table.name])
        return _counts(conn)
