"""The sandbox CRM: what a sync reads when its provider has no connection configured.

Deterministic records built from the same generator as the demo warehouse (partners become
companies / accounts, their contacts contacts, their deals deals / opportunities, keyed by the
warehouse ids in ``partner_key`` / ``External_Id__c``), so datasets can join CRM tables with the
warehouse; each HubSpot deal is associated with its partner's company (``company_id``). The sandbox moves on one *generation* per incremental sync: a few records change,
a few are created and a few are deleted (archived), always the same ones for the same generation,
so incremental behaviour shows in the Dagster UI run after run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from partnerships_orchestrator.assets.crm_schema import CrmObject, to_utc_naive
from partnerships_orchestrator.assets.crm_source import Change, Cursor
from partnerships_orchestrator.demo import generate_demo_rows

SEED = 7
PARTNERS = 300
UPDATED_PER_GENERATION = 0.04
CREATED_PER_GENERATION = 0.01
DELETED_PER_GENERATION = 0.005
HS_STAGES = {
    "prospecting": "appointmentscheduled",
    "qualification": "qualifiedtobuy",
    "proposal": "presentationscheduled",
    "negotiation": "contractsent",
    "closed_won": "closedwon",
    "closed_lost": "closedlost",
}
SF_STAGES = {
    "prospecting": ("Prospecting", 10),
    "qualification": ("Qualification", 25),
    "proposal": ("Proposal/Price Quote", 50),
    "negotiation": ("Negotiation/Review", 75),
    "closed_won": ("Closed Won", 100),
    "closed_lost": ("Closed Lost", 0),
}
Record = dict[str, Any]
LINK = "@"  # record keys naming an associated object type (a deal's "@companies": company id)


def _iso(moment: Any) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return moment.isoformat() if isinstance(moment, date) else str(moment)


@cache
def _warehouse_rows(anchor: date) -> dict[str, list[Record]]:
    return generate_demo_rows(partners=PARTNERS, seed=SEED, today=anchor)


def _base_records(provider: str, name: str, anchor: date) -> dict[str, Record]:
    """id -> properties (vendor names) of the sandbox at generation 0."""
    rows = _warehouse_rows(anchor)
    partners = {p["id"]: p for p in rows["partners"]}
    out: dict[str, Record] = {}
    if provider == "hubspot":
        company_ids = {p["id"]: str(5_000_000 + n) for n, p in enumerate(rows["partners"])}
        if name == "companies":
            for p in rows["partners"]:
                out[company_ids[p["id"]]] = {
                    "name": p["name"],
                    "domain": (p["website"] or "").removeprefix("https://"),
                    "industry": p["industry"],
                    "city": p["country"],
                    "partner_key": p["id"],
                    "partner_tier": p["tier"],
                    "createdate": _iso(p["created_at"]),
                    "hs_lastmodifieddate": _iso(p["updated_at"]),
                }
        elif name == "contacts":
            for n, c in enumerate(rows["contacts"]):
                p = partners[c["partner_id"]]
                out[str(7_000_000 + n)] = {
                    "email": c["email"],
                    "firstname": c["first_name"],
                    "lastname": c["last_name"],
                    "company": p["name"],
                    "phone": c["phone"],
                    "jobtitle": c["title"],
                    "lifecyclestage": "customer" if p["status"] == "active" else "lead",
                    "partner_tier": p["tier"],
                    "createdate": _iso(c["created_at"]),
                    "lastmodifieddate": _iso(c["created_at"]),
                }
        elif name == "deals":
            for n, d in enumerate(rows["deals"]):
                out[str(9_000_000 + n)] = {
                    "dealname": d["name"],
                    "amount": str(d["amount"]),
                    "dealstage": HS_STAGES[d["stage"]],
                    "pipeline": "default",
                    "closedate": _iso(d["close_date"]),
                    "partner_key": d["partner_id"],
                    "createdate": _iso(d["created_at"]),
                    "hs_lastmodifieddate": _iso(d["updated_at"]),
                    LINK + "companies": company_ids[d["partner_id"]],
                }
        return out
    account_ids = {p["id"]: f"001DEMO{n:08d}AAA" for n, p in enumerate(rows["partners"])}
    if name == "accounts":
        for n, p in enumerate(rows["partners"]):
            out[account_ids[p["id"]]] = {
                "Name": p["name"],
                "Industry": p["industry"],
                "Type": "Partner",
                "Website": p["website"],
                "AnnualRevenue": float(1_000_000 + (n * 7919) % 50_000_000),
                "BillingCountry": p["country"],
                "NumberOfEmployees": 20 + (n * 131) % 5000,
                "Partner_Tier__c": p["tier"],
                "External_Id__c": p["id"],
                "CreatedDate": _iso(p["created_at"]),
                "LastModifiedDate": _iso(p["updated_at"]),
            }
    elif name == "contacts":
        for n, c in enumerate(rows["contacts"]):
            out[f"003DEMO{n:08d}AAA"] = {
                "FirstName": c["first_name"],
                "LastName": c["last_name"],
                "Email": c["email"],
                "Title": c["title"],
                "Phone": c["phone"],
                "AccountId": account_ids[c["partner_id"]],
                "MailingCountry": partners[c["partner_id"]]["country"],
                "External_Id__c": c["id"],
                "CreatedDate": _iso(c["created_at"]),
                "LastModifiedDate": _iso(c["created_at"]),
            }
    elif name == "opportunities":
        for n, d in enumerate(rows["deals"]):
            stage, probability = SF_STAGES[d["stage"]]
            out[f"006DEMO{n:08d}AAA"] = {
                "Name": d["name"],
                "AccountId": account_ids[d["partner_id"]],
                "Amount": d["amount"],
                "StageName": stage,
                "CloseDate": _iso(d["close_date"]),
                "Probability": probability,
                "Type": "New Business",
                "IsClosed": d["stage"].startswith("closed"),
                "IsWon": d["stage"] == "closed_won",
                "CreatedDate": _iso(d["created_at"]),
                "LastModifiedDate": _iso(d["updated_at"]),
            }
    return out


def _mutate(obj: CrmObject, record: Record, rng: random.Random) -> Record:
    """A plausible edit: amounts move, stages advance, people change titles."""
    changed = dict(record)
    for key in ("amount", "Amount", "AnnualRevenue"):
        if key in changed and changed[key] is not None:
            value = float(changed[key]) * rng.choice((0.9, 1.1, 1.25))
            changed[key] = str(round(value, 2)) if key == "amount" else round(value, 2)
    if "jobtitle" in changed or "Title" in changed:
        key = "jobtitle" if "jobtitle" in changed else "Title"
        changed[key] = rng.choice(("Partner Manager", "Head of Alliances", "VP Partnerships"))
    if "lifecyclestage" in changed:
        changed["lifecyclestage"] = rng.choice(("lead", "opportunity", "customer"))
    if "partner_tier" in changed:
        changed["partner_tier"] = rng.choice(("gold", "silver", "bronze"))
    return changed


class DemoCRM:
    """The sandbox CRM of one provider (see the module docstring)."""

    sandbox = True

    def __init__(self, provider: str, anchor: date | None = None) -> None:
        self.provider = provider
        self.label = "sandbox demo CRM"
        self._anchor = anchor

    def _anchor_of(self, since: Cursor) -> date:
        text = since.state.get("anchor")
        return date.fromisoformat(text) if text else (self._anchor or date.today())

    def generation(self, since: Cursor) -> int:
        """The generation a read from ``since`` returns: a snapshot of the current one for a
        first or full read, the next one for an incremental read."""
        current = int(since.state.get("generation", 0))
        return current if since.at is None else current + 1

    def changes(
        self, obj: CrmObject, properties: list[str], since: Cursor | None
    ) -> Iterator[Change]:
        since = since or Cursor()
        anchor = self._anchor_of(since)
        target = self.generation(since)
        world, touched, deleted = self._world(obj, anchor, target)
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        keep = {*properties, obj.modified}
        if since.at is None:  # a snapshot: every live record, as it is now
            items = sorted(
                world.items(), key=lambda kv: (kv[1].get(_modified_key(obj)) or "", kv[0])
            )
            for record_id, record in items:
                if record_id in deleted:
                    continue
                yield self._change(obj, record_id, record, keep, since, None, None)
            return
        for record_id in sorted(touched.get(target, ())):
            gone = deleted.get(record_id) == target
            yield self._change(
                obj, record_id, world[record_id], keep, since, now, now if gone else None
            )

    def _change(
        self,
        obj: CrmObject,
        record_id: str,
        record: Record,
        keep: set[str],
        since: Cursor,
        modified: datetime | None,
        deleted_at: datetime | None,
    ) -> Change:

        values = {k: v for k, v in record.items() if k in keep}
        if modified is not None:
            values[_modified_key(obj)] = _iso(modified)
        stamp = to_utc_naive(values.get(_modified_key(obj)))
        values[obj.modified] = values.get(_modified_key(obj))
        return Change(
            id=record_id,
            values=values,
            raw={"id": record_id, "properties": values, "sandbox": True},
            modified_at=stamp,
            cursor=Cursor(stamp.isoformat() if stamp else since.at, record_id, since.state),
            deleted_at=deleted_at,
            links={k.removeprefix(LINK): v for k, v in record.items() if k.startswith(LINK)},
        )

    def archived(self, obj: CrmObject) -> Iterator[tuple[str, datetime | None]]:
        return iter(())  # deletions arrive as changes

    def final_state(self, since: Cursor | None) -> dict[str, Any]:
        since = since or Cursor()
        return {"generation": self.generation(since), "anchor": self._anchor_of(since).isoformat()}

    def _world(
        self, obj: CrmObject, anchor: date, generation: int
    ) -> tuple[dict[str, Record], dict[int, set[str]], dict[str, int]]:
        """Records at ``generation``, the ids each generation touched, and when each deleted one
        was deleted."""
        world = dict(_base_records(self.provider, obj.name, anchor))
        base_ids = sorted(world)
        touched: dict[int, set[str]] = {}
        deleted: dict[str, int] = {}
        for g in range(1, generation + 1):
            rng = random.Random(f"{self.provider}:{obj.name}:{g}")  # nosec B311 # demo CRM records, seeded so they are reproducible
            live = [i for i in base_ids if i not in deleted]
            if not live:
                break
            changed: set[str] = set()
            for record_id in rng.sample(live, max(1, int(len(live) * UPDATED_PER_GENERATION))):
                world[record_id] = _mutate(obj, world[record_id], rng)
                changed.add(record_id)
            for n in range(max(1, int(len(live) * CREATED_PER_GENERATION))):
                template = world[rng.choice(live)]
                new_id = (
                    f"{base_ids[0][:7]}G{g:04d}N{n:04d}"
                    if self.provider == "salesforce"
                    else str(8_000_000 + g * 1000 + n)
                )
                world[new_id] = _mutate(obj, template, rng)
                base_ids.append(new_id)
                changed.add(new_id)
            for record_id in rng.sample(live, max(1, int(len(live) * DELETED_PER_GENERATION))):
                deleted[record_id] = g
                changed.add(record_id)
            touched[g] = changed
        return world, touched, deleted


def _modified_key(obj: CrmObject) -> str:
    """The property the sandbox keeps the modified time in (Salesforce: LastModifiedDate)."""
    return "LastModifiedDate" if obj.provider == "salesforce" else obj.modified
