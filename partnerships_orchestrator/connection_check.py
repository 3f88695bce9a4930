"""`partnerships connections check`: does each configured connection authenticate?"""

from __future__ import annotations

from typing import Any

from partnerships_orchestrator.compiler.naming import RESOURCE_KEY
from partnerships_orchestrator.connections import (
    CHANNELS,
    broken_connections,
    build_resources,
    configured,
    provider_of,
)
from partnerships_orchestrator.connectors.shared_ratelimit import shared_state_url
from partnerships_orchestrator.errors import PartnershipsError
from partnerships_orchestrator.project import Project


def check_connections(project: Project) -> list[dict[str, Any]]:
    """One result per connector: configured ones are called, the others say they use the outbox."""
    doc = project.connections
    entries = configured(doc)
    results: list[dict[str, Any]] = [
        {"connection": "connections", "provider": "", "ok": False, "detail": problem}
        for problem in broken_connections(project.catalog.invalid_files)
    ]
    try:
        resources = build_resources(project.settings, doc)
    except PartnershipsError as exc:
        return [{"connection": "connections", "provider": "", "ok": False, "detail": str(exc)}]
    for name, entry in entries.items():
        outcome = _check(resources[name])
        outcome["rate_limit"] = rate_limit_text(outcome.get("rate_limit"), resources[name])
        results.append({"connection": name, "provider": provider_of(name, entry), **outcome})
    for channel in CHANNELS:
        if channel not in entries:
            results.append(
                {
                    "connection": channel,
                    "provider": "outbox",
                    "ok": True,
                    "detail": "sandbox: messages are kept locally (`partnerships outbox`)",
                }
            )
    results.append(_check_warehouse(resources[RESOURCE_KEY]))
    return results


def rate_limit_text(reported: Any, resource: Any) -> str:
    """One line on the pace this connection keeps (and what the vendor says is left)."""
    client = reported.get("client") if isinstance(reported, dict) else None
    if client is None:
        limit: Any = getattr(resource, "rate_limit", None)
        client = limit.model_dump() if limit is not None and hasattr(limit, "model_dump") else None
    parts = []
    if isinstance(client, dict) and client.get("requests"):
        parts.append(f"{client['requests']} per {client['per_seconds']:g} s")
    interval = getattr(resource, "per_channel_interval_seconds", None)
    if interval:
        parts.append(f"1 per {interval:g} s per channel")
    per_minute = getattr(resource, "workspace_messages_per_minute", None)
    if per_minute:
        parts.append(f"{per_minute} per minute in all")
    interval = getattr(resource, "interval_seconds", None)
    if interval:
        parts.append(f"1 per {interval:g} s")
    if parts and shared_state_url() is not None:
        parts[-1] += ", shared by every worker"
    vendor = reported.get("vendor") if isinstance(reported, dict) else None
    if isinstance(vendor, dict) and vendor.get("remaining") is not None:
        parts.append(f"vendor: {vendor['remaining']}/{vendor.get('limit', '?')} left")
    if isinstance(reported, str):
        parts.append(reported)
    return "; ".join(parts) or "unpaced"


def _check(resource: Any) -> dict[str, Any]:
    try:
        outcome = dict(resource.check())
    except PartnershipsError as exc:  # secrets are never part of these messages
        return {"ok": False, "detail": str(exc)}
    outcome.setdefault("ok", True)
    return outcome


def _check_warehouse(resource: Any) -> dict[str, Any]:
    from partnerships_orchestrator.resources import resolve_warehouse_url
    from partnerships_orchestrator.warehouse import mask_url

    try:
        url = resolve_warehouse_url(resource.warehouse_url, resource.default_warehouse_url)
        with resource.warehouse().connect():
            pass
    except PartnershipsError as exc:
        return {
            "connection": "warehouse",
            "provider": "sqlalchemy",
            "ok": False,
            "detail": str(exc),
        }
    return {
        "connection": "warehouse",
        "provider": url.split(":", 1)[0],
        "ok": True,
        "detail": mask_url(url),
    }
