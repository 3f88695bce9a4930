"""The subset of SOQL the Salesforce emulator understands, with Salesforce's own error codes.

``SELECT f1, f2 | FIELDS(STANDARD|CUSTOM|ALL) FROM Object [WHERE cond] [ORDER BY f [ASC|DESC]
[NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]`` where ``cond`` combines ``f op literal``
(``= != <> < <= > >=``), ``f [NOT] IN (...)`` and ``f LIKE 'pattern'`` with AND, OR, NOT and
parentheses. Literals follow SOQL: quoted strings with backslash escapes (``\\' \\" \\\\ \\n \\r
\\t \\b \\f \\_ \\%``; anything else is an illegal escape), unquoted dateTime
(``2024-01-01T00:00:00Z``, ``+hh:mm`` offsets, optional milliseconds) and date literals, numbers,
``true``/``false``/``null``. A dateTime field compared with a quoted string is refused, as
Salesforce does. Problems raise :class:`SoqlError` carrying ``MALFORMED_QUERY``,
``INVALID_FIELD`` or ``INVALID_TYPE``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),])
    |(?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_ESCAPES |= {c: c for c in "'\"\\_%"}
_KEYWORDS = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
    ]
)


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` is its errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Literal:
    kind: str  # string, datetime, date, number, boolean, null
    value: Any


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int


@dataclass
class Query:
    """A parsed query: canonical field names, a predicate, ordering and limits."""

    sobject: str
    fields: list[str]
    where: Predicate | None = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # field, desc, nulls last
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Schema:
    """The fields of each sObject: name -> type (id, string, email, datetime, double, boolean,
    reference)."""

    objects: Mapping[str, Mapping[str, str]]

    def sobject(self, name: str) -> str:
        for candidate in self.objects:
            if candidate.lower() == name.lower():
                return candidate
        raise SoqlError("INVALID_TYPE", f"sObject type '{name}' is not supported.")

    def field(self, sobject: str, name: str) -> str:
        for candidate in self.objects[sobject]:
            if candidate.lower() == name.lower():
                return candidate
        raise SoqlError(
            "INVALID_FIELD",
            f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a "
            "custom field, be sure to append the '__c' after the custom field name.",
        )

    def type_of(self, sobject: str, name: str) -> str:
        return self.objects[sobject][name]


def to_ms(value: datetime | date) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(round(value.timestamp() * 1000))


def parse(text: str, schema: Schema) -> Query:
    """The query ``text`` means, or a SoqlError."""
    return _Parser(text, _tokens(text), schema).query()


def _tokens(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            column = len(text) - len(text[position:].lstrip()) + 1
            raise _malformed(text, column, f"unexpected token: '{text[column - 1]}'")
        value = match.group(match.lastgroup)
        tokens.append(Token(match.lastgroup, value, match.start(match.lastgroup) + 1))
        position = match.end()
    return tokens


def _malformed(text: str, column: int, detail: str) -> SoqlError:
    pointer = " " * (column - 1) + "^"
    return SoqlError(
        "MALFORMED_QUERY", f"\n{text}\n{pointer}\nERROR at Row:1:Column:{column}\n{detail}"
    )


class _Parser:
    def __init__(self, text: str, tokens: list[Token], schema: Schema) -> None:
        self.text = text
        self.tokens = tokens
        self.schema = schema
        self.index = 0
        self.sobject = ""

    # -- token helpers --

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "name" and token.text.upper() in words

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise _malformed(self.text, len(self.text) + 1, "unexpected end of query")
        self.index += 1
        return token

    def expect(self, word: str) -> None:
        token = self.take()
        if token.text.upper() != word:
            raise self.unexpected(token)

    def unexpected(self, token: Token) -> SoqlError:
        return _malformed(self.text, token.column, f"unexpected token: '{token.text}'")

    # -- grammar --

    def query(self) -> Query:
        self.expect("SELECT")
        selected = self.select_list()
        self.expect("FROM")
        name = self.take()
        if name.kind != "name" or name.text.upper() in _KEYWORDS:
            raise self.unexpected(name)
        self.sobject = self.schema.sobject(name.text)
        query = Query(self.sobject, self.resolve_fields(selected))
        if self.keyword("WHERE"):
            self.take()
            query.where = self.disjunction()
        if self.keyword("ORDER"):
            self.take()
            self.expect("BY")
            query.order = self.order_list()
        if self.keyword("LIMIT"):
            self.take()
            query.limit = self.integer()
        if self.keyword("OFFSET"):
            self.take()
            query.offset = self.integer()
        if self.peek() is not None:
            raise self.unexpected(self.take())
        unbounded = query.limit is None or query.limit > 200
        if unbounded and {"FIELDS(ALL)", "FIELDS(CUSTOM)"} & set(selected):
            raise SoqlError(
                "MALFORMED_QUERY", "The SOQL FIELDS function must have a LIMIT of at most 200"
            )
        return query

    def select_list(self) -> list[str]:
        names = []
        while True:
            token = self.take()
            if token.kind != "name" or token.text.upper() in _KEYWORDS:
                raise self.unexpected(token)
            if token.text.upper() == "FIELDS":
                self.expect("(")
                group = self.take()
                if group.text.upper() not in ("STANDARD", "CUSTOM", "ALL"):
                    raise self.unexpected(group)
                self.expect(")")
                names.append(f"FIELDS({group.text.upper()})")
            else:
                names.append(token.text)
            if not (self.peek() and self.peek().text == ","):  # type: ignore[union-attr]
                return names
            self.take()

    def resolve_fields(self, selected: list[str]) -> list[str]:
        fields: list[str] = []
        for name in selected:
            if name.startswith("FIELDS("):
                group = name[7:-1]
                for candidate in self.schema.objects[self.sobject]:
                    custom = candidate.endswith("__c")
                    if group == "ALL" or (group == "CUSTOM") == custom:
                        fields.append(candidate)
            else:
                fields.append(self.schema.field(self.sobject, name))
        return list(dict.fromkeys(fields))

    def order_list(self) -> list[tuple[str, bool, bool]]:
        order = []
        while True:
            name = self.schema.field(self.sobject, self.take().text)
            descending = False
            if self.keyword("ASC", "DESC"):
                descending = self.take().text.upper() == "DESC"
            nulls_last = descending
            if self.keyword("NULLS"):
                self.take()
                nulls_last = self.take().text.upper() == "LAST"
            order.append((name, descending, nulls_last))
            if not (self.peek() and self.peek().text == ","):  # type: ignore[union-attr]
                return order
            self.take()

    def integer(self) -> int:
        token = self.take()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def conjunction(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("AND"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def factor(self) -> Predicate:
        if self.keyword("NOT"):
            self.take()
            inner = self.factor()
            return lambda r: not inner(r)
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            inner = self.disjunction()
            self.expect(")")
            return inner
        return self.condition()

    def condition(self) -> Predicate:
        token = self.take()
        if token.kind != "name" or token.text.upper() in _KEYWORDS:
            raise self.unexpected(token)
        name = self.schema.field(self.sobject, token.text)
        kind = self.schema.type_of(self.sobject, name)
        negate = False
        if self.keyword("NOT"):
            self.take()
            negate = True
            if not self.keyword("IN"):
                raise self.unexpected(self.take())
        if self.keyword("IN"):
            self.take()
            values = self.literal_list(name, kind)
            return lambda r: (any(_equal(kind, r.get(name), v) for v in values)) != negate
        if self.keyword("LIKE"):
            self.take()
            pattern = self.literal(name, kind)
            if pattern.kind != "string":
                raise self.unexpected(self.tokens[self.index - 1])
            regex = _like(pattern.value)
            return lambda r: r.get(name) is not None and regex.fullmatch(str(r[name])) is not None
        operator = self.take()
        if operator.kind != "op":
            raise self.unexpected(operator)
        value = self.literal(name, kind)
        return _comparison(name, kind, operator.text, value)

    def literal_list(self, name: str, kind: str) -> list[Literal]:
        self.expect("(")
        values = [self.literal(name, kind)]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.take()
            values.append(self.literal(name, kind))
        self.expect(")")
        return values

    def literal(self, name: str, kind: str) -> Literal:
        token = self.take()
        literal = self.read_literal(token)
        if literal.kind == "null":
            return literal
        expected = {"datetime": ("datetime",), "double": ("number",), "boolean": ("boolean",)}
        allowed = expected.get(kind, ("string",))
        if kind == "datetime" and literal.kind == "date":
            raise SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{name}' must be of type dateTime",
            )
        if literal.kind not in allowed:
            quoted = " and should not be enclosed in quotes" if literal.kind == "string" else ""
            wanted = {"datetime": "dateTime", "double": "double", "boolean": "boolean"}
            raise SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{name}' must be of type "
                f"{wanted.get(kind, 'string')}{quoted}",
            )
        return literal

    def read_literal(self, token: Token) -> Literal:
        if token.kind == "string":
            return Literal("string", self.unescape(token))
        if token.kind == "datetime":
            text = token.text.replace("Z", "+00:00")
            if re.search(r"[+-]\d{4}$", text):
                text = f"{text[:-2]}:{text[-2:]}"
            return Literal("datetime", to_ms(datetime.fromisoformat(text)) // 1000)
        if token.kind == "date":
            return Literal("date", token.text)
        if token.kind == "number":
            return Literal("number", float(token.text))
        if token.kind == "name" and token.text.lower() in ("true", "false"):
            return Literal("boolean", token.text.lower() == "true")
        if token.kind == "name" and token.text.lower() == "null":
            return Literal("null", None)
        raise self.unexpected(token)

    def unescape(self, token: Token) -> str:
        body, out, i = token.text[1:-1], [], 0
        while i < len(body):
            char = body[i]
            if char == "\\":
                escaped = body[i + 1]
                if escaped not in _ESCAPES:
                    raise SoqlError(
                        "MALFORMED_QUERY",
                        f"Invalid string literal '{body}'. Illegal escape sequence '\\{escaped}'",
                    )
                out.append("\\" + escaped if escaped in "_%" else _ESCAPES[escaped])
                i += 2
                continue
            out.append(char)
            i += 1
        return "".join(out)


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda record: any(p(record) for p in parts)


def _all_of(parts: list[Predicate]) -> Predicate:
    return lambda record: all(p(record) for p in parts)


def _like(pattern: str) -> re.Pattern[str]:
    parts, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append({"%": ".*", "_": "."}.get(pattern[i], re.escape(pattern[i])))
        i += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def comparable(kind: str, value: Any) -> Any:
    """A stored value as SOQL compares it: dateTime at second precision, text folded."""
    if value is None:
        return None
    if kind == "datetime":
        return int(value) // 1000
    if kind in ("string", "email", "reference"):
        return str(value).casefold()
    return value


def _equal(kind: str, stored: Any, literal: Literal) -> bool:
    if literal.kind == "null":
        return stored is None
    if stored is None:
        return False
    right = literal.value
    if kind in ("string", "email", "reference") and isinstance(right, str):
        right = right.casefold()
    return comparable(kind, stored) == right


def _comparison(name: str, kind: str, operator: str, literal: Literal) -> Predicate:
    if operator in ("!=", "<>"):
        return lambda r: not _equal(kind, r.get(name), literal)
    if operator == "=":
        return lambda r: _equal(kind, r.get(name), literal)
    right = literal.value  # Ids compare case-sensitively, text folded
    if kind in ("string", "email", "reference") and isinstance(right, str):
        right = right.casefold()

    def compare(record: Record) -> bool:
        stored = record.get(name)
        if stored is None or right is None:
            return False
        left = comparable(kind, stored)
        return {
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[operator]

    return compare
