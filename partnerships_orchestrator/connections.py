"""From the `kind: connections` document to the Dagster resources playbook ops use.

A channel with no connection configured is served by the sandbox outbox, so the product works on a
fresh machine; the runs' logs say so.
"""

from __future__ import annotations

import os
from typing import Any

from partnerships_orchestrator.connectors.outbox import OutboxChannel
from partnerships_orchestrator.resources import PartnershipsResource
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import Connections

CHANNELS = ("email", "sms", "slack", "teams")
ALLOW_HOSTS_ENV = "PARTNERSHIPS_WEBHOOK_ALLOW_HOSTS"


def webhook_allow_hosts(connections: Connections | None) -> list[str]:
    """Hosts (or CIDRs) outbound webhook steps may reach even though they are private."""
    from_doc = (connections.connections.get("webhooks", {}) if connections else {}).get(
        "allow_hosts", []
    )
    from_env = [h.strip() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()]
    return [*from_doc, *from_env]


def build_resources(settings: Settings, connections: Connections | None) -> dict[str, Any]:
    """The resources every playbook job binds (what an op needs, it finds here)."""
    resources: dict[str, Any] = {
        "partnerships": PartnershipsResource.from_settings(
            settings, webhook_allow_hosts(connections)
        ),
    }
    for channel in CHANNELS:
        resources[channel] = OutboxChannel(channel=channel, state_url=settings.state_url)
    return resources
