"""From the `kind: connections` document to the Dagster resources playbook ops use.

Each entry names a connector (`email`, `sms`, `slack`, `teams`, `hubspot`, `salesforce`,
`warehouse`, `webhooks`) and its settings; `provider` picks the vendor where a connector has
several. Secret references (`${env:NAME}`, `${vault:path#key}`) stay references in the resources
and are resolved by the connector when it is used, so they never reach run config or the UI.
A channel with no connection is served by the sandbox outbox, and its runs' logs say so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import ValidationError

from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.connectors.outbox import OutboxChannel
from partnerships_orchestrator.errors import ConfigurationError, DeliveryError
from partnerships_orchestrator.resources import PartnershipsResource
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import Connections

CHANNELS = ("email", "sms", "slack", "teams")
CRMS = ("hubspot", "salesforce")
ALLOW_HOSTS_ENV = "PARTNERSHIPS_WEBHOOK_ALLOW_HOSTS"
OUTBOX = "outbox"

# connector -> provider -> "module:Class"; the first provider is the default.
PROVIDERS: dict[str, dict[str, str]] = {
    "email": {
        "sendgrid": "partnerships_orchestrator.connectors.sendgrid:SendGridEmail",
        "mailgun": "partnerships_orchestrator.connectors.mailgun:MailgunEmail",
        OUTBOX: "",
    },
    "sms": {"twilio": "partnerships_orchestrator.connectors.twilio:TwilioSMS", OUTBOX: ""},
    "slack": {"slack": "partnerships_orchestrator.connectors.slack:SlackChat", OUTBOX: ""},
    "teams": {"teams": "partnerships_orchestrator.connectors.teams:TeamsChat", OUTBOX: ""},
    "hubspot": {"hubspot": "partnerships_orchestrator.connectors.hubspot:HubSpotCRM"},
    "salesforce": {"salesforce": "partnerships_orchestrator.connectors.salesforce:SalesforceCRM"},
}
SPECIAL = {"warehouse": ("url",), "webhooks": ("allow_hosts",)}
RENAMED = {"from": "sender", "from_name": "sender_name"}  # document keys that are Python keywords


@dataclass(frozen=True)
class ConnectionProblem:
    """A bad entry: where (path inside the document), what, and what would be valid."""

    loc: tuple[str | int, ...]
    message: str
    hint: str | None = None


def connector_class(connector: str, provider: str) -> type[Any]:
    """The resource class serving ``provider`` for ``connector``."""
    target = PROVIDERS[connector][provider]
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)  # type: ignore[no-any-return]


def provider_of(connector: str, entry: Mapping[str, Any]) -> str:
    return str(entry.get("provider") or next(iter(PROVIDERS[connector])))


def _fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {RENAMED.get(k, k): v for k, v in entry.items() if k != "provider"}


def connection_problems(doc: Connections) -> Iterator[ConnectionProblem]:
    """Every problem in a connections document, without resolving any secret."""
    for name, entry in doc.connections.items():
        base = ("connections", name)
        if name in SPECIAL:
            for key in entry:
                if key not in SPECIAL[name]:
                    yield ConnectionProblem(
                        (*base, key),
                        f"unknown key `{key}` for `{name}`",
                        f"valid keys: {', '.join(SPECIAL[name])}",
                    )
            continue
        if name not in PROVIDERS:
            valid = ", ".join([*PROVIDERS, *SPECIAL])
            yield ConnectionProblem(
                base, f"unknown connector `{name}`", f"valid connectors: {valid}"
            )
            continue
        provider = provider_of(name, entry)
        if provider not in PROVIDERS[name]:
            yield ConnectionProblem(
                (*base, "provider"),
                f"unknown provider `{provider}` for `{name}`",
                f"valid providers: {', '.join(PROVIDERS[name])}",
            )
            continue
        if provider == OUTBOX:
            continue
        try:
            connector_class(name, provider)(**_fields(entry))
        except ValidationError as exc:
            yield from _validation_problems(base, exc, connector_class(name, provider))


def _validation_problems(
    base: tuple[str, ...], exc: ValidationError, cls: type[Any]
) -> Iterator[ConnectionProblem]:
    back = {v: k for k, v in RENAMED.items()}
    valid = ", ".join(back.get(f, f) for f in cls.model_fields)
    for error in exc.errors():
        loc = tuple(back.get(str(p), p) for p in error["loc"])
        yield ConnectionProblem((*base, *loc), error["msg"], f"keys of this connector: {valid}")


def _build(name: str, entry: Mapping[str, Any]) -> Any:
    provider = provider_of(name, entry)
    try:
        return connector_class(name, provider)(**_fields(entry))
    except ValidationError as exc:
        first = next(
            _validation_problems(("connections", name), exc, connector_class(name, provider))
        )
        raise ConfigurationError(
            f"{'.'.join(map(str, first.loc))}: {first.message}", first.hint
        ) from None


def webhook_allow_hosts(connections: Connections | None) -> list[str]:
    """Hosts (or CIDRs) outbound webhook steps may reach even though they are private."""
    entry = connections.connections.get("webhooks", {}) if connections else {}
    from_env = [h.strip() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()]
    return [*entry.get("allow_hosts", []), *from_env]


def configured(connections: Connections | None) -> dict[str, dict[str, Any]]:
    """The connector entries of the document that have a provider (not special, not outbox)."""
    entries = connections.connections if connections else {}
    return {
        name: entry
        for name, entry in entries.items()
        if name in PROVIDERS and provider_of(name, entry) != OUTBOX
    }


_CONNECTIONS_KIND = re.compile(r"^kind:\s*[\"']?connections\b", re.M)


def broken_connections(invalid_files: Mapping[str, Sequence[Any]]) -> list[str]:
    """The invalid files that are connections documents, each with its first problem."""
    broken = []
    for file, problems in invalid_files.items():
        try:
            text = Path(file).read_text(errors="replace")
        except OSError:
            continue
        if _CONNECTIONS_KIND.search(text):
            first = str(problems[0]) if problems else file
            broken.append(first)
    return broken


class UnavailableChannel(dg.ConfigurableResource):
    """Stands for a channel while the connections document is invalid: sending fails loudly
    instead of quietly falling back to the sandbox outbox."""

    channel: str
    reason: str

    @property
    def provider_name(self) -> str:
        return "unavailable"

    def send(self, message: Any) -> Any:
        raise DeliveryError(
            f"the {self.channel} connection is unavailable: {self.reason}",
            hint="fix the connections document (`partnerships validate` lists its problems)",
            retryable=False,
        )

    def check(self) -> dict[str, Any]:
        return {"ok": False, "detail": self.reason}


def build_resources(
    settings: Settings, connections: Connections | None, broken: Sequence[str] = ()
) -> dict[str, Any]:
    """The resources every playbook job binds: configured vendors, the outbox for the rest.

    While a connections document is invalid (``broken``), every channel refuses to send.
    """
    warehouse = (connections.connections.get("warehouse", {}) if connections else {}).get("url")
    resources: dict[str, Any] = {
        RESOURCE_KEY: PartnershipsResource.from_settings(
            settings, webhook_allow_hosts(connections), warehouse_url=warehouse
        ),
    }
    for channel in CHANNELS:
        resources[channel] = (
            UnavailableChannel(channel=channel, reason=broken[0])
            if broken
            else OutboxChannel(channel=channel, state_url=settings.state_url)
        )
    for name, entry in configured(connections).items():
        resources[name] = _build(name, entry)
    return resources
