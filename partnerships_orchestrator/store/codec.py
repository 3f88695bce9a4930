"""Typed JSON for what the state database keeps of a run: scopes, item results.

The state database may be a PostgreSQL shared by every worker (and written by the API), so it
holds data, never code: values are JSON, with explicit encodings for the types JSON lacks, each
a one-key object: ``{"$date": "2026-01-31"}``, ``{"$datetime": "2026-01-31T09:00:00+00:00"}``,
``{"$time": "09:00:00"}``, ``{"$decimal": "12.50"}``, ``{"$tuple": [...]}``. A mapping that
happens to have one ``$``-key of its own is wrapped as ``{"$map": {...}}`` so it is never taken
for a tag. Decoding builds only these types; anything else is refused when it is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from partnerships_orchestrator.errors import NotEncodable

__all__ = ["NotEncodable", "decode", "encode"]

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$datetime": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$time": time.fromisoformat,
    "$decimal": Decimal,
}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):  # before date: a datetime is a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        encoded = {_key(k): _encode(v) for k, v in value.items()}
        return {"$map": encoded} if _looks_tagged(encoded) else encoded
    raise NotEncodable(
        f"a {type(value).__name__} cannot be kept in the state database",
        hint="steps pass on text, numbers, booleans, dates, decimals, lists and mappings",
    )


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise NotEncodable(f"mapping key {key!r} is not text", hint="use text keys")


def _looks_tagged(mapping: Mapping[str, Any]) -> bool:
    return len(mapping) == 1 and next(iter(mapping)).startswith("$")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _looks_tagged(value):
        [(tag, inner)] = value.items()
        if tag == "$map":
            return {k: _decode(v) for k, v in inner.items()}
        if tag == "$tuple":
            return tuple(_decode(v) for v in inner)
        if tag in _DECODERS:
            return _DECODERS[tag](inner)
        raise NotEncodable(f"unknown tag {tag!r} in stored state")
    return {k: _decode(v) for k, v in value.items()}


def encode(value: Any) -> bytes:
    """``value`` as UTF-8 JSON bytes; :class:`NotEncodable` for a type JSON cannot carry."""
    return json.dumps(_encode(value), separators=(",", ":")).encode()


def decode(data: bytes | str) -> Any:
    """The value :func:`encode` wrote."""
    return _decode(json.loads(data))
