"""The ``webhook`` step: one outbound HTTP call, guarded against SSRF, optionally signed.

SSRF guard: the host is resolved once, every address is checked (loopback, private, link-local,
multicast, reserved, unspecified and other non-global ranges are refused unless the host or
address is in ``webhooks.allow_hosts``), and the request is then sent to the checked IP address
itself, with the original ``Host`` header and TLS server name (SNI, also used to verify the
certificate). Nothing resolves the name a second time, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot redirect the call. Redirects are not followed and
proxy environment variables are ignored, for the same reason.

Signing follows Standard Webhooks; ``webhook-id`` is derived from the root run id and the step
key, so every retry and re-execution of one call carries the same id and receivers can dedupe.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from partnerships_orchestrator.errors import (
    ConfigurationError,
    StepError,
    StepTimeout,
    WebhookBlocked,
)
from partnerships_orchestrator.expressions import render_value
from partnerships_orchestrator.spec.models import WebhookStep
from partnerships_orchestrator.steps.context import StepContext
from partnerships_orchestrator.store.jsonable import jsonable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_TIMEOUT_SECONDS = 30.0
BODY_PREVIEW_CHARS = 200
ALLOW_HINT = "allow it with `webhooks.allow_hosts` in configuration"
_TOKEN_LIKE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~]{16,}$")
_DROPPED_RESPONSE_HEADERS = frozenset({"set-cookie"})


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL as written and the one address it may be sent to."""

    url: httpx.URL
    host: str
    port: int
    address: IPAddress


def run(step: WebhookStep, ctx: StepContext) -> dict[str, Any]:
    """Send the request; the output is ``{"status", "json", "text", "headers"}``."""
    url = str(render_value(step.url, ctx.scope))
    headers = httpx.Headers(
        {str(k): str(v) for k, v in render_value(step.headers, ctx.scope).items()}
    )
    content = _body(step, ctx, headers)
    target = resolve_target(url, ctx.resources.webhook_allow_hosts, step_id=step.id)
    if step.sign:
        headers.update(sign_headers(_secret(step, ctx), webhook_id(ctx), content))
    response = _send(step, target, headers, content, _timeout(step, ctx.deadline))
    _check_status(step, target, response)
    return {
        "status": response.status_code,
        "json": _json_or_none(response),
        "text": response.text,
        "headers": {
            k.lower(): v
            for k, v in response.headers.items()
            if k.lower() not in _DROPPED_RESPONSE_HEADERS
        },
    }


# ---------------------------------------------------------------- the SSRF guard


def resolve_target(url: str, allow_hosts: tuple[str, ...], *, step_id: str) -> Target:
    """Resolve ``url``'s host once and pick an address it may be sent to, or refuse."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise StepError(f"webhook step `{step_id}`: invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookBlocked(
            f"webhook step `{step_id}`: scheme `{parsed.scheme or '(none)'}` is not allowed",
            hint="use an http:// or https:// URL",
        )
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise StepError(f"webhook step `{step_id}`: the URL {mask_url(parsed)} has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = _resolve(host, port, step_id)
    by_name = _allowed_by_name(host, port, allow_hosts)
    for address in addresses:
        if by_name or blocked_reason(address) is None or _allowed_by_network(address, allow_hosts):
            return Target(url=parsed, host=host, port=port, address=address)
    first = addresses[0]
    raise WebhookBlocked(
        f"webhook step `{step_id}`: host `{host}` resolves to {first}, "
        f"a {blocked_reason(first)} address",
        hint=ALLOW_HINT,
    )


def blocked_reason(address: IPAddress) -> str | None:
    """Why an outbound call to ``address`` is refused by default, or ``None`` if it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _resolve(host: str, port: int, step_id: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise StepError(
            f"webhook step `{step_id}`: cannot resolve host `{host}`: {exc}",
            hint="check the URL's host name",
        ) from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return list(dict.fromkeys(addresses))  # unique, in resolver order


def _allowed_by_name(host: str, port: int, allow_hosts: tuple[str, ...]) -> bool:
    host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    names = {entry.strip().lower().rstrip(".") for entry in allow_hosts}
    return host in names or host_port in names


def _allowed_by_network(address: IPAddress, allow_hosts: tuple[str, ...]) -> bool:
    for entry in allow_hosts:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue  # a host name entry
        if address in network:
            return True
    return False


# ---------------------------------------------------------------- the request


def _body(step: WebhookStep, ctx: StepContext, headers: httpx.Headers) -> bytes:
    """The exact bytes sent (and signed); sets a content type when the step gives none."""
    if step.json_body is not None:
        value = jsonable(render_value(step.json_body, ctx.scope))
        headers.setdefault("content-type", "application/json")
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if step.body is not None:
        headers.setdefault("content-type", "text/plain; charset=utf-8")
        return str(render_value(step.body, ctx.scope)).encode()
    return b""


def _timeout(step: WebhookStep, deadline: float | None) -> float:
    if deadline is None:
        return DEFAULT_TIMEOUT_SECONDS
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StepTimeout(f"webhook step `{step.id}` ran out of time before sending")
    return remaining


def _send(
    step: WebhookStep, target: Target, headers: httpx.Headers, content: bytes, timeout: float
) -> httpx.Response:
    # Connect to the checked address; Host and SNI keep the name so virtual hosts and TLS
    # certificate verification work as if the name had been used.
    pinned = target.url.copy_with(host=str(target.address))
    headers["host"] = target.url.netloc.decode("ascii")
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    where = f"{step.method} {mask_url(target.url)} ({target.address})"
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            return client.request(
                step.method, pinned, headers=headers, content=content, extensions=extensions
            )
    except httpx.TimeoutException:
        raise StepTimeout(
            f"webhook step `{step.id}`: {where} did not answer within {timeout:.0f} s",
            hint="raise the step's `timeout_seconds` or check the receiver",
        ) from None
    except httpx.HTTPError as exc:
        raise StepError(
            f"webhook step `{step.id}`: {where} failed: {type(exc).__name__}: {exc}",
            hint="check that the receiver is up; the step's `on_error` decides about retries",
        ) from None


def _check_status(step: WebhookStep, target: Target, response: httpx.Response) -> None:
    expected = step.expect_status
    if expected is None:
        ok, wanted = response.is_success, "2xx"
    else:
        codes = [expected] if isinstance(expected, int) else expected
        ok, wanted = response.status_code in codes, " or ".join(map(str, codes))
    if ok:
        return
    preview = response.text[:BODY_PREVIEW_CHARS]
    raise StepError(
        f"webhook step `{step.id}`: {step.method} {mask_url(target.url)} answered "
        f"{response.status_code}, expected {wanted}; body: {preview!r}",
        hint="set `expect_status` if this status is fine",
    )


def _json_or_none(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


# ---------------------------------------------------------------- signing and display


def webhook_id(ctx: StepContext) -> str:
    """A ``webhook-id`` that is the same for every retry of this step in this (root) run."""
    digest = hashlib.sha256(f"{ctx.run.root_id}\x00{ctx.step_key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def sign_headers(
    secret: str, msg_id: str, content: bytes, timestamp: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers signing ``content`` with ``secret`` (a ``whsec_...`` key)."""
    moment = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, content.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def _secret(step: WebhookStep, ctx: StepContext) -> str:
    if ctx.resources.webhook_secret is None:
        raise ConfigurationError(
            f"webhook step `{step.id}` has `sign: true` but no webhook secret is available",
            hint="give the playbook's webhook trigger a `secret`",
        )
    return ctx.resources.webhook_secret()


def mask_url(url: httpx.URL) -> str:
    """``url`` for messages: credentials, query values and token-like path parts as ``***``."""
    userinfo = "***@" if url.userinfo else ""
    path = "/".join("***" if _TOKEN_LIKE.match(part) else part for part in url.path.split("/"))
    query = "&".join(f"{key}=***" for key, _ in url.params.multi_items())
    netloc = url.netloc.decode("ascii")
    return f"{url.scheme}://{userinfo}{netloc}{path}" + (f"?{query}" if query else "")
