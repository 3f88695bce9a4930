"""Compile a playbook into a Dagster job: one op per step, edges from `depends_on`.

Steps with no path between them run in parallel. A `for_each` step and every step that needs it,
until a `collect: true` step gathers them, run once per item inside one op (``fanout.py``).
Each node of the job's graph is named by its step id; op definitions stay namespaced by playbook,
since op names are global in a code location.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.executor import executor_for
from partnerships_orchestrator.compiler.fanout import RegionPlan, build_region_op
from partnerships_orchestrator.compiler.inputs import config_schema
from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.compiler.ops import (
    DEFAULT_POLICY,
    Edge,
    StepPlan,
    build_step_op,
)
from partnerships_orchestrator.connections import CHANNELS
from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.models import OnError, Playbook, QueryStep, StepBase


def step_policy(playbook: Playbook, step: StepBase) -> OnError:
    defaults = playbook.defaults.on_error if playbook.defaults else None
    return step.on_error or defaults or DEFAULT_POLICY


def step_timeout(playbook: Playbook, step: StepBase) -> float | None:
    return step.timeout_seconds or (
        playbook.defaults.timeout_seconds if playbook.defaults else None
    )


def _resource_keys(step: StepBase) -> frozenset[str]:
    keys = {RESOURCE_KEY}
    channel = getattr(step, "channel", None)
    if channel:
        keys.add(channel)
    if isinstance(step, QueryStep) and step.object is not None:
        keys.add(step.source)
    return frozenset(keys)


def plan_steps(playbook: Playbook, graph: StepGraph) -> dict[str, StepPlan]:
    """The run-time plan of every step: its policy, its inputs and whether it is mapped."""
    plans: dict[str, StepPlan] = {}
    for step in playbook.steps:
        fanout = graph.fanout_of(step.id)
        edges: list[Edge] = []
        region: tuple[str, ...] = ()
        if step.for_each:
            edges = [Edge(naming.input_name("item"), step.id, "item")]
        else:
            for dep in graph.deps(step.id):
                dep_fanout = graph.fanout_of(dep)
                how = "collected" if dep_fanout and not fanout else "plain"
                edges.append(Edge(naming.input_name(dep), dep, how))
            if step.collect:
                fanouts = {graph.fanout_of(d) for d in graph.deps(step.id)} - {None}
                for source in sorted(f for f in fanouts if f):
                    edges.append(Edge(naming.input_name(f"{source}_base"), source, "base"))
                region = tuple(
                    s
                    for s in graph.order
                    if s in graph.upstream(step.id) and graph.fanout_of(s) in fanouts
                )
                # every fanned-out step upstream is gathered, so each one's list is complete
                direct = set(graph.deps(step.id))
                edges += [
                    Edge(naming.input_name(s), s, "collected") for s in region if s not in direct
                ]
        plans[step.id] = StepPlan(
            playbook=playbook,
            step=step,
            policy=step_policy(playbook, step),
            timeout=step_timeout(playbook, step),
            mapped=fanout is not None,
            edges=tuple(edges),
            region=region,
            resource_keys=_resource_keys(step),
        )
    return plans


def _fanout_plan(playbook: Playbook, graph: StepGraph, step: StepBase) -> StepPlan:
    edges = tuple(Edge(naming.input_name(dep), dep) for dep in graph.deps(step.id))
    return StepPlan(
        playbook=playbook,
        step=step,
        policy=step_policy(playbook, step),
        timeout=None,
        mapped=False,
        edges=edges,
    )


def _regions(
    playbook: Playbook, graph: StepGraph, plans: Mapping[str, StepPlan]
) -> dict[str, RegionPlan]:
    """Each `for_each` step with the steps mapped under it, and what they need from outside."""
    regions: dict[str, RegionPlan] = {}
    for step in playbook.steps:
        if not step.for_each:
            continue
        members = tuple(plans[s] for s in graph.order if graph.fanout_of(s) == step.id)
        ids = {m.step.id for m in members}
        source = _fanout_plan(playbook, graph, step)
        inputs = {e.input: e for e in source.edges}
        for member in members:
            for edge in member.edges:
                if edge.how == "plain" and edge.step not in ids:
                    inputs.setdefault(edge.input, Edge(edge.input, edge.step))
        regions[step.id] = RegionPlan(source=source, members=members, inputs=tuple(inputs.values()))
    return regions


def _compose(
    playbook: Playbook, graph: StepGraph, plans: Mapping[str, StepPlan]
) -> dg.GraphDefinition:
    """Wire the ops with a composition function: one node per step, named by its id, and one
    node per fan-out region (named by its `for_each` step) that runs the region for every item."""
    regions = _regions(playbook, graph, plans)
    in_region = {m.step.id for r in regions.values() for m in r.members}
    ops = {
        sid: build_step_op(plan).alias(naming.node_name(sid))
        for sid, plan in plans.items()
        if sid not in in_region
    }
    region_ops = {
        sid: build_region_op(region).alias(naming.node_name(sid)) for sid, region in regions.items()
    }
    members = {sid: [m.step.id for m in region.members] for sid, region in regions.items()}

    def compose() -> None:
        done: dict[str, Any] = {}  # step id -> output handle (a list of item scopes in a region)
        bases: dict[str, Any] = {}
        pending = list(graph.order)
        while pending:
            progressed = False
            for sid in list(pending):
                fanout = graph.fanout_of(sid)
                if fanout and fanout != sid:
                    continue  # built with its region
                if not _needs(fanout if fanout else sid, members, graph).issubset(done):
                    continue
                if fanout == sid:
                    region = regions[sid]
                    outs = region_ops[sid](**{e.input: done[e.step] for e in region.inputs})
                    bases[sid] = getattr(outs, naming.REGION_SCOPE_OUTPUT)
                    for member in members[sid]:
                        done[member] = getattr(outs, naming.region_output_name(member))
                        pending.remove(member)
                else:
                    done[sid] = _invoke(ops[sid], plans[sid], done, bases)
                    pending.remove(sid)
                progressed = True
            if not progressed:
                raise dg.DagsterInvalidDefinitionError(
                    f"playbook `{playbook.id}`: cannot order steps {pending}"
                )

    return dg.graph(name=naming.job_name(playbook.id))(compose)


def _needs(sid: str, regions: Mapping[str, list[str]], graph: StepGraph) -> set[str]:
    """Steps outside ``sid``'s region that must be built before it."""
    members = set(regions.get(sid, [sid]))
    needed = {d for m in members for d in graph.deps(m)} - members
    return needed


def _invoke(
    op: Any,
    plan: StepPlan,
    done: Mapping[str, Any],
    bases: Mapping[str, Any],
) -> Any:
    kwargs = {}
    for edge in plan.edges:
        if edge.how == "base":
            kwargs[edge.input] = bases[edge.step]
        else:
            kwargs[edge.input] = done[edge.step]
    return op(**kwargs)


def build_job(
    playbook: Playbook,
    resources: Mapping[str, Any],
    *,
    source: str | None = None,
    logger_defs: Mapping[str, dg.LoggerDefinition] | None = None,
) -> dg.JobDefinition:
    """The Dagster job for one playbook, with its resources, executor, tags and inputs config."""
    graph = StepGraph.of(playbook)
    plans = plan_steps(playbook, graph)
    composed = _compose(playbook, graph, plans)
    op_names = [
        naming.node_name(s.id)
        for s in playbook.steps
        if s.for_each or graph.fanout_of(s.id) is None
    ]
    schema = config_schema(playbook)

    loggers: dict[str, Any] = {name: {} for name in logger_defs or {}}

    def to_ops(config: Mapping[str, Any]) -> dict[str, Any]:
        mapped: dict[str, Any] = {"ops": {name: {"config": dict(config)} for name in op_names}}
        return {**mapped, "loggers": loggers} if loggers else mapped

    executor = executor_for(playbook)
    needed = {k for plan in plans.values() for k in plan.resource_keys}
    _check_connections(playbook, plans, resources)
    return composed.to_job(
        name=naming.job_name(playbook.id),
        description=_description(playbook),
        tags=_tags(playbook),
        metadata={"playbook": playbook.id, **({"source": source} if source else {})},
        resource_defs={k: v for k, v in resources.items() if k in needed},
        config=dg.ConfigMapping(config_schema=schema, config_fn=to_ops),
        executor_def=executor,
        logger_defs=dict(logger_defs) if logger_defs else None,
    )


def _check_connections(
    playbook: Playbook, plans: Mapping[str, StepPlan], resources: Mapping[str, Any]
) -> None:
    """Every CRM a step reads must be configured (channels always are: the outbox)."""
    for step_id, plan in plans.items():
        for key in sorted(plan.resource_keys - set(resources) - {RESOURCE_KEY, *CHANNELS}):
            raise ConfigurationError(
                f"playbook `{playbook.id}`, step `{step_id}` reads from `{key}`, "
                "which no connections document configures",
                hint=f"add `{key}` to a `kind: connections` document",
            )


def _description(playbook: Playbook) -> str:
    title = playbook.name or playbook.id
    return f"{title}: {playbook.description}" if playbook.description else title


def _tags(playbook: Playbook) -> dict[str, str]:
    tags = {**playbook.tags, naming.PLAYBOOK_TAG: playbook.id}
    if playbook.owners:
        tags[naming.OWNERS_TAG] = ",".join(playbook.owners)
    if playbook.concurrency:
        tags[naming.max_runs_tag(playbook.concurrency.max_runs)] = playbook.id
    return tags
