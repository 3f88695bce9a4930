"""Load a folder of playbook documents into a :class:`Catalog`: valid models and located problems.

1. Every file is parsed fast (libyaml / json), then each document is validated by the pydantic
   models (a document with no ``kind`` is a playbook).
2. Valid models are checked against each other and the folder (:mod:`.validate`): ids, graph,
   references, schedules and, unless ``check_expressions=False``, every expression.
3. Only files with a finding are re-parsed with positions, to give each problem its line and
   column. A file with any problem contributes no documents; the other files load regardless.

The run worker loads with ``check_expressions=False`` (no Jinja parsing at all); the code server,
``partnerships validate`` and the API check everything, or one playbook lazily with
:func:`validate_playbook_expressions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from partnerships_orchestrator.spec.expression_checks import PlaybookExpressions
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.model_errors import findings_from
from partnerships_orchestrator.spec.models import Connections, Document, Playbook
from partnerships_orchestrator.spec.problems import ROOT, Finding, SpecError, SpecProblem
from partnerships_orchestrator.spec.source import (
    JSON_SUFFIXES,
    YAML_SUFFIXES,
    SourceMap,
    parse_file,
    read_text,
)
from partnerships_orchestrator.spec.suggest import show
from partnerships_orchestrator.spec.validate import (
    CheckContext,
    DocumentModel,
    Placed,
    asset_ids_of,
    check_document,
    check_folder,
    check_refused_playbook,
)

SUFFIXES = YAML_SUFFIXES + JSON_SUFFIXES
_DOCUMENT: TypeAdapter[DocumentModel] = TypeAdapter(Document)


@dataclass(frozen=True)
class LoadedDocument:
    """A valid document and where it came from (``index``: its place in a multi-document file)."""

    model: DocumentModel
    file: str
    index: int


@dataclass
class Catalog:
    """Everything a folder defines: the valid documents, and every problem of the others."""

    documents: list[LoadedDocument] = field(default_factory=list)
    problems: list[SpecProblem] = field(default_factory=list)
    invalid_files: dict[str, list[SpecProblem]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    templates_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`SpecError` listing every problem, if there is any."""
        if self.problems:
            raise SpecError(self.problems)

    @cached_property
    def _by_id(self) -> dict[str, LoadedDocument]:
        return {doc.model.id: doc for doc in self.documents}

    def document(self, doc_id: str) -> LoadedDocument | None:
        return self._by_id.get(doc_id)

    def get(self, doc_id: str) -> DocumentModel | None:
        doc = self._by_id.get(doc_id)
        return doc.model if doc else None

    def by_kind(self, kind: str) -> list[DocumentModel]:
        return [doc.model for doc in self.documents if doc.model.kind == kind]

    def playbooks(self) -> list[Playbook]:
        return [doc.model for doc in self.documents if isinstance(doc.model, Playbook)]

    def asset_ids(self) -> frozenset[str]:
        """Sync object assets (``<sync id>_<object>``) and dataset, metrics and report ids."""
        return frozenset(asset_ids_of([doc.model for doc in self.documents]))

    def source_of(self, doc_id: str) -> str | None:
        """The file a valid document was read from."""
        doc = self._by_id.get(doc_id)
        return doc.file if doc else None


@dataclass
class _File:
    """One file on its way through loading."""

    name: str
    text: str = ""
    documents: list[Any] = field(default_factory=list)
    may_have_duplicate_keys: bool = False
    problems: list[SpecProblem] = field(default_factory=list)


def load_catalog(
    paths: Sequence[Path | str],
    *,
    templates_dir: Path | None = None,
    check_expressions: bool = True,
) -> Catalog:
    """Load files and folders (``*.yaml``, ``*.yml``, ``*.json``, recursively, sorted)."""
    files = [_read(path) for path in discover(paths)]
    placed, refused, findings = _models(files)
    context = CheckContext(
        asset_ids=frozenset(asset_ids_of([p.model for p in placed])),
        connections=frozenset(
            name for p in placed if isinstance(p.model, Connections) for name in p.model.connections
        ),
        templates_dir=templates_dir,
        check_expressions=check_expressions,
    )
    for doc in placed:
        findings += check_document(doc.model, doc.file, doc.index, context)
    for file_name, index, data in refused:
        if data.get("kind") == "playbook":
            findings += check_refused_playbook(data, file_name, index, context)
    findings += check_folder(placed)
    return _catalog(files, placed, findings, templates_dir)


def discover(paths: Iterable[Path | str]) -> list[Path]:
    """Files named directly, then the documents under each folder (hidden ones skipped)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path).parts
                hidden = any(part.startswith(".") for part in relative)
                if file.suffix.lower() in SUFFIXES and file.is_file() and not hidden:
                    found.setdefault(file)
        else:
            found.setdefault(path)
    return list(found)


def _read(path: Path) -> _File:
    file = _File(str(path))
    if not path.exists():
        file.problems.append(SpecProblem(file.name, 1, 1, ROOT, "no such file or folder"))
        return file
    try:
        file.text = read_text(path)
        parsed = parse_file(file.text, file.name)
    except SpecError as exc:
        file.problems.extend(exc.problems)
        return file
    file.documents, file.may_have_duplicate_keys = parsed.documents, parsed.may_have_duplicate_keys
    return file


def _models(
    files: list[_File],
) -> tuple[list[Placed], list[tuple[str, int, dict[str, Any]]], list[Finding]]:
    """Validate every document with the pydantic models: valid ones, refused ones, findings."""
    placed: list[Placed] = []
    refused: list[tuple[str, int, dict[str, Any]]] = []
    findings: list[Finding] = []
    for file in files:
        for index, raw in enumerate(file.documents):
            if raw is None:
                continue  # an empty document (e.g. a trailing `---`)
            if not isinstance(raw, dict):
                message = f"a document must be a mapping with `kind` and `id`, got {show(raw)}"
                findings.append(Finding(file.name, index, (), message))
                continue
            data = raw if "kind" in raw else {"kind": "playbook", **raw}
            try:
                placed.append(Placed(_DOCUMENT.validate_python(data), file.name, index))
            except ValidationError as exc:
                findings += findings_from(exc, data, file.name, index)
                refused.append((file.name, index, data))
    return placed, refused, findings


def _catalog(
    files: list[_File], placed: list[Placed], findings: list[Finding], templates: Path | None
) -> Catalog:
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.file, []).append(finding)
    catalog = Catalog(files=[f.name for f in files], templates_dir=templates)
    for file in files:
        problems = file.problems + _locate(file, by_file.get(file.name, []))
        if problems:
            problems.sort(key=lambda p: p.sort_key)
            catalog.invalid_files[file.name] = problems
            catalog.problems += problems
    catalog.documents = [
        LoadedDocument(doc.model, doc.file, doc.index)
        for doc in placed
        if doc.file not in catalog.invalid_files
    ]
    return catalog


def _locate(file: _File, findings: list[Finding]) -> list[SpecProblem]:
    """Positions for a file's findings (and its duplicate keys): the only slow parse."""
    if not findings and not file.may_have_duplicate_keys:
        return []
    source = SourceMap(file.text, file.name)
    problems = [source.locate(finding) for finding in findings]
    if file.may_have_duplicate_keys:
        problems += source.duplicate_keys()
    return problems


def validate_playbook_expressions(playbook: Playbook, catalog: Catalog) -> list[SpecProblem]:
    """Every expression problem of one loaded playbook, located (for lazy, per-job checks)."""
    loaded = catalog.document(playbook.id)
    file, index = (loaded.file, loaded.index) if loaded else ("<playbook>", 0)
    findings = PlaybookExpressions(playbook, StepGraph.of(playbook), file, index).findings()
    if not findings:
        return []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    source = SourceMap(text, file)
    return sorted((source.locate(f) for f in findings), key=lambda p: p.sort_key)
