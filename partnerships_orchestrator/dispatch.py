"""Delivering messages at most once per (root run, step, item, recipient).

Every message the product sends to a person or a channel goes through :class:`Dispatcher`, which
keeps the delivery ledger (``store.state``) true to one rule:

    A message is sent at most once per (root run, step, item, recipient). Its ledger row is
    claimed (``pending``) only when its request is about to leave, after the rate limiter's wait
    (``connectors.departure``), and then becomes ``sent`` or ``failed`` (nothing delivered). A
    retried step or a re-executed run (same root run) skips what is ``sent``, sends again what
    ``failed``, and never re-sends what is ``pending``: that request may have left before its
    process died, so its outcome is unknown. Such a message becomes exactly one dead letter with
    action ``outcome_unknown`` for its (root run, step, item), never a silent gap and never a
    second copy.

Several messages are sent through the provider's batch API when it has one (``send_batch``: e.g.
SendGrid's 1,000 personalizations per request); the claim then covers the messages of each
request as it leaves. A step that is cancelled (timeout) sends nothing more: the claim hook
refuses, so the request never leaves.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message, Receipt
from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN, batches
from partnerships_orchestrator.connectors.departure import (
    Cancellation,
    NotSent,
    cancellable,
    carrying,
    check_cancelled,
    current_cancellation,
    watching,
)
from partnerships_orchestrator.errors import ConnectorError, DeliveryError
from partnerships_orchestrator.store.state import DeliveryKey, StateStore

Status = Literal["sent", "already_sent", "unknown", "failed", "not_sent"]


@dataclass(frozen=True)
class Delivery:
    """One message to send once: its ledger key and where a dead letter about it belongs."""

    key: DeliveryKey
    message: Message
    step_key: str  # the step id, with the fan-out item's key (`send[3_p1]`)
    inputs: dict[str, Any] = field(default_factory=dict)  # kept on its dead letter


@dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Delivery`."""

    delivery: Delivery
    status: Status
    receipt: dict[str, Any]
    error: Exception | None = None  # why it failed, was not sent, or is unknown right now

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class DispatchRun:
    """The run on whose behalf messages are sent (dead letters and ledger rows name it)."""

    run_id: str
    root_run_id: str
    playbook: str


SECONDS_IN_FLIGHT = 0.08  # a request's round trip plus its two ledger commits, with room
MAX_IN_FLIGHT = 32
DEFAULT_IN_FLIGHT = 8  # a provider without a rate limit (the sandbox outbox)


def in_flight(provider: ChannelProvider) -> int:
    """How many requests to have in flight to keep the connection's rate (and no more, since
    each one in flight when a process dies is an unknown outcome): 1 up to 24/s, 8 at 100/s,
    32 (the most) from 400/s."""
    limit = getattr(provider, "rate_limit", None)
    rate = getattr(limit, "rate", None)
    if not rate:
        return DEFAULT_IN_FLIGHT
    return max(1, min(MAX_IN_FLIGHT, math.floor(rate * SECONDS_IN_FLIGHT)))


class Dispatcher:
    """Sends messages through one provider under the at-most-once rule (module docstring)."""

    def __init__(
        self,
        state: StateStore,
        provider: ChannelProvider,
        run: DispatchRun,
        *,
        channel: str,
        log: Any = None,
    ) -> None:
        self.state = state
        self.provider = provider
        self.run = run
        self.channel = channel
        self.log = log
        self._claimed: set[DeliveryKey] = set()

    def deliver(
        self,
        deliveries: Sequence[Delivery],
        *,
        stop_at_failure: bool = False,
        workers: int | None = 1,
        timeout: float | None = None,
    ) -> list[Outcome]:
        """Send what the ledger allows and return one outcome per delivery, in order.

        Messages with the same content share a request where the provider has a batch API.
        ``workers`` requests go out at once (the connection's limiter paces them all; ``None``:
        as many as keep the connection's rate, see :func:`in_flight`);
        ``timeout`` bounds each request's wait and send (cancelled: ``not_sent``). With
        ``stop_at_failure`` (one worker) the requests after a refusal are ``not_sent``. A request
        whose outcome is unknown (it left, no answer came) dead-letters its messages as
        ``outcome_unknown``; the connector error is on their outcomes.
        """
        outcomes: dict[DeliveryKey, Outcome] = {}
        ready = self._precheck(deliveries, outcomes)
        groups = self._groups(ready)
        workers = in_flight(self.provider) if workers is None else workers
        if workers > 1 and len(groups) > 1 and not stop_at_failure:
            with ThreadPoolExecutor(workers, thread_name_prefix="dispatch") as pool:
                runs = [
                    pool.submit(contextvars.copy_context().run, self._send, g, outcomes, timeout)
                    for g in groups
                ]
                for run in runs:
                    run.result()
        else:
            stopped = False
            for group in groups:
                if stopped:
                    for d in group:
                        outcomes[d.key] = Outcome(
                            d, "not_sent", {**self._base(d), "status": "not_sent"}
                        )
                    continue
                self._send(group, outcomes, timeout)
                stopped = stop_at_failure and any(outcomes[d.key].failed for d in group)
        check_cancelled()
        return [outcomes[d.key] for d in deliveries]

    def _groups(self, ready: Sequence[Delivery]) -> list[list[Delivery]]:
        """One list per request: same content together through a batch API, else one each."""
        if len(ready) > 1 and hasattr(self.provider, "send_batch"):
            size = self.provider.max_per_request  # type: ignore[attr-defined]
            indexes = batches([d.message for d in ready], size)
            return [[ready[i] for i in group] for group in indexes]
        return [[d] for d in ready]

    # ---------------------------------------------------------------- before the limiter
    def _precheck(
        self, deliveries: Sequence[Delivery], outcomes: dict[DeliveryKey, Outcome]
    ) -> list[Delivery]:
        """What the ledger already knows; returns the deliveries that may be sent."""
        rows = self.state.deliveries_of([d.key for d in deliveries])
        ready: list[Delivery] = []
        for delivery in deliveries:
            row = rows.get(delivery.key)
            status = row["status"] if row else None
            if status == "sent":
                previous = (row or {}).get("receipt") or self._base(delivery)
                outcomes[delivery.key] = Outcome(
                    delivery, "already_sent", {**previous, "status": "already_sent"}
                )
            elif status == "pending":
                outcomes[delivery.key] = self._unknown(delivery, "before this attempt")
            else:
                attempt = int((row or {}).get("attempts") or 0) + 1
                metadata = {**delivery.message.metadata, "attempt": attempt}
                ready.append(
                    replace(delivery, message=replace(delivery.message, metadata=metadata))
                )
        return ready

    # ---------------------------------------------------------------- sending
    def _send(
        self, group: list[Delivery], outcomes: dict[DeliveryKey, Outcome], timeout: float | None
    ) -> None:
        """Send one request's messages and record their outcomes right after its answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        limit = (
            Cancellation(deadline=deadline, reason=f"not sent within its timeout of {timeout:g} s")
            if timeout is not None
            else current_cancellation()
        )
        by_message = {id(d.message): d for d in group}
        results: Sequence[Receipt | DeliveryError]
        try:
            with cancellable(limit), watching(self._claim_hook(by_message)):
                if len(group) == 1:
                    with carrying([group[0].message]):
                        results = [self._send_one(group[0].message)]
                else:
                    results = self.provider.send_batch([d.message for d in group])  # type: ignore[attr-defined]
        except ConnectorError as exc:  # the request left and no answer came back
            claimed = [d for d in group if d.key in self._claimed]
            self._dead_letter_unknown(claimed)
            for d in group:
                status: Status = "unknown" if d.key in self._claimed else "not_sent"
                outcomes[d.key] = Outcome(d, status, {**self._base(d), "status": status}, exc)
            return
        recorded = [self._outcome(d, r) for d, r in zip(group, results, strict=True)]
        self.state.mark_sent_many(
            [
                (o.delivery.key, o.receipt)
                for o in recorded
                if o.status == "sent" and o.delivery.key in self._claimed
            ]
        )
        for outcome in recorded:
            outcomes[outcome.delivery.key] = outcome

    def _send_one(self, message: Message) -> Receipt | DeliveryError:
        try:
            return self.provider.send(message)
        except DeliveryError as exc:
            return exc

    def _claim_hook(self, by_message: dict[int, Delivery]) -> Any:
        """The departure hook: claim the request's messages in the ledger as it leaves."""

        def claim(messages: Sequence[Message]) -> None:
            deliveries = [by_message[id(m)] for m in messages if id(m) in by_message]
            fresh = [d.key for d in deliveries if d.key not in self._claimed]
            if not fresh:
                return  # a retry of a request already claimed (e.g. after a 429)
            answers = self.state.claim_many(
                fresh,
                run_id=self.run.run_id,
                playbook=self.run.playbook,
                channel=self.channel,
                provider=self.provider.provider_name,
            )
            won = [k for k, a in answers.items() if a in ("new", "retry")]
            self._claimed.update(won)
            lost = [k for k, a in answers.items() if a not in ("new", "retry")]
            if lost:
                for key in won:  # nothing leaves: release what this request claimed
                    self.state.mark_failed(key, "not sent: another attempt claimed the request")
                    self._claimed.discard(key)
                raise NotSent(
                    f"not sent: {len(lost)} message(s) of this request were claimed by another "
                    "attempt at the same time",
                    hint="the ledger keeps each message to one sender",
                )

        return claim

    # ---------------------------------------------------------------- after the answer
    def _outcome(self, delivery: Delivery, result: Receipt | DeliveryError) -> Outcome:
        """The outcome of one message; failures and unclaimed receipts are written here."""
        key, claimed = delivery.key, delivery.key in self._claimed
        if isinstance(result, DeliveryError):
            if claimed:
                self.state.mark_failed(key, str(result))
            status: Status = "failed" if claimed or not isinstance(result, NotSent) else "not_sent"
            receipt = {**self._base(delivery), "status": status, "error": str(result)}
            return Outcome(delivery, status, receipt, result)
        receipt = result.as_dict()
        if not claimed:  # a provider that sent without a departure: record it now
            self.state.record_sent(
                key,
                receipt,
                run_id=self.run.run_id,
                playbook=self.run.playbook,
                channel=self.channel,
                provider=self.provider.provider_name,
            )
        return Outcome(delivery, "sent", receipt)

    def _unknown(self, delivery: Delivery, when: str) -> Outcome:
        if self.log is not None:
            self.log.warning(
                f"`{delivery.step_key}`: a request to {delivery.message.to} may have left "
                f"{when} and its outcome is unknown; not sending again (it may have arrived)"
            )
        self._dead_letter_unknown([delivery])
        return Outcome(delivery, "unknown", {**self._base(delivery), "status": "unknown"})

    def _dead_letter_unknown(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self.state.add_dead_letter(
                playbook=self.run.playbook,
                step=delivery.step_key,
                run_id=self.run.run_id,
                root_run_id=self.run.root_run_id,
                action=OUTCOME_UNKNOWN,
                error=(
                    f"outcome unknown: the request to {delivery.message.to} may have left before "
                    "its answer came back (process stopped or connection lost); not sent again"
                ),
                inputs={
                    "recipient": delivery.message.to,
                    "subject": delivery.message.subject,
                    **delivery.inputs,
                },
            )

    def _base(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "provider": self.provider.provider_name,
            "channel": self.channel,
            "to": delivery.message.to,
        }
