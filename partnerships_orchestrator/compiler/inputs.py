"""A playbook's typed `inputs`: the run config schema, and checking values before a run starts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import dagster as dg

from partnerships_orchestrator.compiler.naming import safe
from partnerships_orchestrator.errors import InputError
from partnerships_orchestrator.spec.models import InputSpec, Playbook
from partnerships_orchestrator.spec.validate import INPUT_TYPE_PHRASES

_CONFIG_TYPES: dict[str, Any] = {
    "string": dg.String,
    "integer": dg.Int,
    "number": dg.Float,
    "boolean": dg.Bool,
    "date": dg.String,
    "datetime": dg.String,
    "list": dg.Array(dg.Any),
    "object": dg.Permissive(),
}


def config_field(spec: InputSpec, enum_name: str) -> dg.Field:
    """The Dagster config field for one input (what the launchpad shows)."""
    kind = _CONFIG_TYPES[spec.type]
    if spec.enum and spec.type == "string":
        kind = dg.Enum(enum_name, [dg.EnumValue(str(v)) for v in spec.enum])
    description = spec.description or f"{spec.type} input"
    if spec.enum:
        description += f" (one of {', '.join(map(str, spec.enum))})"
    if spec.default is not None:
        return dg.Field(kind, default_value=_config_default(spec), description=description)
    if spec.is_required:
        return dg.Field(kind, description=description)
    return dg.Field(dg.Noneable(kind), is_required=False, description=description)


def _config_default(spec: InputSpec) -> Any:
    if spec.type in ("date", "datetime"):
        return str(spec.default)
    return spec.default


def config_schema(playbook: Playbook) -> dict[str, dg.Field]:
    return {
        name: config_field(spec, safe(f"{playbook.id}__{name}"))
        for name, spec in playbook.inputs.items()
    }


def _type_needed(name: str, spec: InputSpec, value: Any) -> InputError:
    return InputError(
        f"input `{name}` needs {INPUT_TYPE_PHRASES[spec.type]}, got {value!r}",
        hint=f"give `{name}` {INPUT_TYPE_PHRASES[spec.type]}"
        + (f" from {spec.enum}" if spec.enum else ""),
    )


def coerce(name: str, spec: InputSpec, value: Any) -> Any:
    """Convert ``value`` (possibly text from the command line) to the input's type, or refuse it."""
    text = isinstance(value, str)
    try:
        result = _coerce(spec.type, value, text)
    except (TypeError, ValueError) as exc:
        raise _type_needed(name, spec, value) from exc
    if spec.enum and result not in spec.enum:
        raise InputError(
            f"input `{name}` must be one of {spec.enum}, got {value!r}",
            hint=f"choose one of {', '.join(map(str, spec.enum))}",
        )
    return result


def _coerce(kind: str, value: Any, text: bool) -> Any:
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError
        return value
    if kind == "integer":
        if isinstance(value, bool) or not (isinstance(value, int) or text):
            raise TypeError
        return int(value)
    if kind == "number":
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        lowered = str(value).lower() if text else None
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError
    if kind == "date":
        return (value if isinstance(value, date) else date.fromisoformat(str(value))).isoformat()
    if kind == "datetime":
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return parsed.isoformat()
    if kind == "list":
        parsed = json.loads(value) if text else value
        if not isinstance(parsed, list):
            raise TypeError
        return parsed
    if kind == "object":
        parsed = json.loads(value) if text else value
        if not isinstance(parsed, dict):
            raise TypeError
        return parsed
    raise ValueError(kind)


def check_inputs(playbook: Playbook, given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs with defaults applied; refuses unknown, missing and mistyped inputs."""
    problems: list[InputError] = []
    for name in given:
        if name not in playbook.inputs:
            known = ", ".join(playbook.inputs) or "none"
            problems.append(
                InputError(f"unknown input `{name}`", hint=f"inputs of `{playbook.id}`: {known}")
            )
    values: dict[str, Any] = {}
    for name, spec in playbook.inputs.items():
        if name in given and given[name] is not None:
            try:
                values[name] = coerce(name, spec, given[name])
            except InputError as exc:
                problems.append(exc)
        elif spec.default is not None:
            values[name] = coerce(name, spec, spec.default)
        elif spec.is_required:
            problems.append(
                InputError(
                    f"missing required input `{name}` ({spec.type})",
                    hint=f"pass --input {name}=<{spec.type}>",
                )
            )
        else:
            values[name] = None
    if problems:
        raise InputError(
            "; ".join(p.message for p in problems),
            hint="; ".join(p.hint for p in problems if p.hint),
        )
    return values


def typed_inputs(playbook: Playbook, config: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs from run config as the values expressions see (dates as dates, datetimes parsed)."""
    values = check_inputs(playbook, {k: v for k, v in config.items() if v is not None})
    for name, spec in playbook.inputs.items():
        value = values.get(name)
        if value is None:
            continue
        if spec.type == "date":
            values[name] = date.fromisoformat(value)
        elif spec.type == "datetime":
            values[name] = datetime.fromisoformat(value)
    return values
