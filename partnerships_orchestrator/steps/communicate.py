"""The `communicate` step: one message per recipient, at most once per (run, step, item, recipient).

Before each send the step claims the delivery in the ledger. A retried step or a re-executed run
(same root run) finds what was already sent and does not send it again; a delivery whose earlier
attempt died mid-send is never re-sent blindly (it may have arrived): it is reported and
dead-lettered instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message, Receipt
from partnerships_orchestrator.errors import DeliveryError, StepError
from partnerships_orchestrator.expressions import render_string
from partnerships_orchestrator.spec.models import CommunicateStep
from partnerships_orchestrator.steps.context import StepContext
from partnerships_orchestrator.store.state import DeliveryKey, StateStore


def run(step: CommunicateStep, ctx: StepContext) -> list[dict[str, Any]]:
    provider = _provider(step, ctx)
    if provider.provider_name == "outbox":
        ctx.log.info(
            f"`{step.id}`: no {step.channel} connection configured; using the sandbox outbox"
        )
    subject = _text(step.subject, ctx)
    body = _body(step, ctx)
    attachments = tuple(str(_text(a, ctx)) for a in step.attachments)
    recipients = _recipients(step, ctx)

    def claim(recipient: str) -> _Claim:
        return _claim(step, ctx, provider, recipient, subject)

    if len(recipients) > 1 and hasattr(provider, "send_batch"):
        claims = _send_batch(provider, [claim(r) for r in recipients], body, attachments)
    else:
        claims = _send_each(provider, recipients, claim, body, attachments)
    failed = next((c.error for c in claims if c.error is not None), None)
    if failed is not None:
        raise failed
    receipts = [c.receipt for c in claims]
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


def _send_each(
    provider: ChannelProvider,
    recipients: list[str],
    claim: Callable[[str], _Claim],
    body: str,
    attachments: tuple[str, ...],
) -> list[_Claim]:
    """Claim and send one recipient at a time, stopping at the first refusal.

    Claiming just before each send means a crash leaves at most the one in-flight delivery in
    doubt; an unknown outcome (e.g. a timeout after the request left) propagates and leaves that
    delivery pending, so it is never sent blindly again.
    """
    claims: list[_Claim] = []
    for recipient in recipients:
        current = claim(recipient)
        claims.append(current)
        if current.message_for is None:
            continue
        try:
            current.record(provider.send(current.message_for(body, attachments)))
        except DeliveryError as exc:
            current.record(exc)
            break
    return claims


def _send_batch(
    provider: Any, claims: list[_Claim], body: str, attachments: tuple[str, ...]
) -> list[_Claim]:
    """Claim every recipient, then send through the provider's batch API in one go."""
    sendable = [c for c in claims if c.message_for is not None]
    if sendable:
        results = provider.send_batch([c.message_for(body, attachments) for c in sendable])  # type: ignore[misc]
        for current, result in zip(sendable, results, strict=True):
            current.record(result)
    return claims


@dataclass
class _Claim:
    """One recipient's ledger claim: send now, or what happened before."""

    state: StateStore
    key: DeliveryKey
    receipt: dict[str, Any]
    message_for: Callable[[str, tuple[str, ...]], Message] | None = None
    error: DeliveryError | None = None

    def record(self, result: Receipt | DeliveryError) -> None:
        if isinstance(result, DeliveryError):
            self.state.mark_failed(self.key, str(result))
            self.receipt = {**self.receipt, "status": "failed", "error": str(result)}
            self.error = result
        else:
            self.state.mark_sent(self.key, result.as_dict())
            self.receipt = result.as_dict()


def _claim(
    step: CommunicateStep,
    ctx: StepContext,
    provider: ChannelProvider,
    recipient: str,
    subject: str | None,
) -> _Claim:
    state = ctx.resources.state
    key = DeliveryKey(ctx.run.root_id, step.id, ctx.mapping_key or "", recipient)
    claim = state.reserve(
        key,
        run_id=ctx.run.id,
        playbook=ctx.playbook.id,
        channel=step.channel,
        provider=provider.provider_name,
    )
    base = {"provider": provider.provider_name, "channel": step.channel, "to": recipient}
    if claim == "sent":
        ctx.log.info(f"`{ctx.step_key}`: {recipient} already has this message; not sending again")
        previous = state.delivery(key) or {}
        return _Claim(state, key, {**(previous.get("receipt") or base), "status": "already_sent"})
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
        return _Claim(state, key, {**base, "status": "unknown"})
    attempt = int((state.delivery(key) or {}).get("attempts") or 1)

    def message_for(body: str, attachments: tuple[str, ...]) -> Message:
        return Message(
            channel=step.channel,
            to=recipient,
            body=body,
            subject=subject,
            attachments=attachments,
            run_id=ctx.run.id,
            step=ctx.step_key,
            playbook=ctx.playbook.id,
            idempotency_key=f"{key.root_run_id}:{key.step}:{key.item_key}:{recipient}",
            metadata={"attempt": attempt},
        )

    return _Claim(state, key, {**base, "status": "pending"}, message_for)
