"""Checks beyond one model's shape: ids, references, the step graph, schedules and inputs.

Every check returns :class:`Finding` s (a path in a document, a message, a hint); the loader
locates them in their files. Checks never raise and never stop at the first problem.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from partnerships_orchestrator.spec.expression_checks import PlaybookExpressions
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.lineage import SqlProblem, tables_read
from partnerships_orchestrator.spec.models import (
    CommunicateStep,
    Connections,
    CronTrigger,
    Dataset,
    DatasetTrigger,
    InputSpec,
    Metrics,
    Playbook,
    QueryStep,
    Report,
    Schedule,
    Step,
    StepBase,
    Sync,
    TemplateStep,
    Trigger,
)
from partnerships_orchestrator.spec.problems import Finding, Loc
from partnerships_orchestrator.spec.suggest import did_you_mean, listing, show

DocumentModel = Playbook | Sync | Dataset | Report | Metrics | Connections
CRON_HINT = "five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * 1-5`"


@dataclass
class CheckContext:
    """What checks of one document need to know about the rest of the folder."""

    asset_ids: frozenset[str] = frozenset()
    connections: frozenset[str] = frozenset()  # connectors configured by a connections document
    templates_dir: Path | None = None
    check_expressions: bool = True
    _template_files: list[str] | None = field(default=None, repr=False)

    def knows_asset(self, asset_id: str) -> bool:
        return asset_id in self.asset_ids or _normal(asset_id) in self._normal_assets

    @cached_property
    def _normal_assets(self) -> frozenset[str]:
        return frozenset(_normal(a) for a in self.asset_ids)

    def template_files(self) -> list[str]:
        """Files under the templates folder, as relative POSIX paths (listed once, on demand)."""
        if self._template_files is None:
            root = self.templates_dir
            files = root.rglob("*") if root is not None and root.is_dir() else iter(())
            self._template_files = sorted(
                p.relative_to(root).as_posix() for p in files if p.is_file() and root
            )
        return self._template_files


def _normal(name: str) -> str:
    """Ids as Dagster names them: `-` becomes `_`."""
    return name.replace("-", "_")


def asset_ids_of(models: Sequence[DocumentModel]) -> set[str]:
    """Sync object assets (``<sync id>_<object>``) and dataset, metrics and report ids."""
    ids: set[str] = set()
    for model in models:
        if isinstance(model, Sync):
            ids.update(model.asset_ids())
        elif isinstance(model, Dataset | Metrics | Report):
            ids.add(model.id)
    return ids


# ---------------------------------------------------------------- one document


def check_document(
    model: DocumentModel, file: str, index: int, context: CheckContext
) -> list[Finding]:
    """Every problem of one valid model that needs more than its own shape to see."""
    if isinstance(model, Playbook):
        return check_playbook(model, file, index, context)
    findings: list[Finding] = []
    schedule = getattr(model, "schedule", None)
    if isinstance(schedule, Schedule):
        findings += _schedule_problems(schedule.cron, schedule.timezone, ("schedule",), file, index)
    if isinstance(model, Report):
        findings += _report_problems(model, file, index, context)
    if isinstance(model, Sync):
        findings += list(_sync_problems(model, file, index))
    if isinstance(model, Dataset | Metrics):
        findings += list(_sql_problems(model, file, index, context))
    if isinstance(model, Dataset | Sync):
        findings += list(_table_collisions(model, file, index))
    if isinstance(model, Connections):
        from partnerships_orchestrator.connections import connection_problems

        findings += [
            Finding(file, index, p.loc, p.message, p.hint) for p in connection_problems(model)
        ]
    return findings


def warehouse_tables() -> frozenset[str]:
    """The tables of the product's warehouse schema (partners, deals, metric_history, ...)."""
    from partnerships_orchestrator.warehouse import metadata

    return frozenset(metadata.tables)


def sql_reads(model: Dataset | Metrics) -> list[tuple[Loc, list[str] | SqlProblem]]:
    """(where, tables read or the parse problem) for the dataset's SQL or each metric's."""
    queries: list[tuple[Loc, str]] = (
        [(("sql",), model.sql)]
        if isinstance(model, Dataset)
        else [(("metrics", n, "sql"), m.sql) for n, m in enumerate(model.metrics)]
    )
    out: list[tuple[Loc, list[str] | SqlProblem]] = []
    for loc, sql in queries:
        try:
            out.append((loc, tables_read(sql)))
        except SqlProblem as problem:
            out.append((loc, problem))
    return out


def _sql_problems(
    model: Dataset | Metrics, file: str, index: int, context: CheckContext
) -> Iterator[Finding]:
    """SQL that parses, reading only assets, warehouse tables and declared `sources`."""
    known_tables = warehouse_tables() | set(model.sources)
    for loc, read in sql_reads(model):
        if isinstance(read, SqlProblem):
            yield Finding(
                file, index, loc, f"SQL does not parse: {read}", "write one SELECT (or WITH) query"
            )
            continue
        for table in read:
            if table in known_tables or context.knows_asset(table):
                continue
            choices = sorted({*known_tables, *(_normal(a) for a in context.asset_ids)})
            yield Finding(
                file,
                index,
                loc,
                f"the SQL reads table `{table}`, which is neither an asset nor a warehouse table",
                did_you_mean(table, choices, "assets and warehouse tables", always_list=True)
                + "; list tables other tools land under `sources`",
            )
    for n, dep in enumerate(model.deps):
        if not context.knows_asset(dep):
            yield Finding(file, index, ("deps", n), *_unknown_asset(dep, context))


def _table_collisions(model: Dataset | Sync, file: str, index: int) -> Iterator[Finding]:
    """A dataset or sync table must not replace a table of the warehouse schema."""
    tables = warehouse_tables()
    named: list[tuple[Loc, str]] = (
        [(("id",), model.id)]
        if isinstance(model, Dataset)
        else [(("objects", n), a) for n, a in enumerate(model.asset_ids())]
    )
    for loc, asset_id in named:
        if _normal(asset_id) in tables:
            yield Finding(
                file,
                index,
                loc,
                f"`{asset_id}` would replace the warehouse table `{_normal(asset_id)}`",
                "choose another id: the asset's table is named after it",
            )


def _sync_problems(sync: Sync, file: str, index: int) -> Iterator[Finding]:
    """Objects and properties the provider's sync knows (assets/crm_schema.py)."""
    from partnerships_orchestrator.assets.crm_schema import OBJECTS

    known = OBJECTS[sync.provider]
    for n, name in enumerate(sync.objects):
        if name not in known:
            yield Finding(
                file,
                index,
                ("objects", n),
                f"unknown {sync.provider} object `{name}`",
                did_you_mean(name, sorted(known), f"{sync.provider} objects", always_list=True),
            )
    for name, props in sync.properties.items():
        if name not in known:
            yield Finding(
                file,
                index,
                ("properties", name),
                f"`properties` names `{name}`, which is not a {sync.provider} object",
                did_you_mean(name, sorted(known), f"{sync.provider} objects", always_list=True),
                target="key",
            )
            continue
        if name not in sync.objects:
            yield Finding(
                file,
                index,
                ("properties", name),
                f"`properties` names `{name}`, which `objects` does not list",
                f"add `{name}` to `objects` or remove these properties",
                target="key",
            )
        for m, prop in enumerate(props):
            if prop not in known[name].properties:
                yield Finding(
                    file,
                    index,
                    ("properties", name, m),
                    f"unknown {sync.provider} {name} property `{prop}`",
                    did_you_mean(
                        prop, sorted(known[name].properties), "properties", always_list=True
                    ),
                )


def _report_problems(report: Report, file: str, index: int, context: CheckContext) -> list[Finding]:
    findings = [
        Finding(file, index, ("data", n), *_unknown_asset(ref, context))
        for n, ref in enumerate(report.data)
        if not context.knows_asset(ref)
    ]
    problem = _template_problem(report.template, context)
    if problem:
        findings.append(Finding(file, index, ("template",), *problem))
    return findings


def check_playbook(
    playbook: Playbook,
    file: str,
    index: int,
    context: CheckContext,
    graph: StepGraph | None = None,
) -> list[Finding]:
    """Step ids, dependencies, fan-out shape, triggers, inputs, references and expressions."""
    graph = graph or StepGraph.of(playbook)
    findings = [
        *_step_id_problems(playbook, file, index),
        *_dependency_problems(playbook, graph, file, index),
        *_shape_problems(playbook, graph, file, index),
        *_trigger_problems(playbook, file, index, context),
        *_input_problems(playbook, file, index),
        *_step_reference_problems(playbook, file, index, context),
    ]
    if context.check_expressions:
        findings += PlaybookExpressions(playbook, graph, file, index).findings()
    return findings


def _step_id_problems(playbook: Playbook, file: str, index: int) -> Iterator[Finding]:
    first: dict[str, int] = {}
    normal: dict[str, int] = {}
    for position, step in enumerate(playbook.steps):
        loc: Loc = ("steps", position, "id")
        if step.id in first:
            yield Finding(
                file,
                index,
                loc,
                f"duplicate step id `{step.id}`",
                f"`steps[{first[step.id]}]` already has it; step ids are unique in a playbook",
            )
            continue
        first[step.id] = position
        other = normal.setdefault(_normal(step.id), position)
        if other != position:
            other_id = playbook.steps[other].id
            yield Finding(
                file,
                index,
                loc,
                f"step id `{step.id}` collides with `{other_id}` (`steps[{other}]`): "
                f"both become the Dagster op `{_normal(step.id)}`",
                "rename one of them",
            )


def _first_positions(playbook: Playbook) -> dict[str, int]:
    """Where each step id is first declared."""
    positions: dict[str, int] = {}
    for position, step in enumerate(playbook.steps):
        positions.setdefault(step.id, position)
    return positions


def _dependency_problems(
    playbook: Playbook, graph: StepGraph, file: str, index: int
) -> Iterator[Finding]:
    for position, step in enumerate(playbook.steps):
        for n, dep in enumerate(step.depends_on):
            if dep not in graph.steps:
                others = [s for s in graph.ids if s != step.id]
                yield Finding(
                    file,
                    index,
                    ("steps", position, "depends_on", n),
                    f"`depends_on` names no step `{dep}`",
                    did_you_mean(dep, others, "steps in this playbook"),
                )
    cycle = graph.find_cycle()
    if cycle:
        position = _first_positions(playbook)[cycle[0]]
        n = playbook.steps[position].depends_on.index(cycle[1])
        yield Finding(
            file,
            index,
            ("steps", position, "depends_on", n),
            "dependency cycle: " + " -> ".join(cycle),
            "each step depends on the next; remove one of these `depends_on` entries",
        )


def _shape_problems(
    playbook: Playbook, graph: StepGraph, file: str, index: int
) -> Iterator[Finding]:
    positions = _first_positions(playbook)
    for issue in graph.shape_issues():
        position = positions[issue.step]
        yield Finding(file, index, ("steps", position, issue.key), issue.message, issue.hint)


def _trigger_problems(
    playbook: Playbook, file: str, index: int, context: CheckContext
) -> Iterator[Finding]:
    for n, trigger in enumerate(playbook.triggers):
        if isinstance(trigger, CronTrigger):
            yield from _schedule_problems(
                trigger.cron, trigger.timezone, ("triggers", n), file, index
            )
        elif isinstance(trigger, DatasetTrigger) and not context.knows_asset(trigger.dataset):
            yield Finding(
                file, index, ("triggers", n, "dataset"), *_unknown_asset(trigger.dataset, context)
            )


def _unknown_asset(ref: str, context: CheckContext) -> tuple[str, str]:
    known = sorted(context.asset_ids)
    return (f"unknown dataset `{ref}`", did_you_mean(ref, known, "known datasets and assets"))


def _schedule_problems(
    cron: str, timezone: str, loc: Loc, file: str, index: int
) -> Iterator[Finding]:
    if not valid_cron(cron):
        yield Finding(file, index, (*loc, "cron"), f"invalid cron {show(cron)}", CRON_HINT)
    if not valid_timezone(timezone):
        yield Finding(
            file,
            index,
            (*loc, "timezone"),
            f"unknown timezone {show(timezone)}",
            did_you_mean(timezone, sorted(zoneinfo.available_timezones()), "IANA time zones"),
        )


@lru_cache(maxsize=1024)
def valid_cron(cron: str) -> bool:
    """Dagster's own rule (five fields, no 30th of February); imported only when needed."""
    from dagster._utils.schedules import is_valid_cron_string

    return bool(is_valid_cron_string(cron))


@lru_cache(maxsize=1024)
def valid_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- playbooks pydantic refused

_STEP: TypeAdapter[Any] = TypeAdapter(Step)
_INPUTS: TypeAdapter[dict[str, InputSpec]] = TypeAdapter(dict[str, InputSpec])
_TRIGGERS: TypeAdapter[list[Trigger]] = TypeAdapter(list[Trigger])
_T = TypeVar("_T")


def _valid_or_none(adapter: TypeAdapter[_T], value: Any) -> _T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def check_refused_playbook(
    data: dict[str, Any], file: str, index: int, context: CheckContext
) -> list[Finding]:
    """Graph, reference and expression problems of a playbook the models refused.

    So that one unknown key does not hide a cycle: steps that validate (once unknown keys are
    dropped) are checked fully; the others count only by their id and `depends_on`. Triggers
    and inputs are checked when they validate on their own.
    """
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not all(
        isinstance(s, dict) and isinstance(s.get("id"), str) for s in raw_steps
    ):
        return []
    steps = [_salvage_step(raw) for raw in raw_steps]
    broken = frozenset(
        raw["id"] for raw, step in zip(raw_steps, steps, strict=True) if step is None
    )
    inputs: dict[str, InputSpec] | None = _valid_or_none(_INPUTS, data.get("inputs") or {})
    triggers: list[Trigger] | None = _valid_or_none(_TRIGGERS, data.get("triggers") or [])
    playbook = Playbook.model_construct(
        id=str(data.get("id")),
        steps=[step or _placeholder(raw) for raw, step in zip(raw_steps, steps, strict=True)],  # type: ignore[misc]
        inputs=inputs or {},
        triggers=triggers or [],
    )
    graph = StepGraph.of(playbook)
    findings = [
        *_step_id_problems(playbook, file, index),
        *_dependency_problems(playbook, graph, file, index),
        *_shape_problems(playbook, graph, file, index),
        *_step_reference_problems(playbook, file, index, context),
        *_trigger_problems(playbook, file, index, context),
    ]
    if inputs is not None and triggers is not None:
        findings += _input_problems(playbook, file, index)
    if context.check_expressions:
        checker = PlaybookExpressions(
            playbook, graph, file, index, skip_steps=broken, check_inputs=inputs is not None
        )
        findings += checker.findings()
    return findings


def _salvage_step(raw: dict[str, Any]) -> StepBase | None:
    """The step, if it validates once its unknown keys are dropped."""
    try:
        return cast(StepBase, _STEP.validate_python(raw))
    except ValidationError as exc:
        unknown = {e["loc"][-1] for e in exc.errors() if e["type"] == "extra_forbidden"}
        if not unknown or len(unknown) != len(exc.errors()):
            return None
    try:
        return cast(
            StepBase, _STEP.validate_python({k: v for k, v in raw.items() if k not in unknown})
        )
    except ValidationError:
        return None


def _placeholder(raw: dict[str, Any]) -> StepBase:
    """A broken step reduced to what the graph needs."""
    depends_on = raw.get("depends_on")
    for_each = raw.get("for_each")
    return StepBase.model_construct(
        id=raw["id"],
        type=str(raw.get("type", "")),
        depends_on=[d for d in depends_on if isinstance(d, str)]
        if isinstance(depends_on, list)
        else [],
        for_each=for_each if isinstance(for_each, str) else None,
        collect=raw.get("collect") is True,
    )


# ---------------------------------------------------------------- inputs

INPUT_TYPE_PHRASES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "`true` or `false`",
    "date": "a date like `2024-01-31`",
    "datetime": "a date-time like `2024-01-31T09:00:00Z`",
    "list": "a list",
    "object": "a mapping",
}


def _is_iso(value: Any, parse: Any) -> bool:
    try:
        parse(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def fits_type(value: Any, type_name: str) -> bool:
    """Does ``value`` (as YAML or JSON gives it) fit an input's ``type``?"""
    if type_name == "string":
        return isinstance(value, str)
    if type_name in ("integer", "number") and isinstance(value, bool):
        return False
    if type_name == "integer":
        return isinstance(value, int)
    if type_name == "number":
        return isinstance(value, int | float)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "date":
        return (
            isinstance(value, date)
            and not isinstance(value, datetime)
            or (isinstance(value, str) and _is_iso(value, date.fromisoformat))
        )
    if type_name == "datetime":
        return isinstance(value, date) or (
            isinstance(value, str) and _is_iso(value, datetime.fromisoformat)
        )
    if type_name == "list":
        return isinstance(value, list)
    return isinstance(value, dict)


def _input_problems(playbook: Playbook, file: str, index: int) -> Iterator[Finding]:
    for name, spec in playbook.inputs.items():
        yield from _input_value_problems(name, spec, file, index)
    crons = [n for n, t in enumerate(playbook.triggers) if isinstance(t, CronTrigger)]
    if not crons:
        return
    for name, spec in playbook.inputs.items():
        if spec.is_required and spec.default is None:
            yield Finding(
                file,
                index,
                ("inputs", name),
                f"required input `{name}` has no default, but the cron trigger "
                f"`triggers[{crons[0]}]` starts runs without inputs",
                "give it a `default`, or set `required: false`",
            )


def _input_value_problems(name: str, spec: InputSpec, file: str, index: int) -> Iterator[Finding]:
    expected = INPUT_TYPE_PHRASES[spec.type]
    for n, choice in enumerate(spec.enum or []):
        if not fits_type(choice, spec.type):
            yield Finding(
                file,
                index,
                ("inputs", name, "enum", n),
                f"enum value {show(choice)} of input `{name}` is not {expected}",
                f"`type: {spec.type}` needs {expected}",
            )
    if spec.default is None:
        return
    loc: Loc = ("inputs", name, "default")
    if not fits_type(spec.default, spec.type):
        yield Finding(
            file,
            index,
            loc,
            f"default {show(spec.default)} of input `{name}` is not {expected}",
            f"`type: {spec.type}` needs {expected}",
        )
    elif spec.enum is not None and spec.default not in spec.enum:
        yield Finding(
            file,
            index,
            loc,
            f"default {show(spec.default)} of input `{name}` is not one of its `enum`",
            f"valid values: {listing(show(v).strip('`') for v in spec.enum)}",
        )


# ---------------------------------------------------------------- references in steps


def _step_reference_problems(
    playbook: Playbook, file: str, index: int, context: CheckContext
) -> Iterator[Finding]:
    for position, step in enumerate(playbook.steps):
        if isinstance(step, QueryStep) and step.source.startswith("dataset:"):
            ref = step.source.removeprefix("dataset:")
            if not context.knows_asset(ref):
                yield Finding(
                    file, index, ("steps", position, "source"), *_unknown_asset(ref, context)
                )
        if isinstance(step, QueryStep) and _unconfigured_crm(step, context):
            configured = listing(f"`{c}`" for c in sorted(context.connections)) or "none"
            yield Finding(
                file,
                index,
                ("steps", position, "source"),
                f"source `{step.source}` is not configured in a connections document",
                f"add `{step.source}` to a `kind: connections` document "
                f"(configured: {configured}), or query the `warehouse`",
            )
        if isinstance(step, TemplateStep | CommunicateStep) and step.template is not None:
            problem = _template_problem(step.template, context)
            if problem:
                yield Finding(file, index, ("steps", position, "template"), *problem)


def _unconfigured_crm(step: QueryStep, context: CheckContext) -> bool:
    """A CRM object query whose source no connections document configures."""
    crm = step.object is not None and step.source != "warehouse"
    return crm and not step.source.startswith("dataset:") and step.source not in context.connections


def _template_problem(name: str, context: CheckContext) -> tuple[str, str] | None:
    """Message and hint when template file ``name`` is not under the templates folder."""
    root = context.templates_dir
    if root is None:
        return None
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        return (f"template path `{name}` leaves the templates folder", f"a path under `{root}`")
    if path.is_file():
        return None
    return (
        f"template file `{name}` not found under `{root}`",
        did_you_mean(name, context.template_files(), "templates"),
    )


# ---------------------------------------------------------------- across documents


@dataclass(frozen=True)
class Placed:
    """A valid model and where it was read from."""

    model: DocumentModel
    file: str
    index: int

    @property
    def where(self) -> str:
        return self.file if self.index == 0 else f"{self.file} (document {self.index + 1})"


def check_folder(documents: Sequence[Placed]) -> list[Finding]:
    """Ids unique across the folder (also once `-` becomes `_`), and asset ids too.

    The later document (in file order) is the one reported, so adding a file never hides a
    document that loaded before.
    """
    return [*_duplicate_ids(documents), *_duplicate_assets(documents), *_asset_cycles(documents)]


def asset_upstreams(model: DocumentModel) -> list[str]:
    """The asset ids (normalised) a dataset, metrics set or report reads."""
    if isinstance(model, Report):
        return [_normal(d) for d in model.data]
    if isinstance(model, Dataset | Metrics):
        tables = [
            t for _, read in sql_reads(model) if not isinstance(read, SqlProblem) for t in read
        ]
        return sorted({*(_normal(t) for t in tables), *(_normal(d) for d in model.deps)})
    return []


def _asset_cycles(documents: Sequence[Placed]) -> Iterator[Finding]:
    """Datasets (metrics, reports) that read each other in a loop: one finding per member."""
    nodes = {
        _normal(d.model.id): d for d in documents if isinstance(d.model, Dataset | Metrics | Report)
    }
    edges = {name: [u for u in asset_upstreams(d.model) if u in nodes] for name, d in nodes.items()}
    reported: set[str] = set()
    for start in sorted(nodes):
        cycle = _cycle_from(start, edges)
        if not cycle or start in reported:
            continue
        reported.update(cycle)
        loop = " -> ".join([*cycle, cycle[0]])
        order = {id(d): n for n, d in enumerate(documents)}
        doc = max((nodes[m] for m in cycle), key=lambda d: order[id(d)])  # the later one
        loc: Loc = ("data",) if isinstance(doc.model, Report) else ("sql",)
        if isinstance(doc.model, Metrics):
            loc = ("metrics",)
        yield Finding(
            doc.file,
            doc.index,
            loc,
            f"dependency cycle between assets: {loop}",
            "an asset cannot read, directly or not, what it produces; break the loop",
        )


def _cycle_from(start: str, edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle through ``start`` (as the list of its members from ``start``), if any."""
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(node: str) -> list[str] | None:
        for nxt in edges.get(node, []):
            if nxt == start:
                return list(path)
            if nxt in seen:
                continue
            seen.add(nxt)
            path.append(nxt)
            found = walk(nxt)
            if found:
                return found
            path.pop()
        return None

    return walk(start)


def _duplicate_ids(documents: Sequence[Placed]) -> Iterator[Finding]:
    seen: dict[str, Placed] = {}
    for doc in documents:
        model = doc.model
        other = seen.setdefault(_normal(model.id), doc)
        if other is doc:
            continue
        if other.model.id == model.id:
            message = (
                f"duplicate id `{model.id}`: the {other.model.kind} in {other.where} has it too"
            )
        else:
            message = (
                f"id `{model.id}` collides with `{other.model.id}` ({other.model.kind} in "
                f"{other.where}): both become the Dagster name `{_normal(model.id)}`"
            )
        hint = "ids are unique across the folder, whatever the kind; rename one"
        yield Finding(doc.file, doc.index, ("id",), message, hint)


def _duplicate_assets(documents: Sequence[Placed]) -> Iterator[Finding]:
    seen: dict[str, Placed] = {}
    for doc in documents:
        for loc, asset_id in _assets_with_locs(doc.model):
            other = seen.setdefault(_normal(asset_id), doc)
            if other is doc or _normal(other.model.id) == _normal(doc.model.id):
                continue  # the same document, or a duplicate id reported already
            yield Finding(
                doc.file,
                doc.index,
                loc,
                f"asset `{asset_id}` is also made by the {other.model.kind} "
                f"`{other.model.id}` in {other.where}",
                "asset ids are unique; rename this document or that one",
            )


def _assets_with_locs(model: DocumentModel) -> list[tuple[Loc, str]]:
    if isinstance(model, Sync):
        return [(("objects", n), a) for n, a in enumerate(model.asset_ids())]
    if isinstance(model, Dataset | Metrics | Report):
        return [(("id",), model.id)]
    return []
