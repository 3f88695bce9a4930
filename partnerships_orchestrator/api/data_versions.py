"""Has a SQLite file changed? `PRAGMA data_version` on connections kept open only to ask.

SQLite's `PRAGMA data_version` answers, on one connection, a number that differs between two
invocations whenever another connection (of any process) committed a change to the file in the
interim; commits made through the asking connection itself do not count, and these connections
never write. Asking costs a few microseconds (a shared lock, a look at the file's change
counter or WAL index), no query is compiled and no row is read.

A value is only comparable with values from the same connection: each connection gets a new
generation number, part of what :meth:`DataVersions.validator` returns, so a connection that was
closed (least recently asked first) or reopened (the file was replaced: another inode) never
matches a value taken before.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

FILES_HELD = 64  # files with an open connection for asking (least recently asked closed first)
BUSY_TIMEOUT = 30  # seconds to wait for a writer's exclusive lock, as the product's reads do
ABSENT = (-1, -1)  # the version of a file that does not exist (yet)

Token = tuple[int, int]  # (generation, data_version)


class _Probe:
    def __init__(self, path: str, generation: int) -> None:
        stat = os.stat(path)
        self.inode = (stat.st_dev, stat.st_ino)
        self.generation = generation
        self.lock = threading.Lock()
        # mode=rw: never creates the file (that is Dagster's or the state store's to do)
        self.conn = sqlite3.connect(
            f"file:{quote(path)}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )

    def version(self) -> int:
        with self.lock:
            # fetchall: the statement runs to its end, so no read lock outlives the call
            [(version,)] = self.conn.execute("PRAGMA data_version").fetchall()
        return int(version)

    def read(self, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class DataVersions:
    """``validator(paths)``: a value that changes whenever any of these files had a commit."""

    def __init__(self, held: int = FILES_HELD) -> None:
        self.held = held
        self._probes: OrderedDict[str, _Probe] = OrderedDict()
        self._lock = threading.Lock()
        self._generations = itertools.count(1)

    def validator(self, paths: Sequence[str]) -> tuple[Token, ...]:
        return tuple(self.version(path) for path in paths)

    def version(self, path: str) -> Token:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            self._forget(path)
            return ABSENT
        probe = self._probe(path, (stat.st_dev, stat.st_ino))
        if probe is None:
            return ABSENT
        try:
            return probe.generation, probe.version()
        except sqlite3.ProgrammingError:  # closed meanwhile (evicted): ask a new connection
            return self.version(path)

    def read(self, path: str, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        """Rows of one read-only query on the connection kept for ``path`` (reads never count
        as changes); ``sqlite3.Error`` when the file is gone or cannot be read."""
        stat = os.stat(path)
        probe = self._probe(path, (stat.st_dev, stat.st_ino))
        if probe is None:
            raise sqlite3.OperationalError(f"cannot open {path}")
        return probe.read(sql, params)

    def _probe(self, path: str, inode: tuple[int, int]) -> _Probe | None:
        with self._lock:
            probe = self._probes.get(path)
            if probe is not None and probe.inode == inode:
                self._probes.move_to_end(path)
                return probe
            if probe is not None:  # the file was replaced: its old connection reads the old one
                del self._probes[path]
                probe.close()
            try:
                probe = _Probe(path, next(self._generations))
            except (FileNotFoundError, sqlite3.OperationalError):
                return None  # removed between stat and open
            self._probes[path] = probe
            while len(self._probes) > self.held:
                _, dropped = self._probes.popitem(last=False)
                dropped.close()
            return probe

    def _forget(self, path: str) -> None:
        with self._lock:
            probe = self._probes.pop(path, None)
        if probe is not None:
            probe.close()

    def close(self) -> None:
        with self._lock:
            probes, self._probes = list(self._probes.values()), OrderedDict()
        for probe in probes:
            probe.close()


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` SQLAlchemy URL; ``None`` for any other database."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return str(Path(path).resolve()) if path and path != ":memory:" else None
