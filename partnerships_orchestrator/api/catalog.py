"""The playbooks the API serves: `playbooks/` files and the playbook store, loaded as one
catalog by the same loader and validator as the CLI, reloaded when either source changes."""

from __future__ import annotations

import math
import re
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from partnerships_orchestrator.api.body_limits import StrictJSONError, strict_json
from partnerships_orchestrator.api.data_versions import DataVersions, sqlite_path
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.spec.loader import discover, load_catalog
from partnerships_orchestrator.spec.models import ID_PATTERN, Playbook
from partnerships_orchestrator.spec.problems import ROOT, SpecError, SpecProblem
from partnerships_orchestrator.spec.validate import DocumentModel
from partnerships_orchestrator.store.playbook_store import FORMATS, PlaybookStore

REQUEST_FILE = "<request body>"
CHECK_EVERY = 1.0  # seconds between looks for changed files and store playbooks


@dataclass(frozen=True)
class Entry:
    """A valid document and where it lives: `file` (read-only, from git) or `store` (the API's)."""

    model: DocumentModel
    file: str
    origin: str


class PlaybookCatalog:
    """The project's catalog of both sources, read again (``Project.reload``) only after a
    file in `playbooks/` or a store playbook changed. Files are looked at every
    ``CHECK_EVERY`` seconds; the store after every commit to a SQLite state file (so a change
    made through any API process is seen by the next request to every other), else every
    ``CHECK_EVERY`` seconds too."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.settings = project.settings
        self.store = PlaybookStore(project.settings.state_url)
        self._lock = threading.Lock()
        self._fingerprint: object = None
        self._entries: dict[str, Entry] = {}
        self._checked_at = -math.inf
        # a store change is a commit to the state file: on SQLite its data version, taken at
        # each look, tells at once (other API processes included) that one may have happened
        self._state_db = sqlite_path(project.settings.state_url)
        self._versions = DataVersions(held=1)
        self._stamp: object = None
        self.version = 0  # one more at every reload: part of cached answers' keys

    def _current_fingerprint(self) -> object:
        files = []
        for path in discover([self.settings.playbooks_dir]):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((str(path), stat.st_mtime_ns, stat.st_size))
        return (self.store.version(), tuple(files))

    def invalidate(self) -> None:
        """Read both sources again on the next call (after a change made here)."""
        self._checked_at = -math.inf

    def _state_stamp(self) -> object:
        """The state file's data version (``None`` when the state is not a SQLite file)."""
        if self._state_db is None:
            return None
        try:
            return self._versions.version(self._state_db)
        except sqlite3.Error:
            return object()  # cannot tell: equal to nothing, so the store is looked at

    def _due(self, now: float, stamp: object) -> bool:
        return now - self._checked_at >= CHECK_EVERY or stamp != self._stamp

    def refresh(self) -> None:
        now = time.monotonic()
        stamp = self._state_stamp()  # before looking: a commit meanwhile makes the next look due
        if not self._due(now, stamp):
            return
        fingerprint = self._current_fingerprint()
        self._checked_at = now
        self._stamp = stamp
        with self._lock:
            if fingerprint == self._fingerprint:
                return
            self.project.reload()
            catalog = self.project.catalog
            store_dir = str(self.settings.playbook_store_dir)
            self._entries = {
                doc.model.id: Entry(
                    doc.model, doc.file, "store" if doc.file.startswith(store_dir) else "file"
                )
                for doc in catalog.documents
            }
            self._fingerprint = fingerprint
            self.version += 1

    def snapshot(self) -> tuple[int, dict[str, Entry]]:
        """The catalog's version and the entries of that version."""
        self.refresh()
        with self._lock:
            return self.version, self._entries

    def current(self) -> tuple[int, dict[str, Entry]] | None:
        """:meth:`snapshot` if it needs no look at the sources (one was taken less than
        ``CHECK_EVERY`` ago and no reload is under way); ``None`` otherwise. Never waits, so an
        event loop may ask, and call :meth:`snapshot` in a worker thread on ``None``."""
        if self._due(time.monotonic(), self._state_stamp()):
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.version, self._entries
        finally:
            self._lock.release()

    def entries(self) -> dict[str, Entry]:
        self.refresh()
        return self._entries

    def entry(self, playbook_id: str) -> Entry | None:
        return self.entries().get(playbook_id)

    def file_backed(self, playbook_id: str) -> str | None:
        """The `playbooks/` file defining this id (valid or not), if any."""
        self.refresh()
        entry = self._entries.get(playbook_id)
        if entry and entry.origin == "file":
            return entry.file
        for file in self.project.catalog.invalid_files:
            if (
                not file.startswith(str(self.settings.playbook_store_dir))
                and Path(file).stem == playbook_id
            ):
                return file
        return None

    def check(self, text: str, fmt: str, expected_id: str | None) -> Playbook:
        """Validate a playbook document as it would stand in a file, against everything else
        loaded (ids, datasets, connections, templates); :class:`SpecError` lists its problems."""
        parsed_id = document_id(text, fmt)
        if expected_id is not None and parsed_id is not None and parsed_id != expected_id:
            raise SpecError(
                [
                    SpecProblem(
                        REQUEST_FILE,
                        1,
                        1,
                        "id",
                        f"the document's id `{parsed_id}` differs from `{expected_id}` in the URL",
                        hint=f"set `id: {expected_id}` or send it to /playbooks/{parsed_id}",
                    )
                ]
            )
        own_id = expected_id or parsed_id
        if own_id is not None and not re.fullmatch(ID_PATTERN, own_id):
            own_id = None  # the validator names the bad id; the file just needs a safe name
        store_dir = self.settings.playbook_store_dir
        self.store.export(store_dir)
        others = [
            path
            for path in sorted(store_dir.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.stem != own_id
        ]
        with tempfile.TemporaryDirectory(prefix="playbook-check-") as folder:
            candidate = Path(folder) / f"{own_id or 'document'}{FORMATS[fmt]}"
            candidate.write_text(text, encoding="utf-8")
            catalog = load_catalog(
                [self.settings.playbooks_dir, *others, candidate],
                templates_dir=self.settings.templates_dir,
            )
            mine = catalog.invalid_files.get(str(candidate), [])
            problems = [_renamed(p, str(candidate)) for p in mine]
            documents = [d for d in catalog.documents if d.file == str(candidate)]
            if (
                not problems
                and mine == []
                and str(candidate) not in [d.file for d in catalog.documents]
            ):
                clash = [p for p in catalog.problems if own_id and own_id in p.message]
                problems = [_renamed(p, str(candidate)) for p in clash] or [
                    SpecProblem(REQUEST_FILE, 1, 1, ROOT, "the document defines nothing")
                ]
        if problems:
            raise SpecError(problems)
        if len(documents) != 1 or not isinstance(documents[0].model, Playbook):
            kinds = ", ".join(d.model.kind for d in documents) or "none"
            raise SpecError(
                [
                    SpecProblem(
                        REQUEST_FILE,
                        1,
                        1,
                        "kind",
                        f"send exactly one playbook document, got: {kinds}",
                        hint="other kinds (datasets, syncs, connections) live in `playbooks/` files",
                    )
                ]
            )
        return documents[0].model


def _renamed(problem: SpecProblem, file: str) -> SpecProblem:
    if problem.file != file:
        return problem
    return SpecProblem(
        REQUEST_FILE, problem.line, problem.column, problem.path, problem.message, problem.hint
    )


def document_id(text: str, fmt: str) -> str | None:
    """The `id` a document claims, if it parses (the validator reports it when it does not)."""
    try:
        data = (
            strict_json(text.encode())
            if fmt == "json"
            else yaml.load(text, Loader=yaml.CSafeLoader)
        )
    except (StrictJSONError, yaml.YAMLError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
