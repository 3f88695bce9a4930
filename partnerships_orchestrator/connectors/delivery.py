"""What the channel connectors share: sending a message at most once, and its outcome.

No email or SMS vendor offers an idempotency key (API_CONTRACTS §3, §4, §7), so a send is
retried only when the vendor certainly did not take the message:

- the request never left (connection refused, connect or pool timeout): retried like any call;
- the vendor answered 429 or 5xx: retried by the shared client with its backoff;
- the request left and no answer came back (read or write timeout, connection dropped): the
  outcome is unknown. It is never retried: the connector error (``ConnectorTimeout``,
  ``VendorUnavailable``) is raised with code ``outcome_unknown`` and is not turned into a
  :class:`DeliveryError`, so the delivery ledger keeps the delivery pending instead of sending
  it again blindly.

Every other ending becomes a :class:`DeliveryError`: refused (validation, credentials, a
missing attachment) with ``retryable=False``, throttled or failing after the retries with
``retryable=True``. Messages carry the vendor's own words, never a secret.
"""

from __future__ import annotations

__all__ = ["OUTCOME_UNKNOWN", "ChannelResource", "EmailResource", "RateLimitConfig"]

import mimetypes
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import markdown
from pydantic import Field

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.departure import carrying
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    RateLimitExceeded,
    VendorError,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import OUTCOME_UNKNOWN, HttpClient, ResponsePolicy
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimitConfig, RateLimiter
from partnerships_orchestrator.connectors.resource import VendorResource
from partnerships_orchestrator.connectors.shared_ratelimit import limiter_for
from partnerships_orchestrator.errors import ConnectorError, DeliveryError, SecretError


class ChannelResource(VendorResource):
    """Base of the email, SMS and chat resources: a send-once HTTP client per connection."""

    max_attempts: int = Field(default=4, ge=1, description="Tries per call, the first included.")

    @property
    def provider_name(self) -> str:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return self.provider_name

    def _client_for(
        self,
        base_url: str,
        *,
        auth: Any,
        policy: ResponsePolicy,
        rate_limit: RateLimit | RateLimiter | None,
    ) -> HttpClient:
        if not isinstance(rate_limit, RateLimiter):
            rate_limit = limiter_for(self.label, rate_limit)
        return HttpClient(
            self.provider_name,
            base_url.rstrip("/"),
            auth=auth,
            policy=policy,
            rate_limit=rate_limit,
            timeouts=self._timeouts(),
            retry=self._retry(),
            send_once=True,
        )


class EmailResource(ChannelResource):
    """Base of the email resources: who the messages are from."""

    sender: str = Field(description="The From address (`from:` in the connections document).")
    sender_name: str | None = Field(default=None, description="The From display name.")


def is_unknown_outcome(error: BaseException) -> bool:
    return isinstance(error, VendorError) and error.code == OUTCOME_UNKNOWN


def as_delivery_error(error: VendorError) -> DeliveryError:
    """The delivery outcome of a vendor error whose outcome is known (nothing was delivered)."""
    retryable = isinstance(error, RateLimitExceeded | VendorUnavailable) or error.retryable
    if isinstance(error, AuthenticationError | VendorValidationError):
        retryable = False
    return DeliveryError(error.message, error.hint, retryable=retryable)


def secret_delivery_error(provider: str, error: SecretError) -> DeliveryError:
    """A credential that cannot be resolved: nothing was sent; retryable if Vault was down."""
    cause = error.__cause__
    retryable = isinstance(cause, VendorError) and cause.retryable
    message = (
        error.message
        if error.message.startswith(f"{provider}:")
        else f"{provider}: {error.message}"
    )
    return DeliveryError(message, error.hint, retryable=retryable)


@contextmanager
def delivery_outcome(provider: str) -> Iterator[None]:
    """Translate what a send raises into delivery outcomes (unknown outcomes pass through)."""
    try:
        yield
    except SecretError as exc:
        raise secret_delivery_error(provider, exc) from exc
    except VendorError as exc:
        if is_unknown_outcome(exc):
            raise
        raise as_delivery_error(exc) from exc


@dataclass(frozen=True)
class Attachment:
    """A file to attach, read before anything is sent."""

    filename: str
    content_type: str
    content: bytes


def read_attachments(provider: str, paths: tuple[str, ...]) -> list[Attachment]:
    """The message's attachment files; a missing one refuses the message before sending."""
    files = []
    for path in paths:
        file = Path(path)
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise DeliveryError(
                f"{provider}: cannot read attachment {path}: {exc.strerror or exc}",
                "check the path the template step rendered",
                retryable=False,
            ) from exc
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        files.append(Attachment(file.name, kind, content))
    return files


_MARKDOWN = threading.local()


@lru_cache(maxsize=256)  # a bulk send renders the same body for many recipients
def html_from_markdown(body: str) -> str:
    """The HTML alternative of a Markdown body (the text part is the Markdown itself)."""
    # one converter per thread: building one registers its extensions (~1 ms a message)
    converter = getattr(_MARKDOWN, "converter", None)
    if converter is None:
        converter = _MARKDOWN.converter = markdown.Markdown(extensions=["extra", "sane_lists"])
    return str(converter.reset().convert(body))


def tracking_values(message: Message) -> dict[str, str]:
    """What a vendor carries per recipient to correlate events with the ledger (strings only)."""
    values = {
        "idempotency_key": message.idempotency_key,
        "run_id": message.run_id,
        "playbook": message.playbook,
        "step": message.step,
    }
    return {name: value for name, value in values.items() if value}


def check_failure(provider: str, error: Exception) -> dict[str, Any]:
    """The ``check()`` answer for a failed probe: the error's words, which hold no secret."""
    detail = error.message if isinstance(error, SecretError | VendorError) else str(error)
    hint = getattr(error, "hint", None)
    return {"ok": False, "provider": provider, "detail": detail, "hint": hint}


def batches(messages: Sequence[Message], size: int) -> list[list[int]]:
    """Indexes of ``messages`` grouped into requests: same subject, body and attachments
    together, at most ``size`` per request, each address (case-insensitive) once per request."""
    requests: list[list[int]] = []
    addresses: list[set[str]] = []
    open_requests: dict[tuple[Any, ...], list[int]] = {}
    for index, message in enumerate(messages):
        key = (message.channel, message.subject, message.body, message.attachments)
        address = message.to.strip().lower()
        candidates = open_requests.setdefault(key, [])
        chosen = next((r for r in candidates if address not in addresses[r]), None)
        if chosen is None:
            chosen = len(requests)
            requests.append([])
            addresses.append(set())
            candidates.append(chosen)
        requests[chosen].append(index)
        addresses[chosen].add(address)
        if len(requests[chosen]) >= size:
            candidates.remove(chosen)
    return requests


def send_in_batches(
    provider: str,
    messages: Sequence[Message],
    size: int,
    send_group: Callable[[list[Message]], list[Receipt]],
) -> list[Receipt | DeliveryError]:
    """One outcome per message, sending each group from :func:`batches` with ``send_group``.

    A request refused or failed makes a :class:`DeliveryError` for each of its messages. A request
    whose outcome is unknown has no per-message answer to give: the other requests still go out,
    then its connector error is raised, so a caller's ledger keeps every message of the batch
    pending (none is sent again blindly, at the price of the known receipts).
    """
    outcomes: list[Receipt | DeliveryError | None] = [None] * len(messages)
    unknown: ConnectorError | None = None
    for indexes in batches(messages, size):
        group = [messages[i] for i in indexes]
        results: Sequence[Receipt | DeliveryError]
        try:
            with delivery_outcome(provider), carrying(group):
                results = send_group(group)
        except DeliveryError as exc:
            results = [exc] * len(group)
        except ConnectorError as exc:  # outcome unknown
            unknown = unknown or exc
            continue
        for index, result in zip(indexes, results, strict=True):
            outcomes[index] = result
    if unknown is not None:
        raise unknown
    return [o for o in outcomes if o is not None]
