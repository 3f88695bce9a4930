"""API bearer tokens: stored as SHA-256 hashes, each with a role and the teams it acts for."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, insert, select, update

from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.store.schema import ensure_schema
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.store.tables import metadata

ROLES = ("viewer", "operator", "editor", "admin")
ALL_TEAMS = "*"
PREFIX = "pso"

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("teams", JSON, nullable=False),
    Column("rate_limit", Integer),  # requests per minute; none: the API's default
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)


class TokenError(PartnershipsError):
    """A token request was refused (unknown role, no team, unknown token)."""


@dataclass(frozen=True)
class Token:
    """A token as the API sees it (never its secret)."""

    id: str
    name: str
    role: str
    teams: tuple[str, ...]
    rate_limit: int | None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, owners: list[str] | tuple[str, ...]) -> bool:
        """Whether this token's teams own something with these ``owners``."""
        return ALL_TEAMS in self.teams or any(team in self.teams for team in owners)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "teams": list(self.teams),
            "rate_limit": self.rate_limit,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: Any) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        role=row.role,
        teams=tuple(row.teams),
        rate_limit=row.rate_limit,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class TokenStore:
    """Create, verify, list and revoke API tokens in the product's state database."""

    def __init__(self, state_url: str) -> None:
        self.engine = StateStore(state_url).engine
        ensure_schema(self.engine)  # its tables are in the shared metadata

    def create(
        self, *, role: str, teams: list[str], name: str = "", rate_limit: int | None = None
    ) -> tuple[Token, str]:
        """A new token and its secret: the secret is shown once and only its hash is kept."""
        if role not in ROLES:
            raise TokenError(f"unknown role `{role}`", hint=f"one of {', '.join(ROLES)}")
        teams = [t.strip() for t in teams if t.strip()]
        if not teams:
            raise TokenError(
                "a token needs at least one team",
                hint=f"--team <owner team> (or `{ALL_TEAMS}` for every team)",
            )
        if rate_limit is not None and rate_limit < 1:
            raise TokenError(f"rate limit must be at least 1 request a minute, got {rate_limit}")
        token_id = f"tok_{secrets.token_hex(6)}"
        secret = f"{PREFIX}_{token_id.removeprefix('tok_')}_{secrets.token_urlsafe(32)}"
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_tokens).values(
                    id=token_id,
                    name=name or f"{role} for {', '.join(teams)}",
                    hash=_hash(secret),
                    role=role,
                    teams=teams,
                    rate_limit=rate_limit,
                    created_at=now,
                )
            )
        return self.get(token_id), secret  # type: ignore[return-value]

    def get(self, token_id: str) -> Token | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        return _token(row) if row else None

    def verify(self, secret: str) -> Token | None:
        """The live token this secret belongs to, or ``None``."""
        parts = secret.split("_")
        if len(parts) < 3 or parts[0] != PREFIX:
            return None
        token_id = f"tok_{parts[1]}"
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.hash, _hash(secret)):
            return None
        return _token(row)

    def touch(self, token_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id)
                .values(last_used_at=datetime.now(UTC))
            )

    def list(self, *, include_revoked: bool = True) -> list[Token]:
        query = select(api_tokens).order_by(api_tokens.c.created_at)
        if not include_revoked:
            query = query.where(api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_token(r) for r in conn.execute(query)]

    def revoke(self, token_id: str) -> Token:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        token = self.get(token_id)
        if token is None:
            known = ", ".join(t.id for t in self.list(include_revoked=False)) or "none"
            raise TokenError(f"no token `{token_id}`", hint=f"live tokens: {known}")
        if not done:
            raise TokenError(f"token `{token_id}` was revoked already")
        return token

    def any_admin(self) -> bool:
        query = select(api_tokens.c.id).where(
            api_tokens.c.role == "admin", api_tokens.c.revoked_at.is_(None)
        )
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None
