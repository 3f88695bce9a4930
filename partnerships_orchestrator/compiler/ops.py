"""Playbook steps as Dagster ops: `when`, error policies, timeouts, dead letters and aborts.

Each step becomes one op whose output is the step's scope (see ``scope.py``); the steps of a
fan-out run per item inside one op (``fanout.py``) through the same :func:`run_step`. A step that
is skipped (``when`` false, or ``on_error: skip``) yields no output, so Dagster skips what needs
it; inside a fan-out the item carries a skip marker, and the collect step simply sees fewer items.
"""

import contextvars
import json
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster import OpExecutionContext

from partnerships_orchestrator.compiler import naming
from partnerships_orchestrator.compiler.inputs import typed_inputs
from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.compiler.scope import (
    SKIPPED_KEY,
    Scope,
    collect,
    merge,
    public,
    root_scope,
    with_output,
)
from partnerships_orchestrator.compiler.step_process import end_with_run_worker
from partnerships_orchestrator.connections import CHANNELS, CRMS
from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN, is_unknown_outcome
from partnerships_orchestrator.connectors.departure import Cancellation, cancellable
from partnerships_orchestrator.errors import (
    ExpressionError,
    InputError,
    PartnershipsError,
    StepTimeout,
    WebhookBlocked,
)
from partnerships_orchestrator.expressions import evaluate
from partnerships_orchestrator.spec.models import OnError, Playbook, StepBase, WebhookTrigger
from partnerships_orchestrator.steps import runner_for
from partnerships_orchestrator.steps.context import SKIPPED, RunInfo, StepContext, StepResources
from partnerships_orchestrator.store import codec
from partnerships_orchestrator.store.jsonable import jsonable

DEFAULT_POLICY = OnError(action="retry", max_attempts=1)
NOT_RETRYABLE = (ExpressionError, InputError, WebhookBlocked)


@dataclass(frozen=True)
class Edge:
    """One op input: the step it comes from and how (``plain``, ``collected`` or ``base``)."""

    input: str
    step: str
    how: str = "plain"


@dataclass(frozen=True)
class StepPlan:
    """What one step's op needs to know at run time, fixed at compile time."""

    playbook: Playbook
    step: StepBase
    policy: OnError
    timeout: float | None
    mapped: bool
    edges: tuple[Edge, ...]
    region: tuple[str, ...] = ()  # fanned-out steps upstream of a collect step
    resource_keys: frozenset[str] = frozenset({RESOURCE_KEY})

    @property
    def op_name(self) -> str:
        return naming.op_name(self.playbook.id, self.step.id)

    @property
    def abortable(self) -> bool:
        """Whether any step of the playbook may abort the run (then each step checks first)."""
        defaults = self.playbook.defaults.on_error if self.playbook.defaults else None
        policies = [s.on_error or defaults for s in self.playbook.steps]
        return any(p is not None and p.action == "abort" for p in policies)

    @property
    def pool(self) -> str | None:
        """The Dagster concurrency pool of the connection this step calls, if any."""
        connections = sorted(self.resource_keys - {RESOURCE_KEY})
        return connections[0] if connections else None


def retry_policy(policy: OnError) -> dg.RetryPolicy | None:
    """Dagster's RetryPolicy for an ``on_error: retry`` with more than one attempt."""
    if policy.action != "retry" or policy.max_attempts <= 1:
        return None
    backoff = {
        "constant": None,
        "linear": dg.Backoff.LINEAR,
        "exponential": dg.Backoff.EXPONENTIAL,
    }[policy.backoff]
    jitter = {"none": None, "full": dg.Jitter.FULL, "plus_minus": dg.Jitter.PLUS_MINUS}[
        policy.jitter
    ]
    return dg.RetryPolicy(
        max_retries=policy.max_attempts - 1,
        delay=policy.delay_seconds,
        backoff=backoff,
        jitter=jitter,
    )


def _describe(plan: StepPlan) -> str:
    step = plan.step
    parts = [step.description or step.name or f"{step.type} step `{step.id}`"]
    if step.when:
        parts.append(f"when: {step.when}")
    if step.for_each:
        parts.append(f"for each: {step.for_each}")
    if step.collect:
        parts.append("collects the fan-out")
    parts.append(f"on error: {plan.policy.action}")
    return " | ".join(parts)


def build_step_op(plan: StepPlan) -> dg.OpDefinition:
    """The op that runs one step."""
    ins = {edge.input: dg.In(dg.Any) for edge in plan.edges}

    @dg.op(
        name=plan.op_name,
        description=_describe(plan),
        ins=ins,
        out=dg.Out(dg.Any, is_required=False),
        config_schema=dg.Permissive(),
        required_resource_keys=set(plan.resource_keys),
        retry_policy=retry_policy(plan.policy),
        tags={"kind": plan.step.type, naming.PLAYBOOK_TAG: plan.playbook.id},
        pool=plan.pool,
    )
    def _step_op(context, **arrived: Any) -> Iterator[dg.Output]:
        end_with_run_worker(context)
        yield from _execute(plan, context, arrived)

    return _step_op


def _mapping_key(index: int, item: Any) -> str:
    """A readable, deterministic key per item: its position, plus its `id` when it has one."""
    ident = item.get("id") if isinstance(item, Mapping) else None
    return naming.safe(f"{index}_{ident}" if ident is not None else str(index))[:100]


# ---------------------------------------------------------------- run time


_RUN_INFO: dict[str, RunInfo] = {}


def _run_info(context: OpExecutionContext, playbook: Playbook) -> RunInfo:
    """The run's identity and start time (one lookup per run and process)."""
    cached = _RUN_INFO.get(context.run_id)
    if cached is None:
        cached = _RUN_INFO[context.run_id] = _lookup_run_info(context, playbook)
        while len(_RUN_INFO) > 256:  # a code server runs many runs; keep the newest
            _RUN_INFO.pop(next(iter(_RUN_INFO)))
    return cached


def _lookup_run_info(context: OpExecutionContext, playbook: Playbook) -> RunInfo:
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.create_timestamp if record else datetime.now(UTC)
    run = context.dagster_run
    return RunInfo(
        id=context.run_id,
        root_id=run.root_run_id or context.run_id,
        playbook=playbook.id,
        started_at=started.astimezone(UTC),
    )


def _trigger(context: OpExecutionContext) -> dict[str, Any]:
    tags = context.dagster_run.tags
    if naming.TRIGGER_TAG in tags:
        return json.loads(tags[naming.TRIGGER_TAG])
    if "dagster/scheduled_execution_time" in tags:
        return {
            "type": "cron",
            "scheduled_time": datetime.fromisoformat(tags["dagster/scheduled_execution_time"]),
        }
    return {"type": "manual"}


def _incoming_scope(
    plan: StepPlan, context: OpExecutionContext, arrived: Mapping[str, Any]
) -> Scope:
    plain = [arrived[e.input] for e in plan.edges if e.how in ("plain", "base", "item")]
    collected = [s for e in plan.edges if e.how == "collected" for s in arrived[e.input]]
    if not plan.edges:
        inputs = typed_inputs(plan.playbook, context.op_config or {})
        run = _run_info(context, plan.playbook)
        return root_scope(inputs, _trigger(context), run.as_scope())
    if any(e.how == "collected" for e in plan.edges):
        return collect(collected, plain, plan.region)
    return merge(plain)


def _check_not_aborted(context: OpExecutionContext, plan: StepPlan) -> None:
    if not plan.abortable:
        return  # no step of this playbook can abort the run: nothing to look up
    run = context.instance.get_run_by_id(context.run_id)
    aborted_by = run.tags.get(naming.ABORT_TAG) if run else None
    if aborted_by:
        raise dg.Failure(
            f"not started: the run was aborted by step `{aborted_by}`", allow_retries=False
        )


def _execute(
    plan: StepPlan, context: OpExecutionContext, arrived: Mapping[str, Any]
) -> Iterator[dg.Output]:
    scope = _incoming_scope(plan, context, arrived)
    _check_not_aborted(context, plan)
    result = run_step(
        plan,
        context,
        scope,
        mapping_key=_current_mapping_key(context),
        attempt=context.retry_number + 1,
        log=context.log,
    )
    if result is not None:
        yield dg.Output(result)


def run_step(
    plan: StepPlan,
    context: OpExecutionContext,
    scope: Scope,
    *,
    mapping_key: str | None,
    attempt: int,
    log: Any,
) -> Scope | None:
    """One attempt of a step on its incoming scope: the scope it outputs, or None when an
    unmapped step is skipped. Failures go through the step's error policy (which raises
    ``dg.Failure``; one that allows retries asks for another attempt)."""
    if scope.get(SKIPPED_KEY):  # an earlier step skipped this item: pass the marker along
        log.info(
            f"{naming.SKIP_MARKER} `{plan.step.id}`: `{scope[SKIPPED_KEY]}` was skipped for this item"
        )
        return scope
    step_ctx = step_context(plan, context, scope, mapping_key=mapping_key, log=log)
    try:
        skipped = skipped_by_when(plan, step_ctx)
        output = SKIPPED if skipped else _run_with_timeout(plan, step_ctx)
    except Exception as exc:  # every failure goes through the step's error policy
        handle_failure(plan, context, step_ctx, exc, attempt=attempt)
        output = SKIPPED  # only `on_error: skip` gets here; the other policies raise
    return output_scope(plan, scope, output)


def step_context(
    plan: StepPlan,
    context: OpExecutionContext,
    scope: Scope,
    *,
    mapping_key: str | None,
    log: Any,
) -> StepContext:
    resource = getattr(context.resources, RESOURCE_KEY)
    return StepContext(
        playbook=plan.playbook,
        step=plan.step,
        run=_run_info(context, plan.playbook),
        scope=public(scope),
        settings=resource.settings,
        resources=_step_resources(context, resource, plan.playbook),
        mapping_key=mapping_key,
        log=log,
    )


def skipped_by_when(plan: StepPlan, ctx: StepContext) -> bool:
    """Whether the step's `when` is false for this scope (logged as a skip)."""
    if plan.step.when and not evaluate(plan.step.when, ctx.scope):
        ctx.log.info(f"{naming.SKIP_MARKER} `{plan.step.id}`: `when: {plan.step.when}` is false")
        return True
    return False


def output_scope(plan: StepPlan, scope: Scope, output: Any) -> Scope | None:
    """What the step passes on: its output added, or for a skip the marker (mapped) or nothing."""
    if output is SKIPPED:
        # Inside a fan-out the item carries a marker instead of stopping, so the collect step
        # still runs (Dagster would skip it when every item was skipped).
        return {**scope, SKIPPED_KEY: plan.step.id} if plan.mapped else None
    return with_output(scope, plan.step.id, output, mapped=plan.mapped)


def _current_mapping_key(context: OpExecutionContext) -> str | None:
    return context.get_mapping_key()


def _step_resources(
    context: OpExecutionContext, resource: Any, playbook: Playbook
) -> StepResources:
    available = {
        key: getattr(context.resources, key)
        for key in (*CHANNELS, *CRMS)
        if hasattr(context.resources, key)
    }
    return step_resources(resource, available, playbook)


def step_resources(
    resource: Any, available: Mapping[str, Any], playbook: Playbook
) -> StepResources:
    """What a step may touch, from the product resource and the connection resources."""
    channels = {key: available[key] for key in CHANNELS if key in available}
    crm = {key: available[key] for key in CRMS if key in available}
    return StepResources(
        state=resource.state,
        warehouse=resource.warehouse,
        channels=channels,
        crm=crm,
        webhook_allow_hosts=tuple(resource.webhook_allow_hosts),
        webhook_secret=lambda: webhook_secret(playbook, resource.state),
    )


def webhook_secret(playbook: Playbook, state: Any) -> str:
    """The playbook's Standard Webhooks key: its webhook trigger's `secret`, else a local one."""
    from partnerships_orchestrator.connectors.secrets import SecretResolver

    for trigger in playbook.triggers:
        if isinstance(trigger, WebhookTrigger) and trigger.secret:
            return SecretResolver.from_env().resolve(trigger.secret)
    return str(state.webhook_secret(playbook.id))


STOP_GRACE_SECONDS = 60.0  # longest wait for a timed-out step's request in flight to end


def _run_with_timeout(plan: StepPlan, ctx: StepContext) -> Any:
    """Run the step; past ``timeout_seconds`` it is cancelled and fails only once it stopped.

    Cancellation is cooperative: every HTTP request and every delivery checks it before it
    leaves, so after the timeout nothing new is sent; the request already in flight (if any) is
    awaited, so no delivery happens after the step is reported failed.
    """
    runner = runner_for(plan.step.type)
    if plan.timeout is None:
        return runner(plan.step, ctx)
    reason = f"step `{ctx.step_key}` ran past its timeout of {plan.timeout:g} s"
    cancellation = Cancellation(deadline=time.monotonic() + plan.timeout, reason=reason)
    ctx.deadline = cancellation.deadline

    def work() -> Any:
        with cancellable(cancellation):
            return runner(plan.step, ctx)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"step-{plan.step.id}")
    future = pool.submit(contextvars.copy_context().run, work)
    try:
        return future.result(timeout=plan.timeout)
    except FutureTimeout:
        cancellation.cancel()
        stopped, _ = futures_wait([future], timeout=STOP_GRACE_SECONDS)
        if not stopped:
            ctx.log.warning(f"{reason}; its work did not stop within {STOP_GRACE_SECONDS:g} s")
        raise StepTimeout(reason, hint="raise `timeout_seconds` or make the step do less") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _dead_letter_inputs(plan: StepPlan, ctx: StepContext) -> dict[str, Any]:
    """What a redrive needs: the step as written, the run's inputs and the item, if any."""
    return {
        "step": plan.step.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "inputs": ctx.scope.get("inputs"),
        "item": ctx.scope.get("item"),
        "mapping_key": ctx.mapping_key,
        "trigger": ctx.scope.get("trigger"),
        "root_run_id": ctx.run.root_id,
        "run_started_at": ctx.run.started_at,
    }


def _kept_scope(scope: Mapping[str, Any]) -> bytes | None:
    """The step's scope as typed JSON for a later redrive (None if a value is not data)."""
    try:
        return codec.encode(dict(scope))
    except codec.NotEncodable:
        return None


def handle_failure(
    plan: StepPlan, context: OpExecutionContext, ctx: StepContext, exc: Exception, *, attempt: int
) -> None:
    """Apply ``on_error``: skip (record, go on), abort (record, fail the run) or retry."""
    policy = plan.policy
    message = str(exc) if isinstance(exc, PartnershipsError) else f"{type(exc).__name__}: {exc}"
    state = ctx.resources.state

    def dead_letter(action: str) -> None:
        if is_unknown_outcome(exc):  # the letter says what a user must check: whether it arrived
            action = OUTCOME_UNKNOWN
        state.add_dead_letter(
            playbook=plan.playbook.id,
            step=ctx.step_key,
            run_id=context.run_id,
            root_run_id=ctx.run.root_id,
            action=action,
            error=exc,
            inputs=jsonable(_dead_letter_inputs(plan, ctx)),
            attempts=attempt,
            scope=_kept_scope(ctx.scope),
        )

    if policy.action == "skip":
        dead_letter("skip")
        context.log.warning(
            f"{naming.SKIP_MARKER} `{plan.step.id}` failed and was skipped: {message}"
        )
        return  # the caller treats the step as skipped
    if policy.action == "abort":
        dead_letter("abort")
        context.instance.add_run_tags(context.run_id, {naming.ABORT_TAG: ctx.step_key})
        raise dg.Failure(
            f"step `{ctx.step_key}` failed and aborted the run: {message}", allow_retries=False
        ) from exc
    retryable = not isinstance(exc, NOT_RETRYABLE) and getattr(exc, "retryable", True)
    if retryable and attempt < policy.max_attempts:
        context.log.warning(
            f"`{ctx.step_key}` attempt {attempt}/{policy.max_attempts} failed: {message}"
        )
        raise dg.Failure(f"attempt {attempt}/{policy.max_attempts} failed: {message}") from exc
    dead_letter("retry_exhausted" if retryable and policy.max_attempts > 1 else "failed")
    raise dg.Failure(
        f"step `{ctx.step_key}` failed after {attempt} attempt(s): {message}", allow_retries=False
    ) from exc
