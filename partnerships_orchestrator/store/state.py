"""The orchestrator's state database: delivery ledger, sandbox outbox, dead letters, inbox."""

from __future__ import annotations

import base64
import secrets as pysecrets
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    insert,
    make_url,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.schema import ensure_schema

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeliveryKey:
    """At most one delivery per (root run, step, fan-out item, recipient)."""

    root_run_id: str
    step: str
    item_key: str
    recipient: str


def _ledger_row(
    key: DeliveryKey, run_id: str, playbook: str, channel: str, provider: str, now: datetime
) -> dict[str, Any]:
    return {
        "root_run_id": key.root_run_id,
        "step": key.step,
        "item_key": key.item_key,
        "recipient": key.recipient,
        "run_id": run_id,
        "playbook": playbook,
        "channel": channel,
        "provider": provider,
        "status": "pending",
        "attempts": 1,
        "created_at": now,
        "updated_at": now,
    }


@cache
def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    else:
        engine = create_engine(_postgres_driver(url), pool_pre_ping=True)
    ensure_schema(engine)
    return engine


def _postgres_driver(url: str) -> URL:
    """``postgresql://`` and ``postgres://`` URLs use psycopg 3, the driver this product ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


_C = tables.deliveries.c
# one statement for many ledger rows (executemany): compiled once, not once per message
_FINISH = (
    update(tables.deliveries)
    .where(
        _C.root_run_id == bindparam("k_root"),
        _C.step == bindparam("k_step"),
        _C.item_key == bindparam("k_item"),
        _C.recipient == bindparam("k_to"),
    )
    .values(
        status=bindparam("v_status"),
        receipt=bindparam("v_receipt", type_=_C.receipt.type),
        error=bindparam("v_error"),
        updated_at=bindparam("v_at", type_=_C.updated_at.type),
    )
)


@cache
def _write_lock(url: str) -> threading.Lock:
    return threading.Lock()


def _insert_new(conn: Connection, table: Any, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless a row with its unique key exists; whether it was inserted."""
    if conn.dialect.name == "postgresql":  # psycopg reports no rowcount here: ask for the id
        statement = postgresql.insert(table).values(**row).on_conflict_do_nothing()
        return conn.execute(statement.returning(table.c.id)).first() is not None
    return bool(conn.execute(sqlite.insert(table).values(**row).on_conflict_do_nothing()).rowcount)


@dataclass
class _Job:
    work: Callable[[Connection], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class _GroupCommit:
    """Write transactions handed in by several threads at once, committed together.

    SQLite syncs the disk at every commit (~5 ms here) and has one writer at a time, so a
    ledger written by 8 sending threads, one transaction each, managed ~100 messages/s. Here the
    thread holding the write lock commits everything queued meanwhile in one transaction; each
    piece of work is atomic in itself (no exception expected): if one raises anyway, each is
    re-run alone so the error reaches its own caller.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queue: list[_Job] = []

    def submit(self, engine: Engine, lock: threading.Lock, work: Callable[[Connection], T]) -> T:
        job = _Job(work)
        with self._mutex:
            self._queue.append(job)
        with lock:
            if not job.done:  # nobody took it while we waited: commit the queue
                with self._mutex:
                    batch, self._queue = self._queue, []
                self._commit(engine, batch)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    @staticmethod
    def _commit(engine: Engine, batch: list[_Job]) -> None:
        try:
            with engine.begin() as conn:
                results = [job.work(conn) for job in batch]
        except Exception:  # noqa: BLE001 - each job again alone, so its error is its own
            for job in batch:
                try:
                    with engine.begin() as conn:
                        job.result = job.work(conn)
                except Exception as exc:  # noqa: BLE001 - raised in the caller's thread
                    job.error = exc
                job.done = True
            return
        for job, result in zip(batch, results, strict=True):
            job.result, job.done = result, True


@cache
def _committer(url: str) -> _GroupCommit:
    return _GroupCommit()


class StateStore:
    """Typed access to the orchestrator's own tables (one SQLite file by default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        # SQLite has one writer at a time and its busy handler sleeps while it waits: threads of
        # one process (a bulk send's workers) take turns on a lock instead
        self._lock = _write_lock(url) if url.startswith("sqlite") else nullcontext()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction."""
        with self._lock, self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------ delivery ledger
    # A row per (root run, step, item, recipient): ``pending`` once claimed (the request may
    # have left), then ``sent`` or ``failed`` (nothing was delivered; a later attempt may send).
    def claim(
        self, key: DeliveryKey, *, run_id: str, playbook: str, channel: str, provider: str
    ) -> str:
        """Claim one delivery right before its request leaves; ``new``, ``retry`` or the
        blocking status.

        ``new``/``retry`` mean the caller may send now. ``sent`` means it was delivered before;
        ``pending`` means another attempt claimed it and may have sent it.
        """
        answers = self.claim_many(
            [key], run_id=run_id, playbook=playbook, channel=channel, provider=provider
        )
        return answers[key]

    def claim_many(
        self,
        keys: Sequence[DeliveryKey],
        *,
        run_id: str,
        playbook: str,
        channel: str,
        provider: str,
    ) -> dict[DeliveryKey, str]:
        """:meth:`claim` for the messages of one request, in one transaction (shared with the
        claims and records of other threads of this process that arrive meanwhile)."""
        now = _now()

        def row(key: DeliveryKey) -> dict[str, Any]:
            return _ledger_row(key, run_id, playbook, channel, provider, now)

        def work(conn: Connection) -> dict[DeliveryKey, str]:
            if len(keys) == 1:
                return one_by_one(conn)
            existing = self._rows_in(conn, keys)
            fresh = [k for k in keys if k not in existing]
            if fresh:  # one statement for all the new ones (the common case)
                conn.execute(insert(tables.deliveries), [row(k) for k in fresh])
            answers = dict.fromkeys(fresh, "new")
            answers |= {k: self._claim_in(conn, k, row(k)) for k in keys if k in existing}
            return answers

        def one_by_one(conn: Connection) -> dict[DeliveryKey, str]:
            return {k: self._claim_in(conn, k, row(k)) for k in keys}

        try:
            return self._grouped(work)
        except IntegrityError:  # another process claimed some meanwhile: each atomically
            return self._grouped(one_by_one)

    def _claim_in(self, conn: Connection, key: DeliveryKey, row: dict[str, Any]) -> str:
        """One atomic claim: insert the row, else take it back from ``failed``, else its status."""
        if _insert_new(conn, tables.deliveries, row):
            return "new"
        retried = conn.execute(
            update(tables.deliveries)
            .where(*self._match(key), tables.deliveries.c.status == "failed")
            .values(
                status="pending",
                run_id=row["run_id"],
                provider=row["provider"],
                updated_at=row["updated_at"],
                attempts=tables.deliveries.c.attempts + 1,
            )
        ).rowcount
        if retried:
            return "retry"
        status = conn.execute(
            select(tables.deliveries.c.status).where(*self._match(key))
        ).scalar_one()
        return str(status)

    def _grouped(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction; on SQLite, together with the work other threads
        of this process hand in meanwhile (one commit, so one disk sync, for all of them)."""
        if not self.url.startswith("sqlite"):
            with self.engine.begin() as conn:
                return work(conn)
        return _committer(self.url).submit(self.engine, _write_lock(self.url), work)

    def mark_sent(self, key: DeliveryKey, receipt: dict[str, Any]) -> None:
        self.mark_sent_many([(key, receipt)])

    def mark_sent_many(self, sent: Sequence[tuple[DeliveryKey, dict[str, Any]]]) -> None:
        """Record delivered messages in one transaction."""
        self._finish_many(
            [(key, {"status": "sent", "receipt": jsonable(r), "error": None}) for key, r in sent]
        )

    def mark_failed(self, key: DeliveryKey, error: str) -> None:
        """Record a definite failure: nothing was delivered, so a later attempt may send."""
        self._finish_many([(key, {"status": "failed", "receipt": None, "error": error})])

    def record_sent(
        self,
        key: DeliveryKey,
        receipt: dict[str, Any],
        *,
        run_id: str,
        playbook: str,
        channel: str,
        provider: str,
    ) -> None:
        """Record a message a provider delivered without claiming it first (no departure)."""
        row = _ledger_row(key, run_id, playbook, channel, provider, _now())
        with self._begin() as conn:
            _insert_new(conn, tables.deliveries, row)
        self.mark_sent(key, receipt)

    def delivery(self, key: DeliveryKey) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(tables.deliveries).where(*self._match(key))).mappings().first()
            )
        return dict(row) if row else None

    def deliveries_of(self, keys: Sequence[DeliveryKey]) -> dict[DeliveryKey, dict[str, Any]]:
        """The ledger rows of ``keys`` that exist (few queries for many keys of one step)."""
        with self.engine.connect() as conn:
            return self._rows_in(conn, keys)

    @staticmethod
    def _rows_in(
        conn: Connection, keys: Sequence[DeliveryKey]
    ) -> dict[DeliveryKey, dict[str, Any]]:
        c = tables.deliveries.c
        wanted = set(keys)
        found: dict[DeliveryKey, dict[str, Any]] = {}
        groups: dict[tuple[str, str], list[DeliveryKey]] = {}
        for key in wanted:
            groups.setdefault((key.root_run_id, key.step), []).append(key)
        for (root, step), members in groups.items():
            items = sorted({k.item_key for k in members})
            for start in range(0, len(items), 500):
                query = select(tables.deliveries).where(
                    c.root_run_id == root,
                    c.step == step,
                    c.item_key.in_(items[start : start + 500]),
                )
                for row in conn.execute(query).mappings():
                    key = DeliveryKey(root, step, row["item_key"], row["recipient"])
                    if key in wanted:
                        found[key] = dict(row)
        return found

    def deliveries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        query = select(tables.deliveries).order_by(tables.deliveries.c.id)
        if run_id:
            query = query.where(tables.deliveries.c.root_run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def sent_by(self, run_id: str, root_run_id: str) -> list[dict[str, Any]]:
        """The deliveries ``run_id`` itself sent (its root's ledger holds its re-executions' too),
        in the order they were claimed; filtered in SQL on the ledger's root-run index."""
        c = tables.deliveries.c
        query = (
            select(tables.deliveries)
            .where(c.root_run_id == root_run_id, c.run_id == run_id, c.status == "sent")
            .order_by(c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _finish_many(self, updates: Sequence[tuple[DeliveryKey, dict[str, Any]]]) -> None:
        if not updates:
            return
        now = _now()
        params = [
            {
                "k_root": key.root_run_id,
                "k_step": key.step,
                "k_item": key.item_key,
                "k_to": key.recipient,
                "v_status": values["status"],
                "v_receipt": values["receipt"],
                "v_error": values["error"],
                "v_at": now,
            }
            for key, values in updates
        ]
        self._grouped(lambda conn: conn.execute(_FINISH, params))

    @staticmethod
    def _match(key: DeliveryKey) -> tuple[Any, ...]:
        c = tables.deliveries.c
        return (
            c.root_run_id == key.root_run_id,
            c.step == key.step,
            c.item_key == key.item_key,
            c.recipient == key.recipient,
        )

    # ------------------------------------------------------------ fan-out item results
    def item_results(
        self, root_run_id: str, step: str, item_keys: Sequence[str]
    ) -> dict[str, bytes]:
        """What ``step`` gave for these items in an earlier run of the same root run."""
        c = tables.item_results.c
        found: dict[str, bytes] = {}
        keys = sorted(set(item_keys))
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                query = select(c.item_key, c.result).where(
                    c.root_run_id == root_run_id,
                    c.step == step,
                    c.item_key.in_(keys[start : start + 500]),
                )
                found.update({row.item_key: row.result for row in conn.execute(query)})
        return found

    def save_item_results(self, root_run_id: str, step: str, results: Mapping[str, bytes]) -> None:
        """Keep what ``step`` gave for these items (one transaction, shared with other threads')."""
        if not results:
            return
        now = _now()
        rows = [
            {
                "root_run_id": root_run_id,
                "step": step,
                "item_key": k,
                "result": v,
                "created_at": now,
            }
            for k, v in results.items()
        ]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(tables.item_results).on_conflict_do_nothing()
        self._grouped(lambda conn: conn.execute(statement, rows))  # kept ones stay as they are

    # ------------------------------------------------------------ sandbox outbox
    def add_to_outbox(
        self,
        *,
        channel: str,
        recipient: str,
        subject: str | None,
        body: str,
        attachments: list[str],
        playbook: str,
        run_id: str,
        step: str,
    ) -> str:
        message_id = f"outbox-{uuid.uuid4().hex[:16]}"
        with self._begin() as conn:
            conn.execute(
                insert(tables.outbox).values(
                    channel=channel,
                    recipient=recipient,
                    subject=subject,
                    body=body,
                    attachments=attachments,
                    playbook=playbook,
                    run_id=run_id,
                    step=step,
                    message_id=message_id,
                    created_at=_now(),
                )
            )
        return message_id

    def outbox(
        self, *, run_id: str | None = None, channel: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = select(tables.outbox).order_by(tables.outbox.c.id)
        if run_id:
            query = query.where(tables.outbox.c.run_id == run_id)
        if channel:
            query = query.where(tables.outbox.c.channel == channel)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------ dead letters
    def add_dead_letter(
        self,
        *,
        playbook: str,
        step: str,
        run_id: str,
        action: str,
        error: BaseException | str,
        inputs: Any,
        attempts: int = 1,
        scope: bytes | None = None,
        root_run_id: str | None = None,
    ) -> int:
        """Write a dead letter; with ``root_run_id``, one per (root run, playbook, step key):
        a re-execution meeting the same failure updates that letter (reopened) instead."""
        error_type = type(error).__name__ if isinstance(error, BaseException) else "Error"
        values = {
            "playbook": playbook,
            "step": step,
            "run_id": run_id,
            "root_run_id": root_run_id,
            "action": action,
            "error_type": error_type,
            "error": str(error),
            "inputs": jsonable(inputs),
            "attempts": attempts,
            "status": "open",
            "scope": scope,
        }
        c = tables.dead_letters.c
        with self._begin() as conn:
            if root_run_id is not None:
                existing = conn.execute(
                    select(c.id)
                    .where(c.root_run_id == root_run_id, c.playbook == playbook, c.step == step)
                    .order_by(c.id)
                ).scalar()
                if existing is not None:
                    conn.execute(
                        update(tables.dead_letters)
                        .where(c.id == existing)
                        .values(**values, redriven_at=None)
                    )
                    return int(existing)
            result = conn.execute(insert(tables.dead_letters).values(**values, created_at=_now()))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def dead_letter(self, letter_id: int) -> dict[str, Any] | None:
        """One dead letter, its scope (typed JSON, see ``codec``) included."""
        query = select(tables.dead_letters).where(tables.dead_letters.c.id == letter_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def mark_redriven(self, letter_id: int) -> None:
        with self._begin() as conn:
            conn.execute(
                update(tables.dead_letters)
                .where(tables.dead_letters.c.id == letter_id)
                .values(status="redriven", redriven_at=_now())
            )

    def dead_letters(
        self, *, playbook: str | None = None, run_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        listed = [c for c in tables.dead_letters.c if c.name != "scope"]
        query = select(*listed).order_by(tables.dead_letters.c.id)
        if playbook:
            query = query.where(tables.dead_letters.c.playbook == playbook)
        if run_id:
            query = query.where(tables.dead_letters.c.run_id == run_id)
        if status:
            query = query.where(tables.dead_letters.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------ webhook inbox (read by sensors)
    def add_to_inbox(self, playbook: str, webhook_id: str, payload: Any) -> int | None:
        """Store an inbound call once per ``webhook_id``; ``None`` when it was a duplicate."""
        try:
            with self._begin() as conn:
                result = conn.execute(
                    insert(tables.inbox).values(
                        playbook=playbook,
                        webhook_id=webhook_id,
                        payload=jsonable(payload),
                        received_at=_now(),
                    )
                )
        except IntegrityError:
            return None
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def inbox_after(self, playbook: str, cursor: int, limit: int = 100) -> Iterator[dict[str, Any]]:
        c = tables.inbox.c
        query = (
            select(tables.inbox)
            .where(c.playbook == playbook, c.id > cursor)
            .order_by(c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        yield from rows

    # ------------------------------------------------------------ local secrets
    def webhook_secret(self, playbook: str) -> str:
        """The playbook's Standard Webhooks ``whsec_`` key, made on first use and kept locally."""
        name = f"webhook:{playbook}"
        with self.engine.connect() as conn:
            value = conn.execute(
                select(tables.secrets.c.value).where(tables.secrets.c.name == name)
            ).scalar()
        if value:
            return str(value)
        made = "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode()
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(tables.secrets).values(name=name, value=made, created_at=_now())
                )
        except IntegrityError:
            return self.webhook_secret(playbook)
        return made
