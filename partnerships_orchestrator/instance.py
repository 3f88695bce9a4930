"""The Dagster instance and the product's state tables, set up once per home.

Dagster creates its SQLite storage (run history, event index, schedule state) the first time a
process opens it, and two processes doing that at the same moment leave two `alembic_version`
rows behind (the webserver and the daemon of a first `partnerships up`, or several first
`partnerships run`). So every entry point (`partnerships up`, `partnerships run`, the code
location's tooling, the API) calls :func:`prepare_instance` first: under an exclusive file lock in
the home it writes `dagster.yaml`, checks the storage for that old damage, creates and migrates
every storage in this one process, creates the product's own tables and the concurrency pools of
the connections, and records that it did, so later calls only take the lock and read one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.settings import Settings

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "DAGSTER_POSTGRES_URL"
LOCK_FILE = "setup.lock"
MARKER_FILE = ".partnerships-setup"


class BrokenHomeError(ConfigurationError):
    """Dagster's storage in the home is damaged in a way that is not safe to repair here."""


@dataclass(frozen=True)
class StorageFile:
    """One of Dagster's SQLite files under DAGSTER_HOME and what losing it would cost."""

    relative: str
    holds: str

    def path(self, dagster_home: Path) -> Path:
        return dagster_home / self.relative


STORAGE_FILES = (
    StorageFile("history/runs.db", "the run history shown in the UI"),
    StorageFile("history/runs/index.db", "the event index of past runs"),
    StorageFile("schedules/schedules.db", "schedule and sensor ticks and cursors"),
)


def instance_config_source() -> Path:
    """The shipped `dagster.yaml`."""
    return PACKAGE_ROOT / "dagster.yaml"


def dagster_postgres_url(url: str) -> str:
    """dagster-postgres needs the psycopg2 driver (SQLAlchemy 2.1 defaults `postgresql://` to
    psycopg 3, whose server-side binding breaks Dagster's NOTIFY statement)."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def use_psycopg2_for_dagster() -> None:
    """Rewrite ``DAGSTER_POSTGRES_URL`` in this process's environment for dagster-postgres (see
    :func:`dagster_postgres_url`); every child (webserver, daemon, code server, run worker,
    Celery worker) inherits the rewritten URL."""
    if os.environ.get(POSTGRES_ENV):
        os.environ[POSTGRES_ENV] = dagster_postgres_url(os.environ[POSTGRES_ENV])


def instance_config_text() -> str:
    """The `dagster.yaml` this deployment runs with (plus PostgreSQL storage when configured)."""
    config = instance_config_source().read_text()
    if os.environ.get(POSTGRES_ENV):
        config += "\n" + (PACKAGE_ROOT / "deploy" / "storage-postgres.yaml").read_text()
    return config


def write_instance_config(settings: Settings) -> Path:
    """Make DAGSTER_HOME and put the product's `dagster.yaml` there (rewritten only when it
    changed). A user's own DAGSTER_HOME that already has a `dagster.yaml` is left alone."""
    use_psycopg2_for_dagster()  # also when the dagster.yaml below is already there
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if "DAGSTER_HOME" in os.environ and target.exists():
        return home
    config = instance_config_text()
    if not target.exists() or target.read_text() != config:
        scratch = target.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(config)
        scratch.replace(target)  # readers never see half a file
    return home


@contextlib.contextmanager
def setup_lock(settings: Settings) -> Iterator[None]:
    """An exclusive lock on the home's set-up (blocks until other processes are done)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_instance(settings: Settings, pools: Iterable[str] = ()) -> Path:
    """Set up the home once (safe to call from many processes at once); returns DAGSTER_HOME.

    ``pools`` are the Dagster concurrency pools the playbooks' steps may claim (one per
    connection); they are created here so concurrent runs never race to create one.
    """
    wanted = sorted(set(pools))
    with setup_lock(settings):
        home = write_instance_config(settings)
        repair_storage(home)  # three small reads: a home broken before is caught every time
        marker = home / MARKER_FILE
        if marker.exists() and marker.read_text() == _fingerprint(home, settings, wanted):
            return home
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _create_storage(instance)
            for pool in wanted:
                instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
        from partnerships_orchestrator.store.state import StateStore

        StateStore(settings.state_url)  # creates the product's tables
        marker.write_text(_fingerprint(home, settings, wanted))
    return home


def open_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The instance of a prepared home, for a process that reads runs many times (API, CLI).

    Dagster's SQL run storage asks the database for the `runs` table's columns on every
    `get_run_records` (is `start_time` there yet?): on SQLite a second connection and a schema
    inspection, half the cost of reading one run. Those columns are only ever added (by a
    migration, which :func:`prepare_instance` runs before anything opens the home), never
    dropped, so once present the answer is kept for the life of this instance.
    """
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    storage = instance.run_storage
    if isinstance(storage, SqlRunStorage) and storage.has_run_stats_index_cols():
        setattr(storage, "has_run_stats_index_cols", lambda: True)  # noqa: B010 # see docstring
    return instance


def _fingerprint(home: Path, settings: Settings, pools: list[str]) -> str:
    parts = [
        dg.__version__,
        hashlib.sha256((home / "dagster.yaml").read_bytes()).hexdigest(),
        hashlib.sha256(settings.state_url.encode()).hexdigest(),  # the URL may hold a password
        ",".join(pools),
        *(str(f.path(home).exists()) for f in STORAGE_FILES),
    ]
    return "\n".join(parts)


def _create_storage(instance: dg.DagsterInstance) -> None:
    """Open every storage (Dagster creates and stamps a missing one on first use) and bring
    an outdated one up to this Dagster release."""
    instance.get_runs(limit=1)
    instance.event_log_storage.get_concurrency_keys()
    if instance.schedule_storage is not None:
        instance.schedule_storage.all_instigator_state()
    with contextlib.redirect_stdout(io.StringIO()):  # Dagster prints its progress
        instance.upgrade()


def repair_storage(dagster_home: Path) -> list[str]:
    """Fix what concurrent creation left in Dagster's SQLite files; returns what was repaired.

    Two processes creating one storage file at once both stamp `alembic_version`: the first the
    current head, the second (seeing the tables but no version yet) an older revision, which
    Dagster then reports as "more than one head present". The tables were created at the head,
    so when the head is among the rows and the others are older revisions of the same history,
    only the head is kept. Anything else cannot be repaired safely: that raises
    :class:`BrokenHomeError` naming the file and the command that starts it afresh (the
    warehouse and the state database with the delivery ledger stay untouched).
    """
    repaired = []
    for storage in STORAGE_FILES:
        path = storage.path(dagster_home)
        if not path.exists():
            continue
        revisions = sorted(set(_alembic_revisions(path)))
        if len(revisions) <= 1:
            continue
        head, history = _alembic_history()
        if head in revisions and set(revisions) <= history:
            _keep_one_revision(path, head)
            repaired.append(f"{path}: kept the head revision {head} of {', '.join(revisions)}")
            continue
        folder = dagster_home / storage.relative.split("/", 1)[0]
        raise BrokenHomeError(
            f"{path}: the table alembic_version holds {len(revisions)} different revisions "
            f"({', '.join(revisions)}), not all of this Dagster release's history; this Dagster "
            "storage cannot be repaired safely",
            hint=f"stop the product, then `rm -r {folder}` and start again: this loses "
            f"{_losses(folder, dagster_home)}; warehouse.db and state.db (the delivery ledger, "
            "outbox and dead letters) are not touched",
        )
    return repaired


def _alembic_history() -> tuple[str, set[str]]:
    """The head revision of Dagster's SQLite storage schema and every revision before it."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import get_alembic_config

    script = ScriptDirectory.from_config(get_alembic_config(sqlite_run_storage.__file__))
    head = script.get_current_head()
    return str(head), {rev.revision for rev in script.walk_revisions()}


def _losses(folder: Path, dagster_home: Path) -> str:
    lost = [s.holds for s in STORAGE_FILES if s.path(dagster_home).is_relative_to(folder)]
    return " and ".join(lost)


def _alembic_revisions(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        try:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.OperationalError:  # no version table yet: Dagster stamps it on open
            return []
    return [str(row[0]) for row in rows]


def _keep_one_revision(path: Path, revision: str) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
        conn.execute("DELETE FROM alembic_version")
        conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (revision,))
