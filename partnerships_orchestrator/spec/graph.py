"""The step graph of a playbook: order, parallel levels, ancestry and fan-out regions.

Pure Python over the model (no Jinja, no Dagster), so building it for every playbook is cheap.
It tolerates broken playbooks (unknown or repeated ids, cycles): the validator uses it to find
exactly those problems.

Fan-out follows Dagster's map / collect. A step with ``for_each`` is its own fan-out; a step that
depends on a mapped step is mapped under the same fan-out; a ``collect: true`` step is not mapped
and collects the fan-outs of the mapped steps it depends on.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from partnerships_orchestrator.spec.models import Playbook, StepBase

COLLECT_FIRST = "add a `collect: true` step first"


@dataclass(frozen=True)
class ShapeIssue:
    """A fan-out shape the engine cannot run, found at ``key`` of step ``step``."""

    step: str
    key: str
    message: str
    hint: str | None = None


class StepGraph:
    """Dependencies between the steps of one playbook."""

    def __init__(self, steps: Sequence[StepBase]) -> None:
        self.steps: dict[str, StepBase] = {}
        for step in steps:
            self.steps.setdefault(step.id, step)  # the first of repeated ids; reported elsewhere
        self.ids: list[str] = list(self.steps)
        self._position = {step_id: n for n, step_id in enumerate(self.ids)}
        self._deps = {
            step_id: tuple(dict.fromkeys(d for d in step.depends_on if d in self.steps))
            for step_id, step in self.steps.items()
        }
        self._dependents: dict[str, list[str]] = {step_id: [] for step_id in self.ids}
        for step_id in self.ids:
            for dep in self._deps[step_id]:
                self._dependents[dep].append(step_id)
        self._upstream: dict[str, frozenset[str]] = {}

    @classmethod
    def of(cls, playbook: Playbook) -> StepGraph:
        return cls(playbook.steps)

    def deps(self, step_id: str) -> tuple[str, ...]:
        """Known steps ``step_id`` depends on directly, in declaration order of `depends_on`."""
        return self._deps[step_id]

    def dependents(self, step_id: str) -> list[str]:
        """Steps that depend on ``step_id`` directly, in declaration order."""
        return self._dependents[step_id]

    def upstream(self, step_id: str) -> frozenset[str]:
        """Every step ``step_id`` depends on, directly or not."""
        cached = self._upstream.get(step_id)
        if cached is None:
            seen: set[str] = set()
            stack = list(self._deps[step_id])
            while stack:
                dep = stack.pop()
                if dep not in seen:
                    seen.add(dep)
                    stack.extend(self._deps[dep])
            cached = self._upstream[step_id] = frozenset(seen)
        return cached

    @cached_property
    def order(self) -> list[str]:
        """Topological order, stable by declaration; steps on or after a cycle are left out."""
        waiting = {step_id: len(self._deps[step_id]) for step_id in self.ids}
        ready = [self._position[s] for s, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            step_id = self.ids[heapq.heappop(ready)]
            order.append(step_id)
            for dependent in self._dependents[step_id]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    heapq.heappush(ready, self._position[dependent])
        return order

    @cached_property
    def levels(self) -> list[list[str]]:
        """Steps grouped by depth: the steps of one level never depend on each other."""
        depth: dict[str, int] = {}
        for step_id in self.order:
            depth[step_id] = 1 + max((depth[d] for d in self._deps[step_id]), default=-1)
        levels: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for step_id in self.ids:
            if step_id in depth:
                levels[depth[step_id]].append(step_id)
        return levels

    def find_cycle(self) -> list[str] | None:
        """A dependency cycle as ``[a, b, c, a]`` (each step depends on the next), or None."""
        if len(self.order) == len(self.ids):
            return None
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        for start in self.ids:
            if start not in state:
                cycle = self._cycle_from(start, state)
                if cycle:
                    return cycle
        return None

    def _cycle_from(self, start: str, state: dict[str, int]) -> list[str] | None:
        path: list[str] = [start]
        iterators = [iter(self._deps[start])]
        state[start] = 1
        while iterators:
            dep = next(iterators[-1], None)
            if dep is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                iterators.append(iter(self._deps[dep]))
        return None

    # ------------------------------------------------------------ fan-out

    @cached_property
    def _fanouts(self) -> dict[str, str | None]:
        fanout: dict[str, str | None] = {}
        for step_id in self.order:
            step = self.steps[step_id]
            if step.for_each is not None:
                fanout[step_id] = step_id
            elif step.collect:
                fanout[step_id] = None
            else:
                fanout[step_id] = next(iter(self.upstream_fanouts(step_id, fanout)), None)
        return fanout

    def upstream_fanouts(
        self, step_id: str, known: dict[str, str | None] | None = None
    ) -> list[str]:
        """The distinct fan-outs of the mapped steps ``step_id`` depends on directly."""
        fanout = self._fanouts if known is None else known
        found = (fanout.get(dep) for dep in self._deps[step_id])
        return list(dict.fromkeys(f for f in found if f is not None))

    def fanout_of(self, step_id: str) -> str | None:
        """The ``for_each`` step whose items ``step_id`` runs per, or None when it runs once."""
        return self._fanouts.get(step_id)

    def collects(self, step_id: str) -> list[str]:
        """The fan-outs a ``collect: true`` step gathers (empty for other steps)."""
        return self.upstream_fanouts(step_id) if self.steps[step_id].collect else []

    def shape_issues(self) -> list[ShapeIssue]:
        """Fan-out shapes that cannot run, in step order."""
        issues: list[ShapeIssue] = []
        for step_id in self.order:
            issues.extend(self._shape_issues_of(step_id))
        return issues

    def _shape_issues_of(self, step_id: str) -> list[ShapeIssue]:
        step, upstream = self.steps[step_id], self.upstream_fanouts(step_id)
        if step.for_each is not None and step.collect:
            return [
                ShapeIssue(
                    step_id,
                    "collect",
                    "a step cannot both fan out (`for_each`) and `collect`",
                    "split it in two: a `collect: true` step, then the `for_each` step",
                )
            ]
        if step.for_each is not None and upstream:
            return [
                ShapeIssue(
                    step_id,
                    "for_each",
                    f"nested fan-out: `{step_id}` already runs once per item of `{upstream[0]}`",
                    COLLECT_FIRST,
                )
            ]
        if step.collect and not upstream:
            return [
                ShapeIssue(
                    step_id,
                    "collect",
                    f"`collect: true` but `{step_id}` depends on no step that fans out",
                    "remove `collect`, or depend on a `for_each` step (or a step mapped under it)",
                )
            ]
        if len(upstream) > 1 and not step.collect and step.for_each is None:
            return [
                ShapeIssue(
                    step_id,
                    "depends_on",
                    f"`{step_id}` depends on steps of different fan-outs: "
                    + ", ".join(f"`{f}`" for f in upstream),
                    "collect all but one of them first with a `collect: true` step",
                )
            ]
        return self._collected_own_fanout(step_id)

    def _collected_own_fanout(self, step_id: str) -> list[ShapeIssue]:
        fanout = self.fanout_of(step_id)
        if fanout is None or fanout == step_id:
            return []
        for ancestor in sorted(self.upstream(step_id), key=self._position.__getitem__):
            if fanout in self.collects(ancestor):
                return [
                    ShapeIssue(
                        step_id,
                        "depends_on",
                        f"`{step_id}` runs once per item of `{fanout}` but also needs "
                        f"`{ancestor}`, which collects that same fan-out",
                        f"make `{step_id}` a `collect: true` step, or drop the dependency "
                        f"on `{ancestor}`",
                    )
                ]
        return []
