"""Static checks of the expressions and interpolated strings inside playbook steps.

Each distinct source text is parsed once (cached) into what it uses: names, ``steps.<id>``,
``inputs.<name>``, filters and tests. Those uses are then checked against the step's place in
the graph: a step may read only steps upstream of it, ``item`` exists only inside a fan-out,
``row`` only inside ``assign`` and ``filter``.

Bare expressions are parsed exactly as :meth:`jinja2.Environment.compile_expression` does at run
time (so ``a }} {{ b`` is refused here too); other strings are Jinja2 templates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeGuard, TypeVar

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.parser import Parser

from partnerships_orchestrator.expressions import ENV, SCOPE_NAMES, is_interpolated, parse_template
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.models import EvaluateStep, Playbook, StepBase, TemplateStep
from partnerships_orchestrator.spec.problems import Finding, Loc
from partnerships_orchestrator.spec.suggest import did_you_mean, show

_N = TypeVar("_N", bound=nodes.Node)
BARE_KEYS = frozenset({"when", "for_each", "filter", "expression", "rows"})
NOT_INTERPOLATED = frozenset(
    {
        "id",
        "type",
        "name",
        "description",
        "depends_on",
        "collect",
        "on_error",
        "timeout_seconds",
        "template",
        "format",
        "channel",
        "method",
        "sign",
        "expect_status",
        "limit",
    }
)
NAMES_IN_SCOPE = frozenset(SCOPE_NAMES) | frozenset(ENV.globals)
ROW_KEYS = frozenset({"assign", "filter"})


@dataclass(frozen=True)
class ExpressionUses:
    """What one expression or template text uses, or why it does not parse."""

    error: str | None = None
    error_line: int = 1
    names: frozenset[str] = frozenset()
    steps: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()


@lru_cache(maxsize=16384)
def expression_uses(source: str) -> ExpressionUses:
    """Parse a bare expression the way ``compile_expression`` does at run time."""
    try:
        parser = Parser(ENV, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    except TemplateSyntaxError as exc:
        return ExpressionUses(error=exc.message or "syntax error", error_line=exc.lineno)
    names = frozenset(n.name for n in _find_all(expr, nodes.Name) if n.ctx == "load")
    return _uses(expr, names)


@lru_cache(maxsize=16384)
def template_uses(source: str) -> ExpressionUses:
    """Parse a string that may interpolate ``{{ }}`` (a Jinja2 template)."""
    try:
        template = parse_template(source)
    except TemplateSyntaxError as exc:
        return ExpressionUses(error=exc.message or "syntax error", error_line=exc.lineno)
    return _uses(template, frozenset(meta.find_undeclared_variables(template)))


def _uses(tree: nodes.Node, names: frozenset[str]) -> ExpressionUses:
    return ExpressionUses(
        names=names,
        steps=tuple(dict.fromkeys(_members_of(tree, "steps"))),
        inputs=tuple(dict.fromkeys(_members_of(tree, "inputs"))),
        filters=tuple(dict.fromkeys(f.name for f in _find_all(tree, nodes.Filter))),
        tests=tuple(dict.fromkeys(t.name for t in _find_all(tree, nodes.Test))),
    )


def _find_all(tree: nodes.Node, kind: type[_N] | tuple[type[_N], ...]) -> Iterator[_N]:
    """Nodes of ``kind`` in the tree, the root included (jinja's ``find_all`` skips it)."""
    if isinstance(tree, kind):
        yield tree
    yield from tree.find_all(kind)


def _members_of(tree: nodes.Node, name: str) -> Iterator[str]:
    """``x`` of every ``name.x`` and ``name['x']`` in the tree."""
    for node in _find_all(tree, (nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, nodes.Name) and target.name == name):
            continue
        if isinstance(node, nodes.Getattr):
            yield node.attr
        elif isinstance(node, nodes.Getitem) and _is_text(node.arg):
            yield node.arg.value


def _scope_order(names: frozenset[str]) -> list[str]:
    """Scope names first (``inputs``, ``steps``, ...), then ``row`` and helpers, sorted."""
    first = [n for n in (*SCOPE_NAMES, "row") if n in names]
    return first + sorted(names - set(first))


def _is_text(node: nodes.Node) -> TypeGuard[nodes.Const]:
    return isinstance(node, nodes.Const) and isinstance(node.value, str)


# ---------------------------------------------------------------- checks per step


@dataclass(frozen=True)
class _Use:
    """One expression in a step: where it is, its text, and whether it is bare."""

    loc: Loc
    source: str
    bare: bool
    key: str


class PlaybookExpressions:
    """Checks every expression of one playbook against its inputs and step graph."""

    def __init__(
        self,
        playbook: Playbook,
        graph: StepGraph,
        file: str,
        index: int,
        *,
        skip_steps: frozenset[str] = frozenset(),
        check_inputs: bool = True,
    ) -> None:
        self.playbook, self.graph, self.file, self.index = playbook, graph, file, index
        self.skip_steps, self.check_inputs = skip_steps, check_inputs

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        for position, step in enumerate(self.playbook.steps):
            if self.graph.steps.get(step.id) is not step or step.id in self.skip_steps:
                continue  # a repeated id (its references are ambiguous), or a broken step
            for use in step_expressions(step, ("steps", position)):
                found.extend(self._check(step, use))
        return found

    def _finding(self, use: _Use, message: str, hint: str | None = None) -> Finding:
        return Finding(self.file, self.index, use.loc, message, hint)

    def _check(self, step: StepBase, use: _Use) -> list[Finding]:
        if use.key == "sql":
            return [self._finding(use, *_SQL_PROBLEM)]
        uses = expression_uses(use.source) if use.bare else template_uses(use.source)
        if uses.error is not None:
            return [self._syntax(use, uses)]
        return [
            *self._names(step, use, uses),
            *self._steps(step, use, uses),
            *self._inputs(use, uses),
            *self._filters(use, uses),
        ]

    def _syntax(self, use: _Use, uses: ExpressionUses) -> Finding:
        what = "expression" if use.bare else "template"
        where = f" (line {uses.error_line} of the text)" if "\n" in use.source.strip() else ""
        if use.bare and is_interpolated(use.source):
            hint = f"`{use.key}` takes a bare expression: drop the `{{{{ }}}}`"
        elif use.bare:
            hint = "Jinja2 expression syntax, e.g. `steps.<id>.output.count > 0`"
        else:
            hint = "Jinja2 syntax: `{{ expression }}`, `{% if ... %}...{% endif %}`"
        return self._finding(
            use, f"{what} {show(use.source)} does not parse: {uses.error}{where}", hint
        )

    def _names(self, step: StepBase, use: _Use, uses: ExpressionUses) -> Iterator[Finding]:
        allowed = self._allowed_names(step, use)
        for name in sorted(uses.names - allowed):
            if name == "item":
                yield self._item_outside_fanout(step, use)
            elif name == "row":
                yield self._finding(
                    use,
                    f"`row` is only defined in `assign` and `filter`, in {show(use.source)}",
                    "read rows with `steps.<id>.output.rows`, or move this into `assign`",
                )
            else:
                hint = did_you_mean(name, _scope_order(allowed), "names in scope")
                yield self._finding(use, f"unknown name `{name}` in {show(use.source)}", hint)

    def _allowed_names(self, step: StepBase, use: _Use) -> frozenset[str]:
        allowed = NAMES_IN_SCOPE
        if use.key in ROW_KEYS:
            allowed = allowed | {"row"}
        if isinstance(step, TemplateStep) and use.key == "source":
            allowed = allowed | frozenset(step.context)
        if not self._item_in_scope(step, use):
            allowed = allowed - {"item"}
        return allowed

    def _item_in_scope(self, step: StepBase, use: _Use) -> bool:
        if use.key == "for_each":
            return False  # `item` is bound to the elements of this very list
        if isinstance(step, EvaluateStep) and (step.assign or step.filter is not None):
            return True
        return self.graph.fanout_of(step.id) is not None

    def _item_outside_fanout(self, step: StepBase, use: _Use) -> Finding:
        if use.key == "for_each":
            return self._finding(
                use,
                f"`item` is not defined in `for_each` itself: {show(use.source)}",
                "`for_each` yields the list whose elements become `item`",
            )
        return self._finding(
            use,
            f"`item` is only defined inside a fan-out, in {show(use.source)}",
            f"set `for_each` on `{step.id}`, or depend on a step that fans out "
            "(and not through a `collect: true` step)",
        )

    def _steps(self, step: StepBase, use: _Use, uses: ExpressionUses) -> Iterator[Finding]:
        upstream = self.graph.upstream(step.id)
        for ref in uses.steps:
            if ref in upstream:
                continue
            if ref == step.id:
                yield self._finding(use, f"{show(use.source)} reads step `{ref}` itself")
            elif ref not in self.graph.steps:
                yield self._finding(
                    use, f"unknown step `{ref}` in {show(use.source)}", self._step_hint(ref)
                )
            else:
                yield self._finding(
                    use,
                    f"step `{ref}` is not upstream of `{step.id}`, in {show(use.source)}",
                    self._upstream_hint(step.id, ref),
                )

    def _step_hint(self, ref: str) -> str:
        dashed = [s for s in self.graph.ids if s.startswith(f"{ref}-")]
        if dashed:
            return f"write `steps['{dashed[0]}']`: in `steps.{dashed[0]}` the `-` is a minus"
        return did_you_mean(ref, self.graph.ids, "steps")

    def _upstream_hint(self, step_id: str, ref: str) -> str:
        if step_id in self.graph.upstream(ref):
            return f"`{ref}` runs after `{step_id}`; a step reads only steps it depends on"
        return f"add `{ref}` to `depends_on` of `{step_id}`"

    def _inputs(self, use: _Use, uses: ExpressionUses) -> Iterator[Finding]:
        declared = list(self.playbook.inputs)
        for name in uses.inputs:
            if self.check_inputs and name not in self.playbook.inputs:
                hint = (
                    did_you_mean(name, declared, "declared inputs")
                    if declared
                    else "declare it under `inputs:`"
                )
                yield self._finding(use, f"unknown input `{name}` in {show(use.source)}", hint)

    def _filters(self, use: _Use, uses: ExpressionUses) -> Iterator[Finding]:
        for name in uses.filters:
            if name not in ENV.filters:
                hint = did_you_mean(name, sorted(ENV.filters), "filters")
                yield self._finding(use, f"unknown filter `{name}` in {show(use.source)}", hint)
        for name in uses.tests:
            if name not in ENV.tests:
                hint = did_you_mean(name, sorted(ENV.tests), "tests")
                yield self._finding(use, f"unknown test `{name}` in {show(use.source)}", hint)


_SQL_PROBLEM = (
    "SQL text is never interpolated: `{{ }}` in `sql`",
    "bind values with `:name` placeholders and `params`",
)


def step_expressions(step: StepBase, loc: Loc) -> Iterator[_Use]:
    """Every expression and interpolated string the user wrote in ``step``."""
    written = step.model_dump(by_alias=True, exclude_unset=True)
    for key, value in written.items():
        if key in NOT_INTERPOLATED or value is None:
            continue
        if key in BARE_KEYS and isinstance(value, str):
            yield _Use((*loc, key), value, True, key)
        elif key == "assign" and isinstance(value, dict):
            for name, source in value.items():
                yield _Use((*loc, key, name), source, True, key)
        elif key == "source" and not isinstance(step, TemplateStep):
            continue  # a query's source is a connector name or `dataset:<id>`
        else:
            for path, text in _strings(value, (*loc, key)):
                if is_interpolated(text):
                    yield _Use(path, text, False, key)


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every string inside a JSON-like value, with its path."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            yield from _strings(item, (*loc, position))
