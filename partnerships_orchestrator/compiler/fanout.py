"""A fan-out region as one op: a `for_each` step and the steps mapped under it, for every item.

Why not one Dagster step per item: Dagster's per-step cost, not the vendor, then sets the pace of
a bulk send (200 e-mails took 17.8 s against a 100/s connection), and Dagster's re-execution
from failure skips mapped steps that never ran (dagster-io/dagster #30077, #30248, #20925,
#30972), so recipients were silently never sent anything. One op per region fixes both:

- items run in chunks of :data:`CHUNK_SIZE`; each step of the region runs over a chunk's items
  in a pool of :data:`WORKERS` threads, in the region's step order, so per item the language's
  rules hold as before: `when`, `item`, `steps.<id>.output` of that item, error policies
  (retries run in the op, per item), dead letters per item, skip markers left out of `collect`;
- a `communicate` step sends the chunk's messages through the delivery service together
  (``dispatch``): the provider's batch API where it has one, otherwise as many requests at once
  as keep the connection's rate (``dispatch.in_flight``), every message with its own ledger row;
- what each step gave for each item is kept (``item_results``), and every delivery is in the
  ledger, so when Dagster re-executes the op from failure it picks up where the run stopped:
  finished items are not run (or posted, or sent) again, the rest are;
- progress: a log line per chunk, and output metadata with the counts per step.

The op outputs the fan-out's scope and, per step of the region, the list of per-item scopes in
item order: exactly what a `collect: true` step gathered from the mapped steps before.
"""

from __future__ import annotations

import contextvars
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster import OpExecutionContext

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.compiler.ops import (
    Edge,
    StepPlan,
    _check_not_aborted,
    _incoming_scope,
    _mapping_key,
    _run_info,
    handle_failure,
    output_scope,
    retry_policy,
    run_step,
    skipped_by_when,
    step_context,
)
from partnerships_orchestrator.compiler.scope import SKIPPED_KEY, Scope, merge, public, with_item
from partnerships_orchestrator.compiler.step_process import end_with_run_worker
from partnerships_orchestrator.dispatch import Delivery, Outcome
from partnerships_orchestrator.expressions import evaluate
from partnerships_orchestrator.spec.graph import StepGraph
from partnerships_orchestrator.spec.models import CommunicateStep, OnError, Playbook
from partnerships_orchestrator.steps import communicate
from partnerships_orchestrator.steps.context import SKIPPED
from partnerships_orchestrator.store import codec
from partnerships_orchestrator.store.jsonable import jsonable

CHUNK_SIZE = 1000  # items per chunk: one progress line each, and SendGrid's batch size
STREAM_SIZE = 250  # a `communicate` step's items rendered before their messages start to leave
WORKERS = 8  # items of a chunk at once for steps other than `communicate`


@dataclass(frozen=True)
class RegionPlan:
    """A `for_each` step, the steps mapped under it (in order, itself first) and their inputs."""

    source: StepPlan  # the fan-out's incoming edges (the `for_each` step's dependencies)
    members: tuple[StepPlan, ...]
    inputs: tuple[Edge, ...]  # every step outside the region that a member needs

    @property
    def fanout(self) -> StepPlan:
        return self.members[0]

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(m.step.id for m in self.members)


def build_region_op(region: RegionPlan) -> dg.OpDefinition:
    """The op that runs the region for every item (module docstring)."""
    fanout = region.fanout
    outs = {naming.REGION_SCOPE_OUTPUT: dg.Out(dg.Any)}
    outs |= {naming.region_output_name(m.step.id): dg.Out(dg.Any) for m in region.members}
    keys = set().union(*(m.resource_keys for m in region.members))
    pools = [m.pool for m in region.members if m.pool]
    steps = ", ".join(f"`{m.step.id}`" for m in region.members)

    @dg.op(
        name=naming.region_op_name(fanout.playbook.id, fanout.step.id),
        description=f"for each {fanout.step.for_each}: {steps}, item by item",
        ins={edge.input: dg.In(dg.Any) for edge in region.inputs},
        out=outs,
        config_schema=dg.Permissive(),
        required_resource_keys=keys | {RESOURCE_KEY},
        tags={"kind": "for_each", naming.PLAYBOOK_TAG: fanout.playbook.id},
        pool=pools[0] if pools else None,
    )
    def _region_op(context, **arrived: Any) -> Iterator[dg.Output]:
        end_with_run_worker(context)
        yield from _run_region(region, context, arrived)

    return _region_op


def _items(region: RegionPlan, context: OpExecutionContext, scope: Scope) -> list[Any]:
    step = region.fanout.step
    items = evaluate(step.for_each or "[]", public(scope))
    if not isinstance(items, list | tuple):
        raise dg.Failure(
            f"`for_each` of step `{step.id}` must yield a list, got {type(items).__name__}",
            allow_retries=False,
        )
    return list(items)


class _Tally:
    """Counts per step of the region, for progress lines and output metadata."""

    def __init__(self, members: Sequence[StepPlan]) -> None:
        self.counts: dict[str, Counter[str]] = {m.step.id: Counter() for m in members}
        self.failures: list[str] = []

    def add(self, step_id: str, outcome: str, n: int = 1) -> None:
        self.counts[step_id][outcome] += n

    def line(self, step_id: str) -> str:
        counts = self.counts[step_id]
        return ", ".join(f"{n:,} {what}" for what, n in sorted(counts.items())) or "nothing yet"


def _run_region(
    region: RegionPlan, context: OpExecutionContext, arrived: Mapping[str, Any]
) -> Iterator[dg.Output]:
    fanout = region.fanout
    base = _incoming_scope(region.source, context, arrived)
    _check_not_aborted(context, fanout)
    items = _items(region, context, base)
    total = len(items)
    context.log.info(f"`{fanout.step.id}` fans out over {total:,} item(s)")
    tally = _Tally(region.members)
    gathered: dict[str, list[Scope]] = {m.step.id: [] for m in region.members}
    started = time.monotonic()
    for start in range(0, total, CHUNK_SIZE):
        _check_not_aborted(context, fanout)
        chunk = {
            i: with_item(base, items[i], i) for i in range(start, min(total, start + CHUNK_SIZE))
        }
        keys = {i: _mapping_key(i, items[i]) for i in chunk}
        per_step = _run_chunk(region, context, arrived, chunk, keys, tally)
        for step_id, scopes in per_step.items():
            gathered[step_id].extend(scopes[i] for i in sorted(scopes))
        done = min(total, start + CHUNK_SIZE)
        rate = done / max(time.monotonic() - started, 1e-9)
        lines = "; ".join(f"`{m.step.id}`: {tally.line(m.step.id)}" for m in region.members)
        context.log.info(f"`{fanout.step.id}`: {done:,}/{total:,} items ({rate:,.0f}/s); {lines}")
        if tally.failures and _aborted(region, context):
            break
    if tally.failures:
        shown = "; ".join(tally.failures[:5])
        more = f" (and {len(tally.failures) - 5} more)" if len(tally.failures) > 5 else ""
        raise dg.Failure(
            f"{len(tally.failures)} item(s) of `{fanout.step.id}` failed: {shown}{more}",
            allow_retries=False,
            metadata={"items": total, "failed": len(tally.failures)},
        )
    yield dg.Output(base, naming.REGION_SCOPE_OUTPUT, metadata={"items": total})
    for member in region.members:
        counts = {what: int(n) for what, n in tally.counts[member.step.id].items()}
        yield dg.Output(
            gathered[member.step.id],
            naming.region_output_name(member.step.id),
            metadata={"items": total, **counts},
        )


def _aborted(region: RegionPlan, context: OpExecutionContext) -> bool:
    run = context.instance.get_run_by_id(context.run_id)
    return bool(run and run.tags.get(naming.ABORT_TAG))


def _run_chunk(
    region: RegionPlan,
    context: OpExecutionContext,
    arrived: Mapping[str, Any],
    chunk: Mapping[int, Scope],
    keys: Mapping[int, str],
    tally: _Tally,
) -> dict[str, dict[int, Scope]]:
    """Every step of the region over one chunk of items; the scopes each step gave per item."""
    per_step: dict[str, dict[int, Scope]] = {}
    alive = set(chunk)
    for plan in region.members:
        incoming = {i: _member_scope(plan, region, arrived, chunk[i], per_step, i) for i in alive}
        produced, failed = _run_member(plan, context, incoming, keys, tally)
        per_step[plan.step.id] = produced
        for i, message in sorted(failed.items()):
            tally.failures.append(f"{plan.step.id}[{keys[i]}]: {message}")
        alive -= set(failed)
    return per_step


def _member_scope(
    plan: StepPlan,
    region: RegionPlan,
    arrived: Mapping[str, Any],
    item_scope: Scope,
    per_step: Mapping[str, Mapping[int, Scope]],
    index: int,
) -> Scope:
    scopes = []
    for edge in plan.edges:
        if edge.how == "item":
            scopes.append(item_scope)
        elif edge.step in region.ids:
            scopes.append(per_step[edge.step][index])
        else:
            scopes.append(arrived[edge.input])
    return merge(scopes)


def _run_member(
    plan: StepPlan,
    context: OpExecutionContext,
    incoming: Mapping[int, Scope],
    keys: Mapping[int, str],
    tally: _Tally,
) -> tuple[dict[int, Scope], dict[int, str]]:
    """One step over the chunk's items: what earlier runs kept, then the rest (kept in turn)."""
    step_id = plan.step.id
    state = getattr(context.resources, RESOURCE_KEY).state
    root = _run_info(context, plan.playbook).root_id
    produced: dict[int, Scope] = {}
    todo: dict[int, Scope] = {}
    for i, scope in incoming.items():
        if scope.get(SKIPPED_KEY):  # an earlier step skipped this item: pass the marker along
            produced[i] = scope
            tally.add(step_id, "skipped")
        else:
            todo[i] = scope
    kept = state.item_results(root, step_id, [keys[i] for i in todo])
    for i in [i for i in todo if keys[i] in kept]:
        produced[i] = _restore(plan, todo.pop(i), kept[keys[i]])
        tally.add(step_id, "done before")
    if isinstance(plan.step, CommunicateStep):
        fresh, failed = _communicate(plan, context, todo, keys, tally)
    else:
        # a webhook posted for an item is kept at once, so a crash does not post it again;
        # the ledger does that for messages, and the other steps are safe to run again
        def keep(i: int, scope: Scope) -> None:
            state.save_item_results(root, step_id, {keys[i]: _kept(plan, scope)})

        at_once = keep if plan.step.type == "webhook" else None
        fresh, failed = _each_item(plan, context, todo, keys, tally, at_once)
    state.save_item_results(root, step_id, {keys[i]: _kept(plan, s) for i, s in fresh.items()})
    return {**produced, **fresh}, failed


def _kept(plan: StepPlan, scope: Scope) -> bytes:
    """What to keep of a step's result for one item: its output, or that it was skipped."""
    if scope.get(SKIPPED_KEY) == plan.step.id:
        return codec.encode(["skipped", None])
    output = scope["steps"][plan.step.id]["output"]
    try:
        return codec.encode(["output", output])
    except codec.NotEncodable:  # kept as plain JSON (an odd type becomes its text)
        return codec.encode(["output", jsonable(output)])


def _restore(plan: StepPlan, incoming: Scope, kept: bytes) -> Scope:
    kind, output = codec.decode(kept)
    result = output_scope(plan, incoming, SKIPPED if kind == "skipped" else output)
    assert result is not None  # nosec B101 # invariant for mypy: a mapped step always passes a scope on
    return result


def _quiet(log: Any) -> Any:
    """The op's log without per-item info lines (a chunk's progress line says it all)."""

    class _Quiet:
        def info(self, *_: Any, **__: Any) -> None:
            pass

        debug = info

        def __getattr__(self, name: str) -> Any:
            return getattr(log, name)

    return _Quiet()


def _each_item(
    plan: StepPlan,
    context: OpExecutionContext,
    todo: Mapping[int, Scope],
    keys: Mapping[int, str],
    tally: _Tally,
    keep: Callable[[int, Scope], None] | None = None,
) -> tuple[dict[int, Scope], dict[int, str]]:
    """Run the step for each item, :data:`WORKERS` at once, retrying per its policy (``keep``
    is told each item's result as soon as it is there)."""
    log = _quiet(context.log)

    def one(i: int) -> tuple[int, Scope | None, str | None]:
        attempt = 1
        while True:
            try:
                scope = run_step(
                    plan, context, todo[i], mapping_key=keys[i], attempt=attempt, log=log
                )
                if keep is not None and scope is not None:
                    keep(i, scope)
                return i, scope, None
            except dg.Failure as failure:
                if failure.allow_retries is False or attempt >= plan.policy.max_attempts:
                    return i, None, failure.description or "failed"
                time.sleep(retry_delay(plan.policy, attempt))
                attempt += 1

    produced: dict[int, Scope] = {}
    failed: dict[int, str] = {}
    with ThreadPoolExecutor(WORKERS, thread_name_prefix=f"item-{plan.step.id}") as pool:
        runs = [pool.submit(contextvars.copy_context().run, one, i) for i in sorted(todo)]
        for run in runs:
            i, scope, error = run.result()
            if scope is None:
                failed[i] = error or "failed"
                tally.add(plan.step.id, "failed")
            else:
                produced[i] = scope
                tally.add(plan.step.id, "skipped" if scope.get(SKIPPED_KEY) else "done")
    return produced, failed


def _communicate(
    plan: StepPlan,
    context: OpExecutionContext,
    todo: Mapping[int, Scope],
    keys: Mapping[int, str],
    tally: _Tally,
) -> tuple[dict[int, Scope], dict[int, str]]:
    """The chunk's messages, rendered per item, sent together; policies applied per item."""
    step = plan.step
    assert isinstance(step, CommunicateStep)  # nosec B101 # invariant for mypy: only communicate steps come here
    log = _quiet(context.log)
    produced: dict[int, Scope] = {}
    failed: dict[int, str] = {}
    pending, attempt = sorted(todo), 1
    while pending:
        errors: dict[int, tuple[Any, Exception]] = {}
        sends = _Sends(plan, attempt)
        try:
            for start in range(0, len(pending), STREAM_SIZE):
                for i in pending[start : start + STREAM_SIZE]:
                    ctx = step_context(plan, context, todo[i], mapping_key=keys[i], log=log)
                    try:
                        if skipped_by_when(plan, ctx):
                            produced[i] = _skip(plan, todo[i], tally)
                        else:
                            sends.add(i, ctx)
                    except Exception as exc:  # every failure goes through the step's policy
                        errors[i] = (ctx, exc)
                sends.flush(unless_shared=True)  # what is ready leaves while the rest renders
            sends.flush()
            for i, ctx, outcomes in sends.outcomes():
                try:
                    receipts = communicate.receipts(outcomes)
                except Exception as exc:  # noqa: BLE001 - through the error policy below
                    errors[i] = (ctx, exc)
                    continue
                for receipt in receipts:
                    tally.add(step.id, str(receipt.get("status", "sent")))
                result = output_scope(plan, todo[i], receipts)
                assert result is not None  # nosec B101 # invariant for mypy: a mapped step always passes a scope on
                produced[i] = result
        finally:
            sends.close()
        pending = []
        for i, (ctx, error) in sorted(errors.items()):
            try:
                handle_failure(plan, context, ctx, error, attempt=attempt)
                produced[i] = _skip(plan, todo[i], tally)
            except dg.Failure as failure:
                if failure.allow_retries is False:
                    failed[i] = failure.description or "failed"
                    tally.add(step.id, "failed")
                else:
                    pending.append(i)
        if pending:
            time.sleep(retry_delay(plan.policy, attempt))
            attempt += 1
    return produced, failed


class _Sends:
    """A chunk's messages on their way: rendered items are handed to the delivery service in
    parts (in a background thread, so the next items render meanwhile), unless they all share
    their content, in which case they wait for the chunk's end and go as one batch."""

    def __init__(self, plan: StepPlan, attempt: int) -> None:
        self.plan, self.attempt = plan, attempt
        self.step = plan.step
        assert isinstance(self.step, CommunicateStep)  # nosec B101 # invariant for mypy
        self.provider: Any = None
        self.dispatcher: Any = None
        self.ready: dict[int, tuple[Any, list[Delivery]]] = {}
        self.parts: list[tuple[dict[int, tuple[Any, list[Delivery]]], Future[Any]]] = []
        self.sender = ThreadPoolExecutor(1, thread_name_prefix=f"send-{self.step.id}")

    def add(self, index: int, ctx: Any) -> None:
        """Render one item's messages (raises what rendering raises)."""
        step = self.step
        assert isinstance(step, CommunicateStep)  # nosec B101 # invariant for mypy
        if self.provider is None:
            self.provider = communicate.provider_for(step, ctx)
            if self.attempt == 1:
                communicate.announce(step, ctx, self.provider)
            self.dispatcher = communicate.dispatcher(step, ctx, self.provider)
        self.ready[index] = (ctx, communicate.prepare(step, ctx, self.provider))

    def flush(self, *, unless_shared: bool = False) -> None:
        if not self.ready or (unless_shared and self._shared()):
            return
        part, self.ready = self.ready, {}
        flat = [d for _, deliveries in part.values() for d in deliveries]
        run = contextvars.copy_context().run
        deliver = self.dispatcher.deliver
        self.parts.append(
            (part, self.sender.submit(run, deliver, flat, workers=None, timeout=self.plan.timeout))
        )

    def _shared(self) -> bool:
        contents = {
            (d.message.subject, d.message.body, d.message.attachments)
            for _, deliveries in self.ready.values()
            for d in deliveries
        }
        return len(contents) <= 1

    def outcomes(self) -> Iterator[tuple[int, Any, list[Outcome]]]:
        """Each item's outcomes, in the order its messages were handed in."""
        for part, future in self.parts:
            outcomes = iter(future.result())
            for index, (ctx, deliveries) in part.items():
                yield index, ctx, [next(outcomes) for _ in deliveries]

    def close(self) -> None:
        self.sender.shutdown(wait=True, cancel_futures=True)


def _skip(plan: StepPlan, scope: Scope, tally: _Tally) -> Scope:
    tally.add(plan.step.id, "skipped")
    result = output_scope(plan, scope, SKIPPED)
    assert result is not None  # nosec B101 # invariant for mypy: a mapped step always passes a scope on
    return result


def retry_delay(policy: OnError, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: what Dagster's RetryPolicy waits for a step."""
    dagster_policy = retry_policy(policy)
    return float(dagster_policy.calculate_delay(attempt)) if dagster_policy else 0.0


def item_statuses(playbook: Playbook, result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """``{"<step>[<item key>]": "succeeded" | "skipped"}`` for every step run per item in a
    finished in-process run (regions that failed gave no outputs and are left out)."""
    graph = StepGraph.of(playbook)
    statuses: dict[str, str] = {}
    for step in playbook.steps:
        fanout = graph.fanout_of(step.id)
        if fanout is None:
            continue
        try:
            scopes = result.output_for_node(
                naming.node_name(fanout), naming.region_output_name(step.id)
            )
        except dg.DagsterInvariantViolationError:  # the region failed or never ran
            continue
        for scope in scopes:
            key = _mapping_key(scope.get("item_index", 0), scope.get("item"))
            statuses[f"{step.id}[{key}]"] = "skipped" if scope.get(SKIPPED_KEY) else "succeeded"
    return statuses
