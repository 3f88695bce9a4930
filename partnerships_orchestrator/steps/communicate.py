"""The `communicate` step: one message per recipient, at most once per (run, step, item, recipient).

Before each send the step claims the delivery in the ledger. A retried step or a re-executed run
(same root run) finds what was already sent and does not send it again; a delivery whose earlier
attempt died mid-send is never re-sent blindly (it may have arrived): it is reported and
dead-lettered instead.
"""

from __future__ import annotations

from typing import Any

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message, Receipt
from partnerships_orchestrator.errors import DeliveryError, StepError
from partnerships_orchestrator.expressions import render_string
from partnerships_orchestrator.spec.models import CommunicateStep
from partnerships_orchestrator.steps.context import StepContext
from partnerships_orchestrator.store.state import DeliveryKey


def run(step: CommunicateStep, ctx: StepContext) -> list[dict[str, Any]]:
    provider = _provider(step, ctx)
    if provider.provider_name == "outbox":
        ctx.log.info(
            f"`{step.id}`: no {step.channel} connection configured; using the sandbox outbox"
        )
    subject = _text(step.subject, ctx)
    body = _body(step, ctx)
    attachments = tuple(str(_text(a, ctx)) for a in step.attachments)
    receipts = []
    for recipient in _recipients(step, ctx):
        receipts.append(_deliver_once(step, ctx, provider, recipient, subject, body, attachments))
    sent = sum(1 for r in receipts if r["status"] == "sent")
    ctx.log.info(f"`{ctx.step_key}`: {sent} sent, {len(receipts) - sent} not sent again")
    return receipts


def _provider(step: CommunicateStep, ctx: StepContext) -> ChannelProvider:
    provider = ctx.resources.channels.get(step.channel)
    if provider is None:
        raise StepError(
            f"no provider for channel `{step.channel}`",
            hint="configure it in a `kind: connections` document",
        )
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


def _deliver_once(
    step: CommunicateStep,
    ctx: StepContext,
    provider: ChannelProvider,
    recipient: str,
    subject: str | None,
    body: str,
    attachments: tuple[str, ...],
) -> dict[str, Any]:
    state = ctx.resources.state
    key = DeliveryKey(ctx.run.root_id, step.id, ctx.mapping_key or "", recipient)
    claim = state.reserve(
        key,
        run_id=ctx.run.id,
        playbook=ctx.playbook.id,
        channel=step.channel,
        provider=provider.provider_name,
    )
    if claim == "sent":
        ctx.log.info(f"`{ctx.step_key}`: {recipient} already has this message; not sending again")
        previous = state.delivery(key) or {}
        return {**(previous.get("receipt") or {}), "status": "already_sent", "to": recipient}
    if claim == "pending":
        ctx.log.warning(
            f"`{ctx.step_key}`: an earlier attempt to {recipient} ended mid-send; "
            "not sending again (it may have arrived)"
        )
        state.add_dead_letter(
            playbook=ctx.playbook.id,
            step=ctx.step_key,
            run_id=ctx.run.id,
            action="undelivered",
            error="delivery state unknown after a crash",
            inputs={"recipient": recipient, "subject": subject},
        )
        return {
            "provider": provider.provider_name,
            "channel": step.channel,
            "to": recipient,
            "status": "unknown",
        }
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
        metadata={"attempt": 1 if claim == "new" else 2},
    )
    try:
        receipt: Receipt = provider.send(message)
    except DeliveryError as exc:
        state.mark_failed(key, str(exc))
        raise
    state.mark_sent(key, receipt.as_dict())
    return receipt.as_dict()
