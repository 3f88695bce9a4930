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

import mimetypes
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import markdown
from pydantic import ConfigDict, Field, PrivateAttr

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    RateLimitExceeded,
    VendorError,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import (
    HttpClient,
    ResponsePolicy,
    RetrySettings,
    Timeouts,
    Verdict,
)
from partnerships_orchestrator.connectors.ratelimit import RateLimit
from partnerships_orchestrator.connectors.secrets import SecretResolver
from partnerships_orchestrator.errors import ConnectorError, DeliveryError, SecretError

OUTCOME_UNKNOWN = "outcome_unknown"

# httpx failures raised before any byte of the request reached the vendor
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
    httpx.LocalProtocolError,
)


class RateLimitConfig(dg.Config, RateLimit):
    """A connection's ``rate_limit:`` block as Dagster config (the fields of ``RateLimit``)."""


class _TransportErrors(threading.local):
    """The transport error of this thread's latest attempt, if any."""

    last: httpx.HTTPError | None = None


class _RecordingHttp:
    """Wraps the client's ``httpx.Client`` to remember how each attempt's transport failed."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self.errors = _TransportErrors()

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        self.errors.last = None
        try:
            return self._http.send(request, **kwargs)
        except httpx.HTTPError as exc:
            self.errors.last = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._http, name)


class SendOnceClient(HttpClient):
    """An :class:`HttpClient` for non-idempotent sends: a failure after the request left is
    final (code ``outcome_unknown``) instead of retried; everything else is unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recording = _RecordingHttp(self._http)
        self._http = self._recording  # type: ignore[assignment]

    def _send(self, request: httpx.Request, limit_key: str | None, want_json: bool) -> Any:
        outcome = super()._send(request, limit_key, want_json)
        error = self._recording.errors.last
        if outcome.response is not None or error is None or isinstance(error, _NOT_SENT):
            return outcome
        verdict = outcome.verdict
        message = f"{verdict.message}; the request was sent, so whether it arrived is unknown"
        hint = "not retried: sending again could deliver it twice"
        return replace(
            outcome,
            verdict=Verdict.fail(verdict.error_class, message, code=OUTCOME_UNKNOWN, hint=hint),
        )


class ChannelResource(dg.ConfigurableResource):
    """Base of the email and SMS resources: timeouts, retries, secrets, one send-once client.

    Secret fields hold references (``${env:NAME}``, ``${vault:mount/path#key}``) resolved at the
    first call, so configuration and run config only ever hold the reference.
    """

    # a refused configuration must not echo its values: they may be secrets
    model_config = ConfigDict(hide_input_in_errors=True)

    timeout_seconds: float = Field(default=30.0, gt=0, description="Read/write timeout per call.")
    max_attempts: int = Field(default=4, ge=1, description="Tries per call, the first included.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="Backoff ceiling of retry 1.")
    backoff_max_seconds: float = Field(default=30.0, ge=0, description="Cap of any backoff.")

    _client: SendOnceClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _resolver: SecretResolver | None = PrivateAttr(default=None)

    @property
    def provider_name(self) -> str:
        raise NotImplementedError

    def http(self) -> SendOnceClient:
        """The connection's HTTP client, built (and its secrets resolved) on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def close(self) -> None:
        """Close the HTTP client (a later call builds a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _build_client(self) -> SendOnceClient:
        raise NotImplementedError

    def _client_for(
        self,
        base_url: str,
        *,
        auth: Any,
        policy: ResponsePolicy,
        rate_limit: RateLimit | None,
    ) -> SendOnceClient:
        return SendOnceClient(
            self.provider_name,
            base_url.rstrip("/"),
            auth=auth,
            policy=policy,
            rate_limit=rate_limit,
            timeouts=Timeouts(
                connect=min(self.timeout_seconds, 10.0),
                read=self.timeout_seconds,
                write=self.timeout_seconds,
                pool=self.timeout_seconds,
            ),
            retry=RetrySettings(
                attempts=self.max_attempts,
                backoff_initial=self.backoff_seconds,
                backoff_max=max(self.backoff_max_seconds, self.backoff_seconds),
            ),
        )

    def _secret(self, value: str) -> str:
        """``value`` with secret references resolved; the error names the reference only."""
        if self._resolver is None:
            self._resolver = SecretResolver.from_env()
        return self._resolver.resolve(value)


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
    return DeliveryError(f"{provider}: {error.message}", error.hint, retryable=retryable)


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


def html_from_markdown(body: str) -> str:
    """The HTML alternative of a Markdown body (the text part is the Markdown itself)."""
    return markdown.markdown(body, extensions=["extra", "sane_lists"])


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
            with delivery_outcome(provider):
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
