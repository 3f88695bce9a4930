"""Rendered answers of repeated reads, served again only while nothing they were read from has
changed.

An answer is stored under a key naming everything the route read it for (path, parameters as
the route parsed them, the caller's visibility, the catalog's version) together with the
validator of the files it was read from (:class:`DataVersions`), taken *before* the read. A
request takes the validator again and is served the stored body only if it is equal: no commit
reached any of those files since the stored answer began to be read, so the answer is what
reading now would give. A commit during the read changes the next validator, so the answer
read then is never served (one extra read, never a stale answer). Only SQLite files have such a
validator; an answer read from anything else (PostgreSQL) is read on every request.

An answer may also name a :class:`Witness`: a query of one of its files that returns what the
answer read there (one run's row of `runs.db`). Its rows' digest is taken before the read too;
when only that file changed since and the rows did not, the answer is kept under the new
validator (a daemon heartbeat in `runs.db` does not make every run's detail read again).

Requests that miss together (the same key and validator, say 50 dashboards after a commit) wait
for one read instead of each reading: the read began after all of them took the validator it
was taken under, and nothing was committed in between, so its answer is theirs too.

Each answer carries an entity tag (a hash of its body) for `ETag` / `If-None-Match`.
Bounded by entries and bytes, least recently served dropped first; thread-safe.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool

from partnerships_orchestrator.api.data_versions import DataVersions, Token

MAX_ENTRIES = 4096
CACHE_ENV = "PARTNERSHIPS_API_CACHE_MB"
DEFAULT_MB = 64


@dataclass(frozen=True)
class Rendered:
    """A rendered answer and its entity tag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        return cls(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')


@dataclass(frozen=True)
class Witness:
    """What of ``files[file]`` an answer was read from: a commit to that file that leaves this
    query's rows as they were does not change the answer (another table, another row)."""

    file: int
    sql: str
    params: tuple[object, ...]


@dataclass(frozen=True)
class _Entry:
    validator: tuple[Token, ...]
    answer: Rendered
    witnessed: bytes | None = None  # digest of the witness's rows when the answer began


@dataclass
class _Reading:
    """A read under way, for the requests that miss with the same key and validator."""

    validator: tuple[Token, ...]
    done: threading.Event = field(default_factory=threading.Event)
    answer: Rendered | None = None  # None once done: the read failed


class ResponseCache:
    """``answer(key, files, render)``: the body ``render`` gives, rendered again only after a
    commit to one of ``files`` (``None``: not cacheable, always rendered)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MB << 20,
        max_entries: int = MAX_ENTRIES,
        versions: DataVersions | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.versions = versions or DataVersions()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._reading: dict[Hashable, _Reading] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.renewed = 0  # hits after a change the witness showed did not touch the answer

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_entries > 0

    def answer(
        self,
        key: Hashable,
        files: Sequence[str] | None,
        render: Callable[[], bytes],
        witness: Witness | None = None,
    ) -> Rendered:
        validator = self._validator(files)  # before reading: see the docstring
        if files is None or validator is None:  # not cacheable: read, and keep nothing
            return Rendered.of(render())
        hit = self._valid(key, files, validator, witness)
        if hit is not None:
            return hit
        with self._lock:
            reading = self._reading.get(key)
            joined = reading is not None and reading.validator == validator
            if not joined:
                reading = self._reading[key] = _Reading(validator)
                self.misses += 1
        assert reading is not None  # nosec B101 # set above under the lock
        if joined:
            reading.done.wait()
            if reading.answer is not None:
                with self._lock:
                    self.hits += 1
                return reading.answer
            return Rendered.of(render())  # that read failed (a 404, say): this one answers
        return self._read(key, reading, render, files, witness)

    def lookup(
        self, key: Hashable, files: Sequence[str] | None, witness: Witness | None = None
    ) -> Rendered | None:
        """The stored answer if it is still valid; ``None`` (nothing read) otherwise. Never
        waits for a read under way, so an event loop may ask."""
        validator = self._validator(files)
        if files is None or validator is None:
            return None
        return self._valid(key, files, validator, witness)

    def _validator(self, files: Sequence[str] | None) -> tuple[Token, ...] | None:
        """The files' validator; ``None`` when nothing may be cached (no files to ask, the
        cache off, or a file that cannot tell whether anything changed)."""
        if files is None or not self.enabled:
            return None
        try:
            return self.versions.validator(files)
        except sqlite3.Error:
            return None

    async def served(
        self,
        key: Hashable,
        files: Sequence[str] | None,
        render: Callable[[], bytes],
        witness: Witness | None = None,
    ) -> Rendered:
        """:meth:`answer` for a route on the event loop: a hit is served right there (its
        probes and witness never wait: the files are in WAL mode, where readers take no lock a
        writer holds), a miss is read in a worker thread."""
        hit = self.lookup(key, files, witness)
        if hit is not None:
            return hit
        return await run_in_threadpool(self.answer, key, files, render, witness)

    def _valid(
        self,
        key: Hashable,
        files: Sequence[str],
        validator: tuple[Token, ...],
        witness: Witness | None,
    ) -> Rendered | None:
        """The entry for ``key`` if taken under ``validator``, or if only the witnessed file
        changed since and the witness's rows did not (the entry then takes ``validator``)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.validator == validator:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.answer
        if witness is None or entry.witnessed is None or len(entry.validator) != len(validator):
            return None
        pairs = zip(entry.validator, validator, strict=True)
        changed = {i for i, (held, now) in enumerate(pairs) if held != now}
        if changed != {witness.file} or self._witness(files, witness) != entry.witnessed:
            return None  # taken after `validator`: a change since makes the next one differ
        with self._lock:
            if self._entries.get(key) is entry:
                self._entries[key] = _Entry(validator, entry.answer, entry.witnessed)
                self._entries.move_to_end(key)
            self.hits += 1
            self.renewed += 1
        return entry.answer

    def _witness(self, files: Sequence[str], witness: Witness | None) -> bytes | None:
        """A digest of the witness's rows now (``None``: no witness, or it could not be read)."""
        if witness is None:
            return None
        try:
            rows = self.versions.read(files[witness.file], witness.sql, witness.params)
        except (sqlite3.Error, OSError):
            return None
        return hashlib.blake2b(repr(rows).encode(), digest_size=16).digest()

    def _read(
        self,
        key: Hashable,
        reading: _Reading,
        render: Callable[[], bytes],
        files: Sequence[str],
        witness: Witness | None,
    ) -> Rendered:
        try:
            witnessed = self._witness(files, witness)  # before reading, as the validator
            reading.answer = Rendered.of(render())
            self._put(key, _Entry(reading.validator, reading.answer, witnessed))
            return reading.answer
        finally:
            with self._lock:
                if self._reading.get(key) is reading:
                    del self._reading[key]
            reading.done.set()

    def _put(self, key: Hashable, entry: _Entry) -> None:
        size = len(entry.answer.body)
        if size > self.max_bytes // 4:
            return  # one huge answer would push out many small ones
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.answer.body)
            self._entries[key] = entry
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.answer.body)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size(self) -> tuple[int, int]:
        """(entries, bytes) held."""
        with self._lock:
            return len(self._entries), self._bytes
