"""The one HTTP client every vendor connector uses (httpx, synchronous).

It owns what every vendor call needs and no connector should re-implement: timeouts, retries
(429, 5xx, dropped connections and timeouts; capped exponential backoff with full jitter;
``Retry-After`` in seconds or as an HTTP-date), the connection's rate limiter, pluggable auth
(refreshed once on a stale-credentials answer, then retried), redaction of every secret it knows,
logging to ``partnerships.connectors.<name>`` and counters for benchmarks and the CLI.

Vendors signal success, throttling and failure differently, so the decision is delegated to a
:class:`ResponsePolicy`: ``classify(response)`` returns a :class:`Verdict`, ``update_limits`` feeds
the vendor's quota headers to the limiter. A connector subclasses it and overrides what differs.
"""

from __future__ import annotations

import base64
import email.utils
import enum
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from pydantic import BaseModel, ConfigDict, Field

from partnerships_orchestrator.connectors.departure import check_cancelled, depart
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ConnectorTimeout,
    RateLimitExceeded,
    ResourceNotFound,
    VendorError,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter

REDACTED = "***"
OUTCOME_UNKNOWN = "outcome_unknown"  # a send-once request left and no answer came back

# httpx failures raised before any byte of the request reached the vendor
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
    httpx.LocalProtocolError,
)
_EPOCH_THRESHOLD = 1_000_000_000  # a reset header above this is a unix time, below it a delay


class Redactor:
    """Replaces every known secret (and its URL-encoded forms) with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._sources: list[Callable[[], Iterable[str | None]]] = []
        self.add(*secrets)
        _LIVE_REDACTORS.add(self)

    def add(self, *secrets: str | None) -> None:
        """Remember more secret values."""
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def add_source(self, source: Callable[[], Iterable[str | None]]) -> None:
        """Ask ``source`` for its current secrets at every redaction (e.g. rotating tokens)."""
        with self._lock:
            self._sources.append(source)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in sorted(self._variants(), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def _variants(self) -> set[str]:
        with self._lock:
            values = set(self._secrets)
            sources = list(self._sources)
        for source in sources:
            values.update(s for s in source() if s)
        return values | {quote(v, safe="") for v in values} | {quote_plus(v) for v in values}


_LIVE_REDACTORS: weakref.WeakSet[Redactor] = weakref.WeakSet()


class _HttpxLogRedaction(logging.Filter):
    """httpx logs full URLs at INFO; redact them with every live client's secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for redactor in list(_LIVE_REDACTORS):
            text = redactor.redact(text)
        record.msg, record.args = text, None
        return True


logging.getLogger("httpx").addFilter(_HttpxLogRedaction())


class Auth:
    """How a client proves who it is. The base class sends nothing."""

    def apply(self, request: httpx.Request) -> None:
        """Add credentials to ``request``."""

    def refresh(self, request: httpx.Request) -> bool:
        """Renew stale credentials after ``request`` was refused; True if a retry may succeed."""
        return False

    def secrets(self) -> list[str]:
        """Every secret value this auth holds, for redaction."""
        return []


class HeaderAuth(Auth):
    """A static token in a header, e.g. ``X-Vault-Token: <t>`` or ``Authorization: Bearer <t>``."""

    def __init__(self, header: str, token: str, *, prefix: str = "") -> None:
        self.header = header
        self.token = token
        self.prefix = prefix

    def apply(self, request: httpx.Request) -> None:
        request.headers[self.header] = f"{self.prefix}{self.token}"

    def secrets(self) -> list[str]:
        return [self.token]


class BearerAuth(HeaderAuth):
    """A static ``Authorization: Bearer <token>`` (private-app tokens, API keys)."""

    def __init__(self, token: str) -> None:
        super().__init__("Authorization", token, prefix="Bearer ")


class BasicAuth(Auth):
    """HTTP Basic (Mailgun ``api:<key>``, Twilio ``AccountSid:AuthToken``)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._encoded = base64.b64encode(f"{username}:{password}".encode()).decode()

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Basic {self._encoded}"

    def secrets(self) -> list[str]:
        return [self.password, self._encoded]


class Action(enum.StrEnum):
    """What the client does with an answer."""

    OK = "ok"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    REAUTH = "reauth"
    FAIL = "fail"


_DEFAULT_ERRORS: dict[Action, type[VendorError]] = {
    Action.RETRY: VendorUnavailable,
    Action.RATE_LIMITED: RateLimitExceeded,
    Action.REAUTH: AuthenticationError,
    Action.FAIL: VendorValidationError,
}


@dataclass(frozen=True)
class Verdict:
    """A policy's reading of one answer. Build it with the class methods."""

    action: Action
    message: str = ""
    error: type[VendorError] | None = None
    code: str | None = None
    retry_after: float | None = None
    hint: str | None = None
    key_scoped: bool = False

    @classmethod
    def ok(cls) -> Verdict:
        return cls(Action.OK)

    @classmethod
    def retry(
        cls,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        error: type[VendorError] = VendorUnavailable,
    ) -> Verdict:
        """Transient failure: back off (or wait ``retry_after``) and try again."""
        return cls(Action.RETRY, message, error, code, retry_after)

    @classmethod
    def rate_limited(
        cls,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        key_scoped: bool = False,
        error: type[VendorError] = RateLimitExceeded,
        hint: str | None = None,
    ) -> Verdict:
        """Throttled: pause the connection (or only the call's limit key) and try again;
        ``error`` is raised if it is still throttled when the attempts run out."""
        return cls(Action.RATE_LIMITED, message, error, code, retry_after, hint, key_scoped)

    @classmethod
    def reauth(cls, message: str, *, code: str | None = None, hint: str | None = None) -> Verdict:
        """Credentials look stale: refresh them once and try again."""
        return cls(Action.REAUTH, message, AuthenticationError, code, hint=hint)

    @classmethod
    def fail(
        cls,
        error: type[VendorError],
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> Verdict:
        """Final: raise ``error`` without retrying."""
        return cls(Action.FAIL, message, error, code, retry_after, hint)

    @property
    def error_class(self) -> type[VendorError]:
        return self.error or _DEFAULT_ERRORS[self.action]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _message_from(payload: Any) -> str | None:
    """The human message in the common vendor error shapes."""
    if isinstance(payload, list):
        parts = [_message_from(item) for item in payload]
        return "; ".join(p for p in parts if p) or None
    if isinstance(payload, str):
        return payload or None
    if not isinstance(payload, dict):
        return None
    for key in ("message", "error_description", "detail", "title"):
        if isinstance(payload.get(key), str) and payload[key]:
            return payload[key]
    if isinstance(payload.get("errors"), list) and payload["errors"]:
        return _message_from(payload["errors"])
    error = payload.get("error")
    return _message_from(error) if isinstance(error, dict | str) else None


def _code_from(payload: Any) -> str | None:
    """The machine code in the common vendor error shapes."""
    if isinstance(payload, list):
        return _code_from(payload[0]) if payload else None
    if not isinstance(payload, dict):
        return None
    for key in ("errorCode", "code", "error", "category", "errorType"):
        value = payload.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            return str(value)
        if key == "error" and isinstance(value, dict):
            return _code_from(value)
    return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class ResponsePolicy:
    """How a vendor signals outcomes. The defaults follow plain HTTP; vendors override methods.

    - 2xx/3xx: ok; 401: refresh credentials once; 403: authentication error; 404: not found
    - 429: rate limited (``Retry-After`` honoured); 408, 425 and 5xx: retry
    - any other 4xx: validation error carrying the vendor's message
    """

    retry_statuses: frozenset[int] = frozenset({408, 425})

    def classify(self, response: httpx.Response) -> Verdict:
        """Decide what to do with ``response``."""
        status = response.status_code
        if status < 400:
            return Verdict.ok()
        message, code = self.error_message(response), self.error_code(response)
        if status == 429:
            return Verdict.rate_limited(message, retry_after=self.retry_after(response), code=code)
        if status == 401:
            return Verdict.reauth(message, code=code)
        if status == 403:
            return Verdict.fail(AuthenticationError, message, code=code)
        if status == 404:
            return Verdict.fail(ResourceNotFound, message, code=code)
        if status >= 500 or status in self.retry_statuses:
            return Verdict.retry(message, retry_after=self.retry_after(response), code=code)
        return Verdict.fail(VendorValidationError, message, code=code)

    def error_message(self, response: httpx.Response) -> str:
        """The vendor's own words for a failure, else a truncated body, else the status."""
        message = _message_from(_json_or_none(response))
        if message is None and response.text.strip() and not _looks_like_json(response):
            message = response.text.strip()[:300]
        return message or response.reason_phrase or "no details"

    def error_code(self, response: httpx.Response) -> str | None:
        """The vendor's machine-readable error code, if any."""
        return _code_from(_json_or_none(response))

    def retry_after(self, response: httpx.Response) -> float | None:
        """Seconds the vendor asked us to wait, if it said."""
        return parse_retry_after(response.headers.get("Retry-After"))

    def update_limits(
        self, response: httpx.Response, limiter: RateLimiter, key: str | None = None
    ) -> None:
        """Feed ``X-RateLimit-Remaining``/``-Reset`` (or ``RateLimit-*``) readings to ``limiter``."""
        headers = response.headers
        remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
        reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
        if remaining is None or reset is None:
            return
        try:
            left, reset_value = int(remaining), float(reset)
        except ValueError:
            return
        if reset_value > _EPOCH_THRESHOLD:
            reset_value -= time.time()
        limiter.observe_quota(left, reset_value)


def _looks_like_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


class Timeouts(BaseModel):
    """Seconds allowed for each phase of a call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=30.0, gt=0)
    write: float = Field(default=30.0, gt=0)
    pool: float = Field(default=10.0, gt=0)

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class RetrySettings(BaseModel):
    """How hard a call tries before it raises."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=5, ge=1, description="Tries per call, the first included.")
    backoff_initial: float = Field(default=0.5, ge=0, description="Backoff ceiling of retry 1.")
    backoff_max: float = Field(default=30.0, ge=0, description="Cap of the backoff ceiling.")
    max_retry_after: float = Field(
        default=300.0,
        ge=0,
        description="A longer wait asked by the vendor ends the call (retry_after on the error).",
    )

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``retry`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (retry - 1))
        return rng.uniform(0, ceiling)


@dataclass
class ClientStats:
    """What one client did, for benchmarks and the CLI."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    auth_refreshes: int = 0
    failures: int = 0
    wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


_HINTS: dict[type[VendorError], str] = {
    AuthenticationError: "check the connection's credentials",
    VendorValidationError: "fix the request: the vendor will refuse it again unchanged",
    ResourceNotFound: "check the identifier or path",
    RateLimitExceeded: "lower the connection's rate_limit or retry later",
    VendorUnavailable: "the vendor is failing; retry later",
    ConnectorTimeout: "raise the connection's timeouts or retry later",
}


@dataclass
class _Outcome:
    verdict: Verdict
    response: httpx.Response | None = None
    payload: Any = None


class HttpClient:
    """A connection's HTTP client: ``request()`` returns an ok response or raises a VendorError."""

    def __init__(
        self,
        name: str,
        base_url: str = "",
        *,
        auth: Auth | None = None,
        policy: ResponsePolicy | None = None,
        rate_limit: RateLimit | RateLimiter | None = None,
        timeouts: Timeouts | None = None,
        retry: RetrySettings | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str | None] = (),
        verify: bool = True,
        send_once: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        # Non-idempotent sends (no vendor idempotency key): 429s, 5xx and requests that never
        # left are retried; a request that left without an answer is final (OUTCOME_UNKNOWN).
        self.send_once = send_once
        self.auth = auth
        self.policy = policy or ResponsePolicy()
        if not isinstance(rate_limit, RateLimiter):
            rate_limit = RateLimiter(rate_limit, sleep=sleep)
        self.limiter = rate_limit
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetrySettings()
        self.stats = ClientStats()
        self.log = logging.getLogger(f"partnerships.connectors.{name}")
        self.redactor = Redactor(secrets)
        if auth is not None:
            self.redactor.add_source(auth.secrets)
        self._sleep = sleep
        self._rng = rng or random.Random()  # nosec B311 # retry jitter, not a secret
        self._http = httpx.Client(
            base_url=base_url,
            timeout=self.timeouts.to_httpx(),
            headers=dict(headers or {}),
            verify=verify,
        )

    def redact(self, text: str) -> str:
        """``text`` with every secret this client knows replaced by ``***``."""
        return self.redactor.redact(text)

    def request(
        self,
        method: str,
        url: str,
        *,
        limit_key: str | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request (httpx keyword arguments: params, json, data, files, content, headers,
        timeout as seconds or :class:`Timeouts`) and return the ok response. ``limit_key``
        selects a per-key sub-limit; ``retry=False`` gives up at the first retryable failure
        (non-idempotent writes). Pass files as bytes so a retry can send them again."""
        outcome = self._call(method, url, limit_key, retry, kwargs, want_json=False)
        assert outcome.response is not None  # nosec B101 # invariant for mypy: _call returns a response unless it raised
        return outcome.response

    def request_json(
        self,
        method: str,
        url: str,
        *,
        limit_key: str | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Like :meth:`request`, returning the decoded JSON (None for an empty body).
        A malformed JSON answer counts as a transient failure and is retried."""
        return self._call(method, url, limit_key, retry, kwargs, want_json=True).payload

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        url: str,
        limit_key: str | None,
        retry: bool,
        kwargs: dict[str, Any],
        *,
        want_json: bool,
    ) -> _Outcome:
        if isinstance(kwargs.get("timeout"), Timeouts):
            kwargs = {**kwargs, "timeout": kwargs["timeout"].to_httpx()}
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            check_cancelled()
            self.stats.add(wait_seconds=self.limiter.acquire(limit_key))
            request = self._http.build_request(method, url, **kwargs)
            if self.auth is not None:
                self.auth.apply(request)
            # after the limiter's wait, right before the bytes go: a delivery is claimed here
            # (send-once clients), and a cancelled step sends nothing more
            if self.send_once:
                depart()
            else:
                check_cancelled()
            outcome = self._send(request, limit_key, want_json)
            verdict = outcome.verdict
            if verdict.action is Action.OK:
                return outcome
            if verdict.action is Action.REAUTH and not refreshed and self._refresh(request):
                refreshed, attempt = True, attempt - 1
                continue
            if verdict.action in (Action.REAUTH, Action.FAIL):
                raise self._fail(request, outcome, attempt)
            self._back_off(request, outcome, attempt, retry, limit_key)

    def _send(self, request: httpx.Request, limit_key: str | None, want_json: bool) -> _Outcome:
        """One attempt: send, read, classify. Transport failures become retry verdicts."""
        self.stats.add(requests=1)
        started = time.monotonic()
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            return _Outcome(self._transport_verdict(exc))
        self.log.debug(
            self.redact(
                f"{request.method} {request.url.path} -> {response.status_code} "
                f"in {(time.monotonic() - started) * 1000:.0f} ms"
            )
        )
        self.policy.update_limits(response, self.limiter, limit_key)
        verdict = self.policy.classify(response)
        if verdict.action is not Action.OK or not want_json:
            return _Outcome(verdict, response)
        try:
            payload = response.json() if response.content.strip() else None
        except ValueError:
            return _Outcome(Verdict.retry("answered with malformed JSON"), response)
        return _Outcome(verdict, response, payload)

    def _transport_verdict(self, exc: httpx.HTTPError) -> Verdict:
        """No answer. Retried, unless this client sends once and the request may have arrived."""
        error = ConnectorTimeout if isinstance(exc, httpx.TimeoutException) else VendorUnavailable
        transient = isinstance(
            exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        )
        if not transient:
            return Verdict.fail(VendorUnavailable, _describe(exc))
        if self.send_once and not isinstance(exc, _NOT_SENT):
            return Verdict.fail(
                error,
                f"{_describe(exc)}; the request was sent, so whether it arrived is unknown",
                code=OUTCOME_UNKNOWN,
                hint="not retried: sending again could deliver it twice",
            )
        return Verdict.retry(_describe(exc), error=error)

    def _refresh(self, request: httpx.Request) -> bool:
        if self.auth is None or not self.auth.refresh(request):
            return False
        self.stats.add(auth_refreshes=1)
        self.log.info(f"{self.name}: credentials refreshed after a stale-credentials answer")
        return True

    def _back_off(
        self,
        request: httpx.Request,
        outcome: _Outcome,
        attempt: int,
        retry: bool,
        limit_key: str | None,
    ) -> None:
        """Wait before the next attempt, or raise when no attempt is left."""
        verdict = outcome.verdict
        limited = verdict.action is Action.RATE_LIMITED
        if limited:
            self.stats.add(rate_limited=1)
        if not retry or attempt >= self.retry.attempts:
            raise self._fail(request, outcome, attempt)
        delay = verdict.retry_after
        if delay is None:
            delay = self.retry.backoff(attempt, self._rng)
        if delay > self.retry.max_retry_after:
            raise self._fail(request, outcome, attempt, retry_after=delay)
        self.stats.add(retries=1)
        self.log.warning(
            self.redact(
                f"{self.name}: {request.method} {request.url.path}: {_status_text(outcome)}"
                f"{verdict.message}; retry {attempt}/{self.retry.attempts - 1} in {delay:.2f} s"
            )
        )
        if limited:
            self.limiter.pause(delay, limit_key if verdict.key_scoped else None)
        else:
            self._sleep(delay)
            self.stats.add(wait_seconds=delay)

    def _fail(
        self,
        request: httpx.Request,
        outcome: _Outcome,
        attempts: int,
        *,
        retry_after: float | None = None,
    ) -> VendorError:
        """The error ending a call, redacted, logged and counted."""
        verdict = outcome.verdict
        error = verdict.error_class
        status = outcome.response.status_code if outcome.response is not None else None
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if retry_after is not None:
            tries = f"; the vendor asked to wait {retry_after:.0f} s"
        message = self.redact(
            f"{self.name}: {request.method} {request.url.path} failed{tries}: "
            f"{_status_text(outcome)}{verdict.message}"
        )
        hint = verdict.hint or _HINTS.get(error)
        self.stats.add(failures=1)
        self.log.warning(message)
        return error(
            message,
            self.redact(hint) if hint else None,
            vendor=self.name,
            status=status,
            code=verdict.code,
            retry_after=retry_after if retry_after is not None else verdict.retry_after,
        )


def _status_text(outcome: _Outcome) -> str:
    if outcome.response is None:
        return ""
    code = f" {outcome.verdict.code}" if outcome.verdict.code else ""
    return f"HTTP {outcome.response.status_code}{code}: "


def _describe(exc: httpx.HTTPError) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
