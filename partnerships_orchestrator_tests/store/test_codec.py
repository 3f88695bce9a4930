"""Typed JSON for kept state: every type a step passes on comes back as it was; code never."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from partnerships_orchestrator.store import codec

ROUND_TRIPS = [
    pytest.param({"a": 1, "b": [1.5, "x", None, True]}, id="plain-json"),
    pytest.param(date(2026, 1, 31), id="date"),
    pytest.param(datetime(2026, 1, 31, 9, 30, tzinfo=UTC), id="aware-datetime"),
    pytest.param(datetime(2026, 1, 31, 9, 30), id="naive-datetime"),
    pytest.param(time(9, 30, 15), id="time"),
    pytest.param(Decimal("12.50"), id="decimal-keeps-its-scale"),
    pytest.param(("a", 1, (2, 3)), id="nested-tuple"),
    pytest.param({"$date": "not a tag", "n": 1}, id="dollar-key-among-others"),
    pytest.param({"$date": "2026-01-31"}, id="mapping-that-looks-like-a-tag"),
    pytest.param(
        {"rows": [{"amount": Decimal("3.10"), "closed": date(2026, 2, 1)}], "count": 1},
        id="query-rows",
    ),
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_value_comes_back_equal_and_of_the_same_type(value):
    decoded = codec.decode(codec.encode(value))

    assert decoded == value
    assert type(decoded) is type(value)


def test_decimal_is_exact_not_a_float():
    assert codec.decode(codec.encode(Decimal("0.1"))) + Decimal("0.2") == Decimal("0.3")


@pytest.mark.parametrize(
    "value, named",
    [
        (object(), "object"),
        ({"x": {1, 2}}, "set"),
        ({1: "a"}, "mapping key 1"),
    ],
)
def test_a_value_that_is_not_data_is_refused_with_its_type(value, named):
    with pytest.raises(codec.NotEncodable, match=named):
        codec.encode(value)


def test_an_unknown_tag_in_stored_state_is_refused():
    with pytest.raises(codec.NotEncodable, match=r"\$class"):
        codec.decode(b'{"$class": "os.system"}')
