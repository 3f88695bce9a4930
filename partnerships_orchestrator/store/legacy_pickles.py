"""Older versions kept dead-letter scopes and fan-out item results pickled in the state file;
this converts them to typed JSON (``codec``) once, when the schema is migrated.

Only that one-time step reads a pickle, with an unpickler that can build nothing but plain data
(builtins' containers, dates, times, decimals): a blob naming any other class is not run but
dropped (a scope: the letter then says to run the playbook again; an item result: the item's
step runs again on recovery, where the delivery ledger still refuses to send twice).
"""

from __future__ import annotations

import io
import pickle  # nosec B403 # only to read blobs older versions wrote, with the data-only unpickler below
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from partnerships_orchestrator.store import codec, tables

PICKLE_PREFIX = b"\x80"  # every pickle protocol >= 2 starts with PROTO
_DATA_CLASSES = (
    {
        ("builtins", name)
        for name in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool")
    }
    | {("datetime", name) for name in ("date", "datetime", "time", "timedelta", "timezone")}
    | {("decimal", "Decimal"), ("collections", "OrderedDict")}
)


class _DataOnlyUnpickler(pickle.Unpickler):  # nosec B301 # find_class admits plain data types only
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _DATA_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
        return super().find_class(module, name)


def _as_json(blob: bytes) -> bytes | None:
    """The blob re-encoded as typed JSON; ``None`` when it holds anything but plain data."""
    try:
        value = _DataOnlyUnpickler(io.BytesIO(blob)).load()
        return codec.encode(list(value) if isinstance(value, tuple) else value)
    except (pickle.UnpicklingError, codec.NotEncodable, EOFError, ValueError, TypeError):
        return None


def pickles_to_json(conn: Connection) -> None:
    """Re-encode every pickled dead-letter scope and item result as typed JSON."""
    letters, results = tables.dead_letters, tables.item_results
    for row in conn.execute(sa.select(letters.c.id, letters.c.scope)).all():
        if row.scope is not None and bytes(row.scope).startswith(PICKLE_PREFIX):
            converted = _as_json(bytes(row.scope))
            conn.execute(sa.update(letters).where(letters.c.id == row.id).values(scope=converted))
    for row in conn.execute(sa.select(results.c.id, results.c.result)).all():
        if bytes(row.result).startswith(PICKLE_PREFIX):
            converted = _as_json(bytes(row.result))
            if converted is None:
                conn.execute(sa.delete(results).where(results.c.id == row.id))
            else:
                conn.execute(
                    sa.update(results).where(results.c.id == row.id).values(result=converted)
                )
