"""Expressions and interpolation: Jinja2 syntax evaluated in a sandbox, unknown names are errors.

Bare expressions (``when``, ``for_each``, ``assign``, ``filter``, ``expression``) are compiled
with :func:`compile_expression`. Strings interpolate ``{{ ... }}`` with :func:`render_value`; a
string that is a single ``{{ ... }}`` and nothing else keeps the value's type (a date stays a date,
a list stays a list), like GitHub Actions and Ansible do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from partnerships_orchestrator.errors import ExpressionError

SCOPE_NAMES = ("inputs", "steps", "item", "trigger", "run")
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def weeks(n: float) -> timedelta:
    return timedelta(weeks=n)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def today() -> date:
    return datetime.now(UTC).date()


def parse_datetime(value: str | datetime) -> datetime:
    """ISO 8601 text to an aware datetime (UTC when no offset is given)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


HELPERS: dict[str, Any] = {
    "days": days,
    "hours": hours,
    "minutes": minutes,
    "weeks": weeks,
    "now": now,
    "today": today,
    "datetime": parse_datetime,
    "date": parse_date,
    "min": min,
    "max": max,
    "len": len,
    "abs": abs,
    "round": round,
    "sum": sum,
}


def _money(value: float | int | None, currency: str = "USD") -> str:
    """Format an amount like ``USD 12,500``."""
    return f"{currency} {float(value or 0):,.0f}"


def _strftime(value: date | datetime | str, fmt: str = "%Y-%m-%d") -> str:
    if isinstance(value, str):
        value = parse_datetime(value)
    return value.strftime(fmt)


FILTERS: dict[str, Any] = {"money": _money, "strftime": _strftime, "iso": lambda v: v.isoformat()}


def make_environment(**options: Any) -> SandboxedEnvironment:
    """The sandboxed Jinja2 environment every expression and template uses."""
    env = SandboxedEnvironment(undefined=StrictUndefined, **options)
    env.globals.update(HELPERS)
    env.filters.update(FILTERS)
    return env


ENV = make_environment()


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    return ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    return ENV.from_string(source)


def parse_expression(source: str) -> nodes.Expr:
    """Parse a bare expression; raises ``TemplateSyntaxError``."""
    parser = ENV._parse(f"{{{{ {source} }}}}", None, None)  # noqa: SLF001 - jinja's own parser
    output = parser.body[0]
    assert isinstance(output, nodes.Output)  # nosec B101 # invariant for mypy: a `{{ }}` template parses to one Output
    return output.nodes[0]  # type: ignore[return-value]


def parse_template(source: str) -> nodes.Template:
    """Parse a template string; raises ``TemplateSyntaxError``."""
    return ENV.parse(source)


def is_interpolated(value: str) -> bool:
    return "{{" in value or "{%" in value


def _explain(source: str, exc: Exception) -> ExpressionError:
    if isinstance(exc, UndefinedError):
        return ExpressionError(
            f"`{source}`: {exc.message}",
            hint="names in scope are inputs, steps.<id>.output, item, trigger, run and helpers",
        )
    if isinstance(exc, SecurityError):
        return ExpressionError(f"`{source}`: not allowed in the sandbox: {exc}")
    if isinstance(exc, TemplateSyntaxError):
        return ExpressionError(f"`{source}`: {exc.message}", hint="Jinja2 expression syntax")
    return ExpressionError(f"`{source}`: {type(exc).__name__}: {exc}")


def evaluate(source: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate a bare expression against ``scope``."""
    try:
        value = _compiled(source)(**scope)
        if isinstance(value, Undefined):  # a bare unknown name must fail, not pass silently
            value._fail_with_undefined_error()
        return value
    except Exception as exc:  # every failure becomes one ExpressionError naming the expression
        raise _explain(source, exc) from exc


def render_string(source: str, scope: Mapping[str, Any]) -> Any:
    """Interpolate ``{{ }}`` in a string; a lone ``{{ expr }}`` keeps its value's type."""
    if not is_interpolated(source):
        return source
    whole = _WHOLE.match(source)
    if whole and "{{" not in whole.group("expr") and "{%" not in source:
        return evaluate(whole.group("expr").strip(), scope)
    try:
        return _template(source).render(**scope)
    except Exception as exc:
        raise _explain(source, exc) from exc


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """Interpolate every string inside a JSON-like value (dicts, lists, scalars)."""
    if isinstance(value, str):
        return render_string(value, scope)
    if isinstance(value, Mapping):
        return {key: render_value(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, scope) for item in value]
    return value


def truthy(value: Any) -> bool:
    return bool(value)


def iter_strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from iter_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_strings(item)
