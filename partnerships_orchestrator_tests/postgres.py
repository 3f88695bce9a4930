"""A throwaway PostgreSQL server for tests, built from the machine's ``initdb`` and ``pg_ctl``.

PostgreSQL refuses to run as root. When the tests run as root (CI), the server runs as the
``postgres`` system user (else ``nobody``): the commands are started with ``subprocess``'s
``user=``/``group=`` (setuid/setgid in the child, no ``su`` or shell involved), in a fresh
directory under the system temp dir owned by that user, because pytest's own tmp directories
are private to root (mode 0700). Otherwise the server lives in the given ``tmpdir``.

The server listens on 127.0.0.1 on a free port, has its unix socket in its own directory,
trusts every local connection and skips fsync: it is fast to start (~1 s) and holds nothing
worth keeping. ``stop()`` kills it (``pg_ctl -m immediate``) and removes what it created.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from partnerships_orchestrator_tests.ports import free_port

SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=50"
)
START_ATTEMPTS = 3
UNPRIVILEGED_USERS = ("postgres", "nobody")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed on this machine."""


def _binary(name: str) -> str:
    """Path of ``initdb``/``pg_ctl``: PATH first, then Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not versions:
        raise PostgresUnavailable(f"{name} not found on PATH or under /usr/lib/postgresql")
    return versions[-1]


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists")


def _run_kwargs(run_dir: Path, account: pwd.struct_passwd | None) -> dict[str, Any]:
    """``subprocess.run`` arguments: a clean environment and, as root, the unprivileged user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=str(run_dir), LC_ALL="C", LANG="C")
    kwargs: dict[str, Any] = {"env": env, "cwd": run_dir, "capture_output": True, "text": True}
    if account is not None:
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    return kwargs


def _check(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode == 0:
        return
    detail = (result.stderr or result.stdout).strip()
    if log is not None and log.exists():
        detail += "\n--- server log ---\n" + log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{what} failed (exit {result.returncode}): {detail}")


def start_postgres(tmpdir: str | os.PathLike[str]) -> tuple[str, Callable[[], None]]:
    """Start a server; return its URL (database ``postgres``) and an idempotent ``stop``."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    account = _unprivileged_user() if os.geteuid() == 0 else None
    owned_dir = account is not None or len(str(tmpdir)) > 80  # socket paths max ~107 bytes
    run_dir = Path(tempfile.mkdtemp(prefix="po-pg-")) if owned_dir else Path(tmpdir) / "pg"
    run_dir.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(run_dir, account.pw_uid, account.pw_gid)
    data, log = run_dir / "data", run_dir / "server.log"
    kwargs = _run_kwargs(run_dir, account)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if (data / "postmaster.pid").exists():
            subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **kwargs)
        if owned_dir:
            shutil.rmtree(run_dir, ignore_errors=True)

    try:
        init = [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"]
        _check(subprocess.run([*init, "--locale=C"], **kwargs), "initdb")
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            options = f"-p {port} -k {shlex.quote(str(run_dir))} {SERVER_OPTIONS}"
            command = [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options]
            result = subprocess.run([*command, "start"], **kwargs)
            if result.returncode == 0:
                break
            if attempt == START_ATTEMPTS:  # another process may have taken the port: retry
                _check(result, "pg_ctl start", log)
    except BaseException:
        stop()
        raise
    atexit.register(stop)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


def create_database(server_url: str, name: str) -> str:
    """Create an empty database ``name`` on the server at ``server_url``; return its URL."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
