"""Which CRM objects a `kind: sync` document may name, and how each lands as a warehouse table.

One :class:`CrmObject` per (provider, object): the vendor's object name, the property incremental
syncs follow, the properties a sync may ask for with their column type, and the ones landed when
the document lists none. The table of a sync asset has

- ``id`` (text, primary key): the vendor's record id;
- one typed column per property, named after it (HubSpot names as they are; Salesforce field
  names in snake case: ``AccountId`` -> ``account_id``, ``Partner_Tier__c`` -> ``partner_tier__c``);
- ``modified_at`` (the vendor's last-modified time), ``is_deleted`` and ``deleted_at`` (archived in
  HubSpot, deleted in Salesforce), ``synced_at`` (when this row was last written);
- ``raw``: the record as the vendor returned it, as JSON text.

HubSpot deals also always land two derived columns:

- ``stage`` (text): the deal stage for queries, ``dealstage`` with HubSpot's closed stages
  (``closedwon``, ``closedlost``) read as ``closed``, so ``stage != 'closed'`` is the open
  pipeline (``dealstage`` keeps won and lost apart);
- ``company_id`` (text): the id of the deal's associated company (its primary company when it
  has several, else the lowest id; null when none), matching ``id`` of the companies table. It
  is read with the deal; an association changed without the deal being modified shows after the
  deal next changes or on a full refresh.

Timestamps are naive UTC, like the rest of the warehouse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

ColumnType = Literal["text", "number", "integer", "boolean", "timestamp", "date"]
BOOKKEEPING_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("modified_at", "timestamp"),
    ("is_deleted", "boolean"),
    ("deleted_at", "timestamp"),
    ("synced_at", "timestamp"),
    ("raw", "text"),
)


@dataclass(frozen=True)
class CrmObject:
    """One CRM object type of one provider, as a sync lands it."""

    provider: str
    name: str  # as documents name it: `contacts`
    vendor_name: str  # as the vendor's API names it: `contacts`, `Contact`
    modified: str  # the property incremental reads follow
    properties: dict[str, ColumnType]  # every property a document may list
    default: tuple[str, ...]  # landed when the document lists none
    derived: dict[str, Derived] = field(default_factory=dict)  # column -> how it is computed
    linked: dict[str, str] = field(default_factory=dict)  # column -> associated object's id

    def wanted(self, listed: list[str] | None) -> list[str]:
        """The properties to read: those listed (or the default), plus the modified one and
        those derived columns are computed from."""
        chosen = list(listed) if listed else list(self.default)
        for extra in [self.modified, *(d.source for d in self.derived.values())]:
            if extra not in chosen:
                chosen.append(extra)
        return chosen

    def columns(self, listed: list[str] | None) -> list[tuple[str, str, ColumnType]]:
        """(column, property, type) for each property landed, in order (not the derived and
        linked columns)."""
        return [(column_name(self.provider, p), p, self.properties[p]) for p in self.wanted(listed)]

    def extra_columns(self) -> list[tuple[str, ColumnType]]:
        """(column, type) of the derived and linked columns, landed whatever is listed."""
        derived = [(c, d.kind) for c, d in self.derived.items()]
        return derived + [(c, "text") for c in self.linked]

    def derive(self, values: dict[str, Any], links: dict[str, str | None]) -> dict[str, Any]:
        """The derived and linked columns' values of one record."""
        row = {c: d.compute(values.get(d.source)) for c, d in self.derived.items()}
        row.update({c: links.get(target) for c, target in self.linked.items()})
        return row


@dataclass(frozen=True)
class Derived:
    """A column computed from one vendor property of the same record."""

    source: str
    kind: ColumnType
    compute: Callable[[Any], Any]


HS_CLOSED_STAGES = frozenset({"closedwon", "closedlost"})


def deal_stage(dealstage: Any) -> str | None:
    """The ``stage`` column: ``closed`` for HubSpot's closed stages, else the stage itself."""
    if dealstage in (None, ""):
        return None
    text = str(dealstage)
    return "closed" if text in HS_CLOSED_STAGES else text


def column_name(provider: str, prop: str) -> str:
    """The warehouse column of a vendor property (Salesforce field names in snake case)."""
    if provider == "salesforce":
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", prop).lower()
    return prop.lower()


_HS_CONTACTS: dict[str, ColumnType] = {
    "email": "text",
    "firstname": "text",
    "lastname": "text",
    "company": "text",
    "phone": "text",
    "jobtitle": "text",
    "lifecyclestage": "text",
    "partner_tier": "text",
    "hs_object_id": "text",
    "createdate": "timestamp",
    "lastmodifieddate": "timestamp",
}
_HS_COMPANIES: dict[str, ColumnType] = {
    "name": "text",
    "domain": "text",
    "industry": "text",
    "city": "text",
    "partner_key": "text",
    "partner_tier": "text",
    "hs_object_id": "text",
    "createdate": "timestamp",
    "hs_lastmodifieddate": "timestamp",
}
_HS_DEALS: dict[str, ColumnType] = {
    "dealname": "text",
    "amount": "number",
    "dealstage": "text",
    "pipeline": "text",
    "closedate": "timestamp",
    "partner_key": "text",
    "hs_object_id": "text",
    "createdate": "timestamp",
    "hs_lastmodifieddate": "timestamp",
}
_SF_ACCOUNT: dict[str, ColumnType] = {
    "Name": "text",
    "Industry": "text",
    "Type": "text",
    "Website": "text",
    "AnnualRevenue": "number",
    "BillingCountry": "text",
    "NumberOfEmployees": "integer",
    "Partner_Tier__c": "text",
    "External_Id__c": "text",
    "CreatedDate": "timestamp",
    "LastModifiedDate": "timestamp",
    "SystemModstamp": "timestamp",
}
_SF_CONTACT: dict[str, ColumnType] = {
    "FirstName": "text",
    "LastName": "text",
    "Email": "text",
    "Title": "text",
    "Phone": "text",
    "AccountId": "text",
    "MailingCountry": "text",
    "External_Id__c": "text",
    "CreatedDate": "timestamp",
    "LastModifiedDate": "timestamp",
    "SystemModstamp": "timestamp",
}
_SF_OPPORTUNITY: dict[str, ColumnType] = {
    "Name": "text",
    "AccountId": "text",
    "Amount": "number",
    "StageName": "text",
    "CloseDate": "date",
    "Probability": "number",
    "Type": "text",
    "IsClosed": "boolean",
    "IsWon": "boolean",
    "CreatedDate": "timestamp",
    "LastModifiedDate": "timestamp",
    "SystemModstamp": "timestamp",
}

OBJECTS: dict[str, dict[str, CrmObject]] = {
    "hubspot": {
        "contacts": CrmObject(
            "hubspot",
            "contacts",
            "contacts",
            "lastmodifieddate",
            _HS_CONTACTS,
            (
                "email",
                "firstname",
                "lastname",
                "company",
                "jobtitle",
                "lifecyclestage",
                "partner_tier",
                "createdate",
            ),
        ),  # fmt: skip
        "companies": CrmObject(
            "hubspot",
            "companies",
            "companies",
            "hs_lastmodifieddate",
            _HS_COMPANIES,
            ("name", "domain", "industry", "city", "partner_key", "partner_tier", "createdate"),
        ),
        "deals": CrmObject(
            "hubspot",
            "deals",
            "deals",
            "hs_lastmodifieddate",
            _HS_DEALS,
            (
                "dealname",
                "amount",
                "dealstage",
                "pipeline",
                "closedate",
                "partner_key",
                "createdate",
            ),
            derived={"stage": Derived("dealstage", "text", deal_stage)},
            linked={"company_id": "companies"},
        ),  # fmt: skip
    },
    "salesforce": {
        "accounts": CrmObject(
            "salesforce",
            "accounts",
            "Account",
            "SystemModstamp",
            _SF_ACCOUNT,
            (
                "Name",
                "Industry",
                "Website",
                "AnnualRevenue",
                "Partner_Tier__c",
                "External_Id__c",
                "CreatedDate",
            ),
        ),  # fmt: skip
        "contacts": CrmObject(
            "salesforce",
            "contacts",
            "Contact",
            "SystemModstamp",
            _SF_CONTACT,
            (
                "FirstName",
                "LastName",
                "Email",
                "Title",
                "AccountId",
                "External_Id__c",
                "CreatedDate",
            ),
        ),  # fmt: skip
        "opportunities": CrmObject(
            "salesforce",
            "opportunities",
            "Opportunity",
            "SystemModstamp",
            _SF_OPPORTUNITY,
            (
                "Name",
                "AccountId",
                "Amount",
                "StageName",
                "CloseDate",
                "Probability",
                "IsClosed",
                "IsWon",
                "CreatedDate",
            ),
        ),  # fmt: skip
    },
}


def crm_object(provider: str, name: str) -> CrmObject:
    return OBJECTS[provider][name]


# ---------------------------------------------------------------- values


def to_utc_naive(value: Any) -> datetime | None:
    """A vendor timestamp (ISO text, epoch milliseconds, datetime) as naive UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value) / 1000, UTC).replace(tzinfo=None)
    else:
        text = str(value).replace("Z", "+00:00")
        if re.search(r"[+-]\d{4}$", text):  # Salesforce's +0000
            text = f"{text[:-2]}:{text[-2:]}"
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def convert(value: Any, kind: ColumnType) -> Any:
    """A vendor value in the column's type (``None`` and empty text stay ``None``)."""
    if value is None or (value == "" and kind != "text"):
        return None
    if kind == "text":
        return value if isinstance(value, str) else str(value)
    if kind == "number":
        return float(value)
    if kind == "integer":
        return int(float(value))
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "timestamp":
        return to_utc_naive(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    moment = to_utc_naive(value)
    return moment.date() if moment else None
