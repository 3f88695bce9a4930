"""Which tables a dataset's or metric's SQL reads (sqlglot), for lineage and validation.

Names bound by a ``WITH`` clause are not tables; subqueries are read through. Only the table's own
name counts (``schema.table`` reads ``table``), lower-cased as the warehouse names tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"<Token token_type: [^,]+, text: (?P<text>[^,]*),[^>]*>")


@dataclass(frozen=True)
class SqlProblem(Exception):
    """SQL that does not parse: the parser's message and where in the SQL text."""

    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column} of the SQL)" if self.line else ""
        return f"{self.message}{where}"


def tables_read(sql: str) -> list[str]:
    """The tables ``sql`` reads, sorted, without CTE names; :class:`SqlProblem` if unparsable."""
    import sqlglot  # imported on first use: loading a folder without datasets stays fast
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise SqlProblem(
            _TOKEN.sub(r"`\g<text>`", str(first.get("description") or exc).split("\n")[0]),
            first.get("line"),
            first.get("col"),
        ) from None
    except TokenError as exc:
        raise SqlProblem(str(exc).split("\n")[0]) from None
    if len(statements) != 1:
        raise SqlProblem(f"expected one SQL statement, found {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise SqlProblem(f"expected a query (SELECT or WITH ... SELECT), found {tree.key.upper()}")
    bound = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    names = {table.name.lower() for table in tree.find_all(exp.Table) if table.name}
    return sorted(names - bound)
