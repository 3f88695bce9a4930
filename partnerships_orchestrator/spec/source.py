"""Reading documents from files: parse fast, locate on error.

Every file is parsed with libyaml's ``CSafeLoader`` (``json`` for ``.json`` files) into plain
Python values. Only a file that has a problem to report is composed again into YAML nodes, whose
marks give the line and column of any path inside it (:class:`SourceMap`). Nothing is expanded
before parsing (``${env:...}`` stays text), so positions are the user's own.

Duplicate keys in one mapping are a problem (YAML silently keeps the last one). The fast pass
only notices that some mapping lost a key (one length comparison per mapping); the position pass
then names each duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from partnerships_orchestrator.spec.problems import (
    ROOT,
    Finding,
    Loc,
    SpecError,
    SpecProblem,
    format_path,
)

JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class ParsedFile:
    """The documents of one file as plain values, in file order."""

    documents: list[Any]
    may_have_duplicate_keys: bool = False


class _CheckingLoader(yaml.CSafeLoader):  # type: ignore[misc]
    """``CSafeLoader`` that notices (cheaply) when a mapping repeats a key."""

    lost_keys = False

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):  # a repeated key, or a merge key (`<<`) overridden
            self.lost_keys = True
        return mapping


class _NeedsFullConstructor(Exception):
    """A merge key (``<<``) or an unhashable key: let ``SafeConstructor`` build the document."""


_BUILDING = object()


class _FastLoader(_CheckingLoader):
    """libyaml composes the nodes; strings, mappings and lists are built here directly.

    ``SafeConstructor``'s generic path (generators, per-node bookkeeping) is most of the cost of
    loading: measured on 1,000 generated 10-step playbooks (2.1 MB), 0.40 s with ``load_all``
    and 0.24 s with this. Other scalars (numbers, booleans, dates, null) still go through
    ``SafeConstructor``; an alias yields the same object, as with ``SafeConstructor``, and a
    recursive alias is refused (no document needs one, and nothing downstream expects one).
    """

    def build(self, node: Any) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag != _MAP and tag != _SEQ:
            if tag == _MERGE_TAG:
                raise _NeedsFullConstructor
            return self.construct_object(node, deep=True)
        built = self._built.get(id(node))
        if built is _BUILDING:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "found a recursive alias (an anchor used inside itself)",
                node.start_mark,
            )
        if built is None:
            self._built[id(node)] = _BUILDING
            built = self._built[id(node)] = self._build_collection(node)
        return built

    def _build_collection(self, node: Any) -> Any:
        if node.tag == _SEQ:
            return [self.build(item) for item in node.value]
        pairs = node.value
        try:
            mapping = {self.build(key): self.build(value) for key, value in pairs}
        except TypeError:  # an unhashable key: SafeConstructor reports it with its position
            raise _NeedsFullConstructor from None
        if len(mapping) != len(pairs):
            self.lost_keys = True
        return mapping

    def documents(self) -> list[Any]:
        documents = []
        while self.check_node():
            root = self.get_node()  # held while building, so node ids stay unique
            self._built: dict[int, Any] = {}
            documents.append(self.build(root))
        return documents


def is_json(file: str | Path) -> bool:
    return str(file).lower().endswith(JSON_SUFFIXES)


def parse_file(text: str, file: str) -> ParsedFile:
    """All documents of ``file``; raises :class:`SpecError` with the syntax error's position."""
    return _parse_json(text, file) if is_json(file) else _parse_yaml(text, file)


def _parse_yaml(text: str, file: str) -> ParsedFile:
    try:
        try:
            return _load(_FastLoader(text))
        except _NeedsFullConstructor:
            return _load(_CheckingLoader(text))
    except yaml.YAMLError as exc:
        raise SpecError([yaml_error_problem(exc, file, text)]) from None
    except RecursionError:
        problem = SpecProblem(file, 1, 1, ROOT, "not valid YAML: nested too deeply")
        raise SpecError([problem]) from None


def _load(loader: _CheckingLoader) -> ParsedFile:
    try:
        if isinstance(loader, _FastLoader):
            documents = loader.documents()
        else:
            documents = []
            while loader.check_data():
                documents.append(loader.get_data())
    finally:
        loader.dispose()
    return ParsedFile(documents, loader.lost_keys)


_CLOSERS = {'"': '"', "'": "'", "[": "]", "{": "}"}


def yaml_error_problem(exc: yaml.YAMLError, file: str, text: str) -> SpecProblem:
    """A YAML syntax error as one problem at the mark libyaml reports.

    When libyaml reads to the end of the file inside a construct (a quote or bracket never
    closed), its mark is the end of the file; the mistake is where the construct opens.
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return SpecProblem(file, 1, 1, ROOT, f"not valid YAML: {exc}")
    opened = exc.context_mark
    if opened is not None and exc.problem_mark is not None and exc.problem_mark.index >= len(text):
        return _never_closed(exc, opened, file, text)
    mark = exc.problem_mark or opened
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    hint = None
    if exc.context:
        where = f" at line {opened.line + 1}" if opened else ""
        hint = f"{exc.context}{where}"
    return SpecProblem(file, line, column, ROOT, f"not valid YAML: {exc.problem}", hint)


def _never_closed(exc: yaml.MarkedYAMLError, opened: Any, file: str, text: str) -> SpecProblem:
    construct = str(exc.context).removeprefix("while scanning ").removeprefix("while parsing ")
    closer = _CLOSERS.get(text[opened.index : opened.index + 1])
    return SpecProblem(
        file,
        opened.line + 1,
        opened.column + 1,
        ROOT,
        f"not valid YAML: {construct} starts here and is never closed "
        f"(at the end of the file: {exc.problem})",
        f"add the closing `{closer}`" if closer else "close it before the end of the file",
    )


class _PairsHook:
    """``object_pairs_hook`` that notices repeated keys in a JSON object."""

    def __init__(self) -> None:
        self.lost_keys = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping = dict(pairs)
        if len(mapping) != len(pairs):
            self.lost_keys = True
        return mapping


def _parse_json(text: str, file: str) -> ParsedFile:
    hook = _PairsHook()
    try:
        data = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        problem = SpecProblem(file, exc.lineno, exc.colno, ROOT, f"not valid JSON: {exc.msg}")
        raise SpecError([problem]) from None
    documents = data if isinstance(data, list) else [data]
    return ParsedFile(documents, hook.lost_keys)


# ---------------------------------------------------------------- positions


class SourceMap:
    """The YAML nodes of one file, to turn document paths into line and column."""

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        try:
            roots = list(yaml.compose_all(text, Loader=yaml.CSafeLoader))
        except yaml.YAMLError:  # JSON that YAML 1.1 does not read: positions fall back to 1:1
            roots = []
        if is_json(file) and len(roots) == 1 and isinstance(roots[0], yaml.SequenceNode):
            roots = list(roots[0].value)  # a JSON array holds one document per element
        self.roots: list[Any] = roots

    def locate(self, finding: Finding) -> SpecProblem:
        line, column = self.position(finding.index, finding.loc, finding.target == "key")
        return SpecProblem(
            finding.file, line, column, format_path(finding.loc), finding.message, finding.hint
        )

    def position(self, index: int, loc: Loc, at_key: bool = False) -> tuple[int, int]:
        """1-based line and column of ``loc`` (its key with ``at_key``; its parent if absent)."""
        if index >= len(self.roots):
            return (1, 1)
        node, key = self.roots[index], None
        for part in loc:
            found = _child(node, part)
            if found is None:
                key = None  # a missing key: point at the mapping that lacks it
                break
            key, node = found
        mark = key.start_mark if at_key and key is not None else node.start_mark
        return (mark.line + 1, mark.column + 1)

    def duplicate_keys(self) -> list[SpecProblem]:
        """One problem per repeated key, at its second (and later) occurrence."""
        problems: list[SpecProblem] = []
        for root in self.roots:
            for loc, mapping in _mappings(root, ()):
                problems.extend(self._duplicates_in(loc, mapping))
        return problems

    def _duplicates_in(self, loc: Loc, mapping: Any) -> Iterator[SpecProblem]:
        first: dict[str, Any] = {}
        for key, _ in mapping.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            if key.value not in first:
                first[key.value] = key
                continue
            earlier = first[key.value].start_mark
            yield SpecProblem(
                self.file,
                key.start_mark.line + 1,
                key.start_mark.column + 1,
                format_path((*loc, key.value)),
                f"duplicate key `{key.value}`: only the last one would be kept",
                f"first given at line {earlier.line + 1}, column {earlier.column + 1}; "
                "keep one of them",
            )


def _child(node: Any, part: str | int) -> tuple[Any, Any] | None:
    """(key node, value node) of ``part`` in a mapping or sequence node, or None."""
    if isinstance(node, yaml.MappingNode):
        match = None
        for key, value in node.value:  # the last one wins, as when loading
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                match = (key, value)
        return match
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return (None, node.value[part]) if 0 <= part < len(node.value) else None
    return None


def _mappings(node: Any, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    """Every mapping node under ``node`` with its path."""
    if isinstance(node, yaml.MappingNode):
        yield loc, node
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from _mappings(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            yield from _mappings(item, (*loc, position))


def read_text(path: Path) -> str:
    """The file's text; raises :class:`SpecError` when it cannot be read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = SpecProblem(str(path), 1, 1, ROOT, f"not UTF-8 text: {exc.reason}")
        raise SpecError([problem]) from None
    except OSError as exc:
        problem = SpecProblem(str(path), 1, 1, ROOT, f"cannot read the file: {exc.strerror}")
        raise SpecError([problem]) from None
