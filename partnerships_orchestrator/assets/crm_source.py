"""Where a sync reads CRM records: the vendor through its connector, or the sandbox demo CRM.

A source yields :class:`Change` s oldest first, each carrying the cursor to resume after it, so
the sync can commit any prefix of them with its cursor and lose or repeat nothing on the next run
(a change read again is upserted again: same row).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from partnerships_orchestrator.assets.crm_schema import CrmObject, to_utc_naive

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cursor:
    """Where the last committed sync of an asset stopped."""

    at: str | None = None  # ISO time of the newest change landed (UTC)
    last_id: str | None = None  # the last id at that time, for keyset paging
    state: dict[str, Any] = field(default_factory=dict)  # the source's own (demo generation)

    def since(self) -> datetime:
        if self.at is None:
            return EPOCH
        moment = datetime.fromisoformat(self.at)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Change:
    """One record as read, with the position after it."""

    id: str
    values: dict[str, Any]  # vendor property -> vendor value
    raw: dict[str, Any]
    modified_at: datetime | None
    cursor: Cursor
    deleted_at: datetime | None = None
    links: dict[str, str | None] = field(default_factory=dict)  # object type -> associated id

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


class CrmSource(Protocol):
    label: str  # "hubspot connection", "sandbox demo CRM"
    sandbox: bool

    def changes(
        self, obj: CrmObject, properties: list[str], since: Cursor | None
    ) -> Iterator[Change]:
        """Records changed at or after ``since`` (every record when None), oldest first."""
        ...

    def archived(self, obj: CrmObject) -> Iterator[tuple[str, datetime | None]]:
        """(id, when) of records deleted where deletions are not changes (HubSpot archive)."""
        ...

    def final_state(self, since: Cursor | None) -> dict[str, Any]:
        """The source state to keep with the cursor once the whole read has landed."""
        ...


LINK_PAGE = 100  # records whose associations one batch read asks for


def _pages(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    page: list[dict[str, Any]] = []
    for record in records:
        page.append(record)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class _ConnectionSource:
    """A source reading a configured CRM connection (never the sandbox)."""

    sandbox = False

    def __init__(self, crm: Any) -> None:
        self.crm = crm
        self.label = f"{crm.connection} connection"


class HubSpotSource(_ConnectionSource):
    """HubSpot through :class:`HubSpotCRM`: search by last-modified time, archived by listing."""

    def changes(
        self, obj: CrmObject, properties: list[str], since: Cursor | None
    ) -> Iterator[Change]:
        start = since.since() if since else EPOCH
        records = self.crm.iter_modified_since(obj.vendor_name, start, properties)
        for page in _pages(records, LINK_PAGE):
            links = self._links(obj, [str(r["id"]) for r in page])
            for record in page:
                values = dict(record.get("properties") or {})
                modified = to_utc_naive(values.get(obj.modified) or record.get("updatedAt"))
                yield Change(
                    id=str(record["id"]),
                    values=values,
                    raw=record,
                    modified_at=modified,
                    cursor=Cursor(_iso(modified)),
                    links={t: ids.get(str(record["id"])) for t, ids in links.items()},
                )

    def _links(self, obj: CrmObject, ids: list[str]) -> dict[str, dict[str, str]]:
        """object type -> {record id: its associated id} for the object's linked columns
        (search returns no associations: one v4 batch read per page of records)."""
        found: dict[str, dict[str, str]] = {}
        for target in sorted(set(obj.linked.values())):
            associated = self.crm.associated_ids(obj.vendor_name, target, ids)
            found[target] = {k: v[0] for k, v in associated.items() if v}
        return found

    def archived(self, obj: CrmObject) -> Iterator[tuple[str, datetime | None]]:
        for record in self.crm.list_objects(obj.vendor_name, ["hs_object_id"], archived=True):
            yield (
                str(record["id"]),
                to_utc_naive(record.get("archivedAt") or record.get("updatedAt")),
            )

    def final_state(self, since: Cursor | None) -> dict[str, Any]:
        return {}


class SalesforceSource(_ConnectionSource):
    """Salesforce through :class:`SalesforceCRM`: ``queryAll`` by ``SystemModstamp`` and Id, so
    deleted records arrive as changes (``IsDeleted``)."""

    def changes(
        self, obj: CrmObject, properties: list[str], since: Cursor | None
    ) -> Iterator[Change]:
        start = since.since() if since else EPOCH
        # resume at the cursor's whole second, not after its last Id: records of one second
        # need not arrive in Id order, and those read again are upserted again (same rows)
        fields = [p for p in properties if p not in ("Id", "IsDeleted")]
        for record in self.crm.iter_modified_since(
            obj.vendor_name, start, fields, include_deleted=True
        ):
            modified = to_utc_naive(record.get("SystemModstamp"))
            yield Change(
                id=str(record["Id"]),
                values=record,
                raw=record,
                modified_at=modified,
                cursor=Cursor(_iso(modified), str(record["Id"])),
                deleted_at=modified if record.get("IsDeleted") else None,
            )

    def archived(self, obj: CrmObject) -> Iterator[tuple[str, datetime | None]]:
        return iter(())

    def final_state(self, since: Cursor | None) -> dict[str, Any]:
        return {}
