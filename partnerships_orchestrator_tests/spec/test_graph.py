"""The step graph: order, parallel levels, ancestry, cycles and fan-out regions."""

from __future__ import annotations

from typing import Any

import pytest

from partnerships_orchestrator.spec.graph import COLLECT_FIRST, StepGraph
from partnerships_orchestrator.spec.models import Playbook


def graph(*steps: dict[str, Any]) -> StepGraph:
    """A graph of evaluate steps; each dict gives `id` and any step keys."""
    full = [{"type": "evaluate", "expression": "1", **step} for step in steps]
    return StepGraph.of(Playbook.model_validate({"id": "g", "steps": full}))


def s(step_id: str, *deps: str, **keys: Any) -> dict[str, Any]:
    return {"id": step_id, "depends_on": list(deps), **keys}


ONBOARDING = (
    s("new_partners"),
    s("scored", "new_partners", for_each="steps.new_partners.output.rows"),
    s("welcome", "scored"),
    s("send_welcome", "welcome"),
    s("notify", "send_welcome", collect=True),
)


def test_order_is_topological_and_stable_by_declaration() -> None:
    g = graph(s("c", "a"), s("b"), s("a"), s("d", "c", "b"))
    assert g.order == ["b", "a", "c", "d"]


def test_levels_group_steps_with_no_path_between_them() -> None:
    g = graph(s("fetch"), s("left", "fetch"), s("right", "fetch"), s("join", "left", "right"))
    assert g.levels == [["fetch"], ["left", "right"], ["join"]]


def test_deps_dependents_and_upstream() -> None:
    g = graph(s("a"), s("b", "a"), s("c", "b", "b"), s("d", "a", "c"))
    assert g.deps("c") == ("b",)
    assert g.dependents("a") == ["b", "d"]
    assert g.upstream("d") == {"a", "b", "c"}
    assert g.upstream("a") == frozenset()


def test_unknown_dependencies_are_ignored_by_the_graph() -> None:
    g = graph(s("a", "nope"), s("b", "a"))
    assert g.deps("a") == ()
    assert g.order == ["a", "b"]


@pytest.mark.parametrize(
    ("steps", "cycle"),
    [
        ((s("a", "c"), s("b", "a"), s("c", "b")), ["a", "c", "b", "a"]),
        ((s("x"), s("a", "x", "a")), ["a", "a"]),
        ((s("x"), s("a", "b"), s("b", "a"), s("c", "b")), ["a", "b", "a"]),
        ((s("a"), s("b", "a"), s("c", "a", "b")), None),
    ],
    ids=["three-step cycle", "self dependency", "two-step cycle with a tail", "diamond, no cycle"],
)
def test_find_cycle_names_each_step_once_and_closes_the_loop(
    steps: tuple[dict[str, Any], ...], cycle: list[str] | None
) -> None:
    assert graph(*steps).find_cycle() == cycle


def test_cycles_leave_their_steps_out_of_the_order() -> None:
    g = graph(s("a"), s("b", "a", "c"), s("c", "b"), s("d", "a"))
    assert g.order == ["a", "d"]


def test_fanout_regions_follow_map_and_collect() -> None:
    g = graph(*ONBOARDING)
    assert [g.fanout_of(step) for step in g.ids] == [None, "scored", "scored", "scored", None]
    assert g.collects("notify") == ["scored"]
    assert g.collects("welcome") == []
    assert g.shape_issues() == []


def test_a_step_after_a_collect_runs_once_and_may_fan_out_again() -> None:
    g = graph(
        *ONBOARDING,
        s("again", "notify", for_each="steps.notify.output"),
        s("after", "again"),
    )
    assert g.fanout_of("again") == "again"
    assert g.fanout_of("after") == "again"
    assert g.shape_issues() == []


@pytest.mark.parametrize(
    ("steps", "step", "key", "message", "hint"),
    [
        (
            (s("a"), s("m", "a", for_each="x"), s("n", "m", for_each="y")),
            "n",
            "for_each",
            "nested fan-out",
            COLLECT_FIRST,
        ),
        (
            (s("a"), s("c", "a", collect=True)),
            "c",
            "collect",
            "depends on no step that fans out",
            None,
        ),
        (
            (s("a", for_each="x"), s("b", for_each="y"), s("j", "a", "b")),
            "j",
            "depends_on",
            "different fan-outs: `a`, `b`",
            None,
        ),
        (
            (s("m", for_each="x"), s("c", "m", collect=True), s("k", "m", "c")),
            "k",
            "depends_on",
            "`c`, which collects that same fan-out",
            None,
        ),
        (
            (s("a"), s("m", "a", for_each="x", collect=True)),
            "m",
            "collect",
            "cannot both fan out",
            None,
        ),
    ],
    ids=["nested fan-out", "collect of nothing", "two fan-outs", "own collect", "both"],
)
def test_shape_issues_name_the_step_and_key(
    steps: tuple[dict[str, Any], ...], step: str, key: str, message: str, hint: str | None
) -> None:
    issues = graph(*steps).shape_issues()
    assert [(i.step, i.key) for i in issues] == [(step, key)]
    assert message in issues[0].message
    if hint:
        assert issues[0].hint == hint


def test_repeated_ids_keep_the_first_step() -> None:
    g = graph(s("a", expression="1"), s("a", expression="2"))
    assert g.ids == ["a"]
    assert getattr(g.steps["a"], "expression", None) == "1"
