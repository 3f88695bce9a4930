"""The sandbox `outbox` provider: every message lands in a local table instead of being sent.

Like a payment provider's test cards, two reserved recipient domains let users rehearse failure
handling in the sandbox: anything containing ``fail.invalid`` is refused (permanently), and
anything containing ``flaky.invalid`` fails on its first attempt and goes through on the next.
"""

from __future__ import annotations

import dagster as dg

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.departure import depart
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator.store.state import StateStore

PERMANENT_FAILURE_DOMAIN = "fail.invalid"
TRANSIENT_FAILURE_DOMAIN = "flaky.invalid"


class OutboxChannel(dg.ConfigurableResource):
    """Delivers a channel's messages to the sandbox outbox (listed by `partnerships outbox`)."""

    channel: str
    state_url: str

    @property
    def provider_name(self) -> str:
        return "outbox"

    def send(self, message: Message) -> Receipt:
        depart()  # the message "leaves" now (claimed in the ledger, unless cancelled)
        if PERMANENT_FAILURE_DOMAIN in message.to:
            raise DeliveryError(
                f"outbox refused {message.to}: reserved failing address",
                hint=f"`{PERMANENT_FAILURE_DOMAIN}` always fails in the sandbox",
                retryable=False,
            )
        if TRANSIENT_FAILURE_DOMAIN in message.to and message.metadata.get("attempt", 1) <= 1:
            raise DeliveryError(
                f"outbox could not deliver to {message.to} (transient)",
                hint=f"`{TRANSIENT_FAILURE_DOMAIN}` fails once, then delivers",
            )
        message_id = StateStore(self.state_url).add_to_outbox(
            channel=message.channel,
            recipient=message.to,
            subject=message.subject,
            body=message.body,
            attachments=list(message.attachments),
            playbook=message.playbook,
            run_id=message.run_id,
            step=message.step,
        )
        return Receipt(
            provider="outbox",
            channel=message.channel,
            to=message.to,
            message_id=message_id,
            status="sent",
        )
