"""The orchestrator's own tables (SQLAlchemy Core), kept apart from the partner warehouse."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("root_run_id", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("playbook", String(200), nullable=False),
    Column("step", String(200), nullable=False),
    Column("item_key", String(200), nullable=False, default=""),
    Column("recipient", String(500), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("provider", String(50), nullable=False),
    Column("status", String(20), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=1),
    Column("receipt", JSON),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("root_run_id", "step", "item_key", "recipient", name="uq_delivery_once"),
)

# what each step of a fan-out region gave for each item, so a re-executed region picks up where
# its run stopped instead of doing (or posting) the finished items' work again
item_results = Table(
    "item_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("root_run_id", String(64), nullable=False),
    Column("step", String(200), nullable=False),
    Column("item_key", String(200), nullable=False),
    Column("result", LargeBinary, nullable=False),  # [kind, value] as typed JSON (store/codec.py)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("root_run_id", "step", "item_key", name="uq_item_result"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(20), nullable=False),
    Column("recipient", String(500), nullable=False),
    Column("subject", Text),
    Column("body", Text, nullable=False),
    Column("attachments", JSON),
    Column("playbook", String(200)),
    Column("run_id", String(64)),
    Column("step", String(200)),
    Column("message_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_outbox_run", "run_id"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("playbook", String(200), nullable=False),
    Column("step", String(200), nullable=False),
    Column("run_id", String(64), nullable=False),  # the latest run that met this failure
    # one letter per (root run, playbook, step key): a re-execution updates it (NULL: older rows)
    Column("root_run_id", String(64)),
    # skip | abort | retry_exhausted | failed | outcome_unknown | refused
    Column("action", String(20), nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("error", Text, nullable=False),
    Column("inputs", JSON),
    Column("attempts", Integer, nullable=False, default=1),
    Column("status", String(20), nullable=False, default="open"),  # open | redriven
    Column("scope", LargeBinary),  # the step's expression scope as typed JSON, for redrives
    Column("redriven_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_dead_letters_playbook", "playbook"),
    Index("ix_dead_letters_item", "root_run_id", "step"),
)

# columns added after a table was first shipped: created on existing databases at start-up
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"dead_letters": ("root_run_id",)}

# one-time data migrations already applied to this database (store/schema.py)
schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("playbook", String(200), nullable=False),
    Column("webhook_id", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("playbook", "webhook_id", name="uq_inbox_webhook_id"),
)

secrets = Table(
    "local_secrets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# vendor rate limits shared by every worker (connectors/shared_ratelimit.py): one row per
# connection ("" lane) and per sub-limit key; times are epoch seconds on the database's clock
rate_lanes = Table(
    "rate_lanes",
    metadata,
    Column("bucket", String(200), primary_key=True),  # the connection, as its logs name it
    Column("lane", String(500), primary_key=True),  # "" for the connection, else the limit key
    Column("spacing", Float),  # seconds between calls at the ceiling; NULL: no pace, pauses only
    Column("tolerance", Float),  # how early a call may come: (burst - 1) * spacing
    Column("next_at", Float),  # the theoretical arrival time of the next call (GCRA)
    Column("paused_until", Float),  # a Retry-After seen by any worker holds every worker
)
