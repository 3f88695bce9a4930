"""CRM syncs against the vendors' emulators, on SQLite and on a real PostgreSQL.

The table is compared with the emulator's own records after every run: each record exactly once,
its current values, archived / deleted ones marked. A sync SIGKILLed mid-run (in a subprocess)
followed by a normal run loses and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from partnerships_orchestrator.assets.crm_schema import crm_object
from partnerships_orchestrator.assets.crm_source import HubSpotSource, SalesforceSource
from partnerships_orchestrator.assets.sync import read_cursor, run_sync
from partnerships_orchestrator.connectors.hubspot import HubSpotCRM
from partnerships_orchestrator.connectors.salesforce import SalesforceCRM
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator, iso_ms
from partnerships_orchestrator_tests.emulators.salesforce import SalesforceEmulator

RECORDS = 12_000  # past HubSpot's 10,000-result search cap, 60 search pages
FAST = {"requests": 10_000, "per_seconds": 1}
BULK = {"search_limit": 10_000, "ten_secondly_limit": 100_000}
START_MS = 1_700_000_000_000
REPO = Path(__file__).resolve().parents[2]


def hubspot_crm(hubspot: HubSpotEmulator, **fields: Any) -> HubSpotCRM:
    fields.setdefault("rate_limit", FAST)
    fields.setdefault("search_rate_limit", FAST)
    return HubSpotCRM(
        base_url=hubspot.base_url,
        token=hubspot.issue_private_token(),
        backoff_seconds=0.01,
        backoff_max_seconds=0.05,
        **fields,
    )


def table_rows(engine: sa.Engine, table: str, *columns: str) -> dict[str, tuple[Any, ...]]:
    """id -> (columns..., is_deleted); fails on a duplicated id."""
    names = ", ".join(["id", *columns, "is_deleted"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {names} FROM {table}")).all()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids in the table"
    return {r[0]: (*r[1:-1], bool(r[-1])) for r in rows}


def hubspot_truth(hubspot: HubSpotEmulator) -> dict[str, tuple[Any, ...]]:
    with hubspot.lock:
        return {
            str(r.id): (r.properties.get("email"), r.properties.get("firstname"), r.archived)
            for r in hubspot.state.objects["contacts"].values()
        }


def change_contacts(hubspot: HubSpotEmulator, stamp_ms: int) -> dict[str, int]:
    """Update 300 contacts, archive 50, create 100 (all modified at ``stamp_ms``)."""
    with hubspot.lock:
        records = sorted(hubspot.state.objects["contacts"].values(), key=lambda r: r.id)
        for record in records[100:400]:
            record.properties["firstname"] = f"Renamed{record.id}"
            hubspot._touch("contacts", record, stamp_ms)
        for record in records[1000:1050]:
            record.archived = True
            hubspot._touch("contacts", record, stamp_ms)
    hubspot.seed("contacts", 100, start_ms=stamp_ms, step_ms=1)
    return {"updated": 300, "archived": 50, "created": 100}


def test_hubspot_sync_lands_every_record_then_only_changes(
    hubspot: HubSpotEmulator, warehouse: sa.Engine
) -> None:
    hubspot.configure(**BULK)
    hubspot.seed("contacts", RECORDS, start_ms=START_MS, step_ms=1000, tie_every=7)
    crm = hubspot_crm(hubspot)
    contacts = crm_object("hubspot", "contacts")
    try:
        first = run_sync(
            warehouse, HubSpotSource(crm), contacts, "hubspot_contacts", batch_size=2500
        )
        assert (first.seen, first.inserted, first.updated, first.deleted) == (
            RECORDS,
            RECORDS,
            0,
            0,
        )
        assert first.batches == 5
        assert table_rows(warehouse, "hubspot_contacts", "email", "firstname") == hubspot_truth(
            hubspot
        )

        later = START_MS + RECORDS * 1000 + 60_000
        change_contacts(hubspot, later)
        second = run_sync(warehouse, HubSpotSource(crm), contacts, "hubspot_contacts")
        # updated + created, and the record(s) at the cursor's instant read again (an upsert);
        # search never returns archived records: they are listed apart
        assert 400 < second.seen <= 410
        assert (second.inserted, second.updated, second.deleted) == (100, second.seen - 100, 50)
        assert table_rows(warehouse, "hubspot_contacts", "email", "firstname") == hubspot_truth(
            hubspot
        )
        cursor = read_cursor(warehouse, "hubspot_contacts")
        assert cursor is not None and cursor.at is not None
        assert cursor.at.startswith(iso_ms(later + 99)[:19])

        third = run_sync(warehouse, HubSpotSource(crm), contacts, "hubspot_contacts")
        assert third.seen <= 100  # only the last instant is read again
        assert (third.inserted, third.deleted) == (0, 0)
    finally:
        crm.close()


def test_hubspot_deals_land_stage_and_their_company_first_and_incrementally(
    hubspot: HubSpotEmulator, warehouse: sa.Engine
) -> None:
    companies = hubspot.seed("companies", 5, start_ms=START_MS)
    deals = hubspot.seed("deals", 250, start_ms=START_MS, step_ms=1000)  # 3 association pages
    for n, deal in enumerate(deals[:240]):  # the last 10 have no company
        hubspot.associate("deals", deal, "companies", companies[n % 5])
    hubspot.associate("deals", deals[7], "companies", companies[4], primary=True)
    crm = hubspot_crm(hubspot)
    obj = crm_object("hubspot", "deals")

    def truth() -> dict[str, tuple[Any, ...]]:
        with hubspot.lock:
            records = hubspot.state.objects["deals"].values()
            out = {}
            for r in records:
                linked = r.associations.get("companies") or {}
                primary = [c for c, p in linked.items() if p]
                company = (primary or sorted(linked) or [None])[0]
                stage = r.properties["dealstage"]
                out[str(r.id)] = (
                    stage,
                    "closed" if stage in ("closedwon", "closedlost") else stage,
                    None if company is None else str(company),
                    False,
                )
            return out

    try:
        first = run_sync(warehouse, HubSpotSource(crm), obj, "hubspot_deals")
        assert first.inserted == 250
        landed = table_rows(warehouse, "hubspot_deals", "dealstage", "stage", "company_id")
        assert landed == truth()
        assert landed[deals[7]][2] == companies[4]  # the primary company, not the lowest id
        assert {v[1] for v in landed.values()} == {
            "appointmentscheduled",
            "qualifiedtobuy",
            "closed",
        }
        assert sum(1 for v in landed.values() if v[2] is None) == 10
        calls = hubspot.requests("/crm/v4/associations/deals/companies/batch/read")
        assert [len(r.json()["inputs"]) for r in calls] == [100, 100, 50]

        # a deal moved to another company and closed, one gaining a company: read on change
        later = START_MS + 3_600_000
        hubspot.associate("deals", deals[245], "companies", companies[1])
        with hubspot.lock:
            for deal_id, stage in ((deals[0], "closedlost"), (deals[245], "contractsent")):
                record = hubspot.state.objects["deals"][int(deal_id)]
                record.properties["dealstage"] = stage
                hubspot._touch("deals", record, later)
            moved = hubspot.state.objects["deals"][int(deals[0])]
            moved.associations["companies"] = {int(companies[3]): True}
        second = run_sync(warehouse, HubSpotSource(crm), obj, "hubspot_deals")
        assert second.seen >= 2 and second.inserted == 0
        landed = table_rows(warehouse, "hubspot_deals", "dealstage", "stage", "company_id")
        assert landed == truth()
        assert landed[deals[0]] == ("closedlost", "closed", companies[3], False)
        assert landed[deals[245]] == ("contractsent", "contractsent", companies[1], False)
    finally:
        crm.close()


def test_full_refresh_marks_records_gone_from_the_vendor(
    hubspot: HubSpotEmulator, warehouse: sa.Engine
) -> None:
    hubspot.configure(**BULK)
    ids = hubspot.seed("contacts", 500, start_ms=START_MS)
    crm = hubspot_crm(hubspot)
    contacts = crm_object("hubspot", "contacts")
    try:
        run_sync(warehouse, HubSpotSource(crm), contacts, "hubspot_contacts")
        with hubspot.lock:  # hard-deleted: neither searchable nor listed as archived
            for gone in ids[:20]:
                del hubspot.state.objects["contacts"][int(gone)]
        incremental = run_sync(warehouse, HubSpotSource(crm), contacts, "hubspot_contacts")
        assert incremental.deleted == 0
        full = run_sync(
            warehouse, HubSpotSource(crm), contacts, "hubspot_contacts", full_refresh=True
        )
        assert (full.seen, full.inserted, full.updated, full.deleted) == (480, 0, 480, 20)
        rows = table_rows(warehouse, "hubspot_contacts")
        assert {i for i, (deleted,) in rows.items() if deleted} == set(ids[:20])
    finally:
        crm.close()


KILLED_SYNC = """
import json, sys
from partnerships_orchestrator.assets.crm_schema import crm_object
from partnerships_orchestrator.assets.crm_source import HubSpotSource
from partnerships_orchestrator.assets.sync import run_sync
from partnerships_orchestrator.connectors.hubspot import HubSpotCRM
from partnerships_orchestrator.warehouse import create_engine_for
args = json.loads(sys.argv[1])
crm = HubSpotCRM(base_url=args["base_url"], token=args["token"],
                 search_rate_limit={"requests": 4, "per_seconds": 1})
def progress(asset, seen, written):
    print(f"written {written}", flush=True)
run_sync(create_engine_for(args["url"]), HubSpotSource(crm), crm_object("hubspot", "contacts"),
         "hubspot_contacts", batch_size=1000, progress=progress)
print("finished", flush=True)
"""


def test_sync_killed_mid_run_resumes_without_loss_or_duplicates(
    hubspot: HubSpotEmulator, warehouse: sa.Engine, warehouse_url: str
) -> None:
    hubspot.configure(search_limit=4, ten_secondly_limit=100_000)
    hubspot.seed("contacts", RECORDS, start_ms=START_MS, step_ms=1000)
    args = {
        "base_url": hubspot.base_url,
        "token": hubspot.issue_private_token(),
        "url": warehouse_url,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    written = 0
    for line in child.stdout:  # each line follows a committed batch
        assert line.startswith("written"), line
        written = int(line.split()[1])
        if written >= 3000:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    landed = table_rows(warehouse, "hubspot_contacts")
    assert written <= len(landed) < RECORDS  # killed mid-sync: committed batches only

    hubspot.configure(**BULK)
    crm = hubspot_crm(hubspot)
    try:
        resumed = run_sync(
            warehouse, HubSpotSource(crm), crm_object("hubspot", "contacts"), "hubspot_contacts"
        )
    finally:
        crm.close()
    assert resumed.seen < RECORDS  # resumed at the cursor, not from the start
    assert table_rows(warehouse, "hubspot_contacts", "email", "firstname") == hubspot_truth(hubspot)


def test_salesforce_sync_reads_deleted_records_through_query_all(
    salesforce: SalesforceEmulator, warehouse: sa.Engine
) -> None:
    ids = salesforce.seed("Account", 2500, start_ms=START_MS, step_ms=500, tie_every=3)
    crm = SalesforceCRM(
        login_url=salesforce.base_url,
        client_id="sf-client-1",
        client_secret="sf-client-secret-1",
        backoff_seconds=0.01,
    )
    accounts = crm_object("salesforce", "accounts")
    try:
        first = run_sync(warehouse, SalesforceSource(crm), accounts, "salesforce_accounts")
        assert (first.seen, first.inserted, first.deleted) == (2500, 2500, 0)
        later = START_MS + 2500 * 500 + 60_000
        with salesforce.lock:
            for n, record_id in enumerate(ids[:40]):
                record = salesforce.state.records["Account"][record_id]
                if n < 10:
                    record["IsDeleted"] = True
                else:
                    record["Name"] = f"Renamed {n}"
                record["LastModifiedDate"] = record["SystemModstamp"] = later + n
        second = run_sync(warehouse, SalesforceSource(crm), accounts, "salesforce_accounts")
        # the 40 changed records, and those of the cursor's second read again (upserted again)
        assert (second.inserted, second.deleted) == (0, 10)
        assert 40 <= second.updated == second.seen <= 45
        rows = table_rows(warehouse, "salesforce_accounts", "name")
        with salesforce.lock:
            truth = {
                i: (r["Name"], bool(r["IsDeleted"]))
                for i, r in salesforce.state.records["Account"].items()
            }
        assert rows == truth
    finally:
        crm.close()
