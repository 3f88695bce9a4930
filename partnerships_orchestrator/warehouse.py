"""The partner warehouse: schema (SQLAlchemy Core) and engines for SQLite or PostgreSQL.

Timestamps are stored as naive UTC (``TIMESTAMP WITHOUT TIME ZONE`` on PostgreSQL) so the same
values compare identically on both backends. Enumerated columns are guarded by CHECK constraints
built from the tuples below, which the demo generator uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.store.schema import schema_lock

TIERS = ("gold", "silver", "bronze")
PARTNER_STATUSES = ("active", "prospect", "churned")
REGIONS = ("EMEA", "AMER", "APAC")
DEAL_STAGES = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
EVENT_TYPES = ("webinar", "conference", "workshop", "meetup")
ACTIVITY_TYPES = ("email", "meeting", "call", "support_ticket")

URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user:password@host:5432/dbname (also postgres:// or postgresql+psycopg://)"
)
CONNECT_TIMEOUT_SECONDS = 5


class Money(sa.TypeDecorator[float]):
    """NUMERIC(14, 2) read back as float on both backends (SQLite returns whole amounts as int)."""

    impl = sa.Numeric(14, 2, asdecimal=False)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        return None if value is None else float(value)


def _one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"ck_%(table_name)s_{column}")


metadata = sa.MetaData()

partners = sa.Table(
    "partners",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("industry", sa.String(100), nullable=False),
    sa.Column("region", sa.String(8), nullable=False),
    sa.Column("country", sa.String(100), nullable=False),
    sa.Column("website", sa.String(255)),
    sa.Column("contact_name", sa.String(200)),
    sa.Column("contact_email", sa.String(255)),
    sa.Column("contact_phone", sa.String(32)),
    sa.Column("account_manager", sa.String(200)),
    sa.Column("account_manager_email", sa.String(255)),
    sa.Column("slack_channel", sa.String(80)),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("last_activity_at", sa.DateTime()),
    sa.Column("health_score", sa.Integer(), nullable=False),
    _one_of("tier", TIERS),
    _one_of("status", PARTNER_STATUSES),
    _one_of("region", REGIONS),
    sa.CheckConstraint("health_score BETWEEN 0 AND 100", name="ck_%(table_name)s_health_score"),
    sa.Index("ix_partners_created_at", "created_at"),
    sa.Index("ix_partners_status", "status"),
    sa.Index("ix_partners_last_activity_at", "last_activity_at"),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(16), sa.ForeignKey("partners.id"), nullable=False),
    sa.Column("first_name", sa.String(100), nullable=False),
    sa.Column("last_name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("phone", sa.String(32)),
    sa.Column("title", sa.String(200)),
    sa.Column("is_primary", sa.Boolean(), nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index("ix_contacts_partner_id", "partner_id"),
)

deals = sa.Table(
    "deals",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(16), sa.ForeignKey("partners.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("amount", Money(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False, default="USD"),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("close_date", sa.Date()),
    sa.Column("owner", sa.String(200)),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    _one_of("stage", DEAL_STAGES),
    sa.Index("ix_deals_partner_id", "partner_id"),
    sa.Index("ix_deals_stage", "stage"),
    sa.Index("ix_deals_updated_at", "updated_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("starts_at", sa.DateTime(), nullable=False),
    sa.Column("city", sa.String(100)),
    sa.Column("capacity", sa.Integer()),
    _one_of("type", EVENT_TYPES),
    sa.Index("ix_events_starts_at", "starts_at"),
)

# The primary key (event_id, contact_id) already serves lookups by event_id on both backends.
event_attendance = sa.Table(
    "event_attendance",
    metadata,
    sa.Column("event_id", sa.String(16), sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("contact_id", sa.String(16), sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("partner_id", sa.String(16), sa.ForeignKey("partners.id"), nullable=False),
    sa.Column("registered_at", sa.DateTime(), nullable=False),
    sa.Column("attended", sa.Boolean(), nullable=False, default=False),
    sa.Index("ix_event_attendance_partner_id", "partner_id"),
)

activities = sa.Table(
    "activities",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(16), sa.ForeignKey("partners.id"), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("occurred_at", sa.DateTime(), nullable=False),
    sa.Column("summary", sa.Text()),
    _one_of("type", ACTIVITY_TYPES),
    sa.Index("ix_activities_partner_id_occurred_at", "partner_id", "occurred_at"),
)

usage_monthly = sa.Table(
    "usage_monthly",
    metadata,
    sa.Column("partner_id", sa.String(16), sa.ForeignKey("partners.id"), primary_key=True),
    sa.Column("month", sa.Date(), primary_key=True),
    sa.Column("active_users", sa.Integer(), nullable=False),
    sa.Column("api_calls", sa.Integer(), nullable=False),
)

# Bookkeeping the assets keep beside the data they write, so that it commits in the same
# transaction: the sync cursors (a crash can never advance one past rows not written) and the
# history of every metric (for dashboards, next to the tables they read).
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("asset", sa.String(200), primary_key=True),
    sa.Column("cursor", sa.String(64)),  # ISO time of the newest change landed
    sa.Column("cursor_id", sa.String(64)),  # the last id at that time (Salesforce keyset)
    sa.Column("state", sa.Text()),  # JSON: source-specific (the demo CRM's generation)
    sa.Column("updated_at", sa.DateTime(), nullable=False),
)

metric_history = sa.Table(
    "metric_history",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("metrics_set", sa.String(200), nullable=False),
    sa.Column("metric", sa.String(200), nullable=False),
    sa.Column("value", sa.Float()),
    sa.Column("target", sa.Float()),
    sa.Column("computed_at", sa.DateTime(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Index("ix_metric_history_metric", "metrics_set", "metric", "computed_at"),
)
BOOKKEEPING: tuple[sa.Table, ...] = (sync_cursors, metric_history)

# Parents before children: the order to insert in (reverse it to delete).
TABLES: tuple[sa.Table, ...] = (
    partners,
    contacts,
    deals,
    events,
    event_attendance,
    activities,
    usage_monthly,
)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (works on unparseable strings too)."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    head, rest = url[: scheme_end + 3], url[scheme_end + 3 :]
    at = rest.rfind("@")
    if at < 0:
        return url
    userinfo, hostpart = rest[:at], rest[at:]
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}{user}:***{hostpart}"


def _bad_url(url: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"partner warehouse URL {mask_url(url)!r} is not usable: {problem}",
        hint=f"use one of: {URL_FORMS}",
    )


def _parse(url: str) -> URL:
    """Parse and normalise a warehouse URL to a driver this product ships (pysqlite, psycopg)."""
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _bad_url(url, "it is not a database URL") from exc
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        return parsed
    if driver in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise _bad_url(url, f"unsupported database type {driver!r}")


def _sqlite_engine(url: str, parsed: URL) -> Engine:
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        kwargs["poolclass"] = StaticPool
    else:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _bad_url(url, f"cannot create its directory ({exc.strerror})") from exc
    engine = sa.create_engine(parsed, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return engine


def _postgres_engine(parsed: URL) -> Engine:
    connect_args = (
        {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    )
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def create_engine_for(url: str) -> Engine:
    """An engine for the warehouse at ``url``, checked by connecting once."""
    parsed = _parse(url)
    is_sqlite = parsed.drivername.startswith("sqlite")
    engine = _sqlite_engine(url, parsed) if is_sqlite else _postgres_engine(parsed)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        reason = _scrub(str(exc.orig).strip().splitlines()[0], parsed.password)
        where = "open" if is_sqlite else "reach"
        hint = (
            "check that the directory is writable"
            if is_sqlite
            else "check that the server is running and the host, port, user and database are right"
        )
        raise ConfigurationError(
            f"cannot {where} the partner warehouse at {mask_url(url)!r}: {reason}", hint=hint
        ) from None
    return engine


def ensure_schema(engine: Engine) -> None:
    """Create any missing warehouse tables and indexes; safe to call repeatedly, and from
    several processes at once (under the schema lock)."""
    with engine.begin() as conn:
        schema_lock(conn)
        metadata.create_all(conn, checkfirst=True)
