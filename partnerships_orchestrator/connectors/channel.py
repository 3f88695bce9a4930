"""What a channel provider is: the one small interface every email / SMS / chat connector offers.

The ``communicate`` step renders a :class:`Message` per recipient and hands it to the provider
configured for its channel; the provider returns a :class:`Receipt` or raises
:class:`~partnerships_orchestrator.errors.DeliveryError` (``retryable`` says whether trying again
could help). Providers never decide about duplicates: the delivery ledger does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Message:
    """One message to one recipient."""

    channel: str
    to: str
    body: str
    subject: str | None = None
    attachments: tuple[str, ...] = ()
    run_id: str = ""
    step: str = ""
    playbook: str = ""
    idempotency_key: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """What a provider says about one delivered message."""

    provider: str
    channel: str
    to: str
    message_id: str | None = None
    status: str = "sent"
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "channel": self.channel,
            "to": self.to,
            "message_id": self.message_id,
            "status": self.status,
            **({"detail": self.detail} if self.detail else {}),
        }


@runtime_checkable
class ChannelProvider(Protocol):
    """Anything that can deliver a :class:`Message`."""

    @property
    def provider_name(self) -> str: ...

    def send(self, message: Message) -> Receipt: ...
