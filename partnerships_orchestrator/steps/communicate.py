"""The `communicate` step: one message per recipient, at most once per (run, step, item, recipient).

The step renders its messages (:func:`prepare`) and hands them to the delivery service
(``partnerships_orchestrator.dispatch``), which keeps the ledger: a retried step or a re-executed
run (same root run) does not send again what was sent, and a message whose earlier request may
have left is never re-sent blindly: it becomes an ``outcome_unknown`` dead letter instead.
A fan-out region sends the messages of many items together (:func:`receipts` per item).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message
from partnerships_orchestrator.dispatch import Delivery, Dispatcher, DispatchRun, Outcome
from partnerships_orchestrator.errors import StepError
from partnerships_orchestrator.expressions import render_string
from partnerships_orchestrator.spec.models import CommunicateStep
from partnerships_orchestrator.steps.context import StepContext
from partnerships_orchestrator.store.state import DeliveryKey


def run(step: CommunicateStep, ctx: StepContext) -> list[dict[str, Any]]:
    provider = provider_for(step, ctx)
    announce(step, ctx, provider)
    deliveries = prepare(step, ctx, provider)
    outcomes = dispatcher(step, ctx, provider).deliver(deliveries, stop_at_failure=True)
    result = receipts(outcomes)
    sent = sum(1 for r in result if r["status"] == "sent")
    ctx.log.info(f"`{ctx.step_key}`: {sent} sent, {len(result) - sent} not sent again")
    return result


def announce(step: CommunicateStep, ctx: StepContext, provider: ChannelProvider) -> None:
    if provider.provider_name == "outbox":
        ctx.log.info(
            f"`{step.id}`: no {step.channel} connection configured; using the sandbox outbox"
        )


def dispatcher(step: CommunicateStep, ctx: StepContext, provider: ChannelProvider) -> Dispatcher:
    run = DispatchRun(run_id=ctx.run.id, root_run_id=ctx.run.root_id, playbook=ctx.playbook.id)
    return Dispatcher(ctx.resources.state, provider, run, channel=step.channel, log=ctx.log)


def prepare(step: CommunicateStep, ctx: StepContext, provider: ChannelProvider) -> list[Delivery]:
    """The step's messages for this scope (one per recipient), rendered, not yet sent."""
    subject = _text(step.subject, ctx)
    body = _body(step, ctx)
    attachments = tuple(str(_text(a, ctx)) for a in step.attachments)
    deliveries = []
    for recipient in _recipients(step, ctx):
        key = DeliveryKey(ctx.run.root_id, step.id, ctx.mapping_key or "", recipient)
        message = Message(
            channel=step.channel,
            to=recipient,
            body=body,
            subject=subject,
            attachments=attachments,
            run_id=ctx.run.id,
            step=ctx.step_key,
            playbook=ctx.playbook.id,
            idempotency_key=f"{key.root_run_id}:{key.step}:{key.item_key}:{recipient}",
        )
        deliveries.append(Delivery(key, message, ctx.step_key))
    return deliveries


def receipts(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """The step's output (one receipt per recipient); raises the first failure of this attempt
    (refused, not sent in time, or an outcome that became unknown just now)."""
    failed = next((o.error for o in outcomes if o.error is not None), None)
    if failed is not None:
        raise failed
    return [o.receipt for o in outcomes]


def provider_for(step: CommunicateStep, ctx: StepContext) -> ChannelProvider:
    provider = ctx.resources.channels.get(step.channel)
    if provider is None:
        raise StepError(
            f"no provider for channel `{step.channel}`",
            hint="configure it in a `kind: connections` document",
        )
    if step.provider == "outbox" and provider.provider_name != "outbox":
        from partnerships_orchestrator.connectors.outbox import OutboxChannel

        # a step may rehearse in the sandbox while its channel is connected for real
        return OutboxChannel(channel=step.channel, state_url=ctx.resources.state.url)
    if step.provider and step.provider != provider.provider_name:
        raise StepError(
            f"step `{step.id}` asks for provider `{step.provider}` but channel `{step.channel}` "
            f"is served by `{provider.provider_name}`",
            hint="remove `provider:` or configure that provider in `kind: connections`",
        )
    return provider


def _text(value: str | None, ctx: StepContext) -> str | None:
    return None if value is None else str(render_string(value, ctx.scope))


def _body(step: CommunicateStep, ctx: StepContext) -> str:
    if step.body is not None:
        return str(render_string(step.body, ctx.scope))
    from partnerships_orchestrator.steps.template import environment

    env = environment(ctx.settings.templates_dir, autoescape=False)
    return env.get_template(step.template or "").render(**ctx.scope)


def _recipients(step: CommunicateStep, ctx: StepContext) -> list[str]:
    """Rendered recipients; an expression may yield a list, a string may list several with commas."""
    values = step.to if isinstance(step.to, list) else [step.to]
    recipients: list[str] = []
    for value in values:
        rendered = render_string(value, ctx.scope)
        items = rendered if isinstance(rendered, list | tuple) else str(rendered).split(",")
        recipients.extend(str(r).strip() for r in items if str(r).strip())
    if not recipients:
        raise StepError(f"step `{step.id}` has no recipients", hint="check `to:`")
    return list(dict.fromkeys(recipients))
