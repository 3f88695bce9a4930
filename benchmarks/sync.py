"""An incremental HubSpot sync at HubSpot's rate limit: does it reach the ceiling, with no 429?

    .venv/bin/python benchmarks/sync.py                    # 100,000 contacts (~2 min here)
    .venv/bin/python benchmarks/sync.py --records 20000    # a quick look

The HubSpot emulator (``partnerships_orchestrator_tests.emulators``) is served on loopback in this
process, seeded with N contacts and limited like HubSpot: search 5 requests per second (200
results per page), the general limit 100 per 10 s. ``run_sync`` (the sync asset's runtime) reads
them with ``HubSpotCRM`` at its default pacing (HubSpot's documented limits) into a SQLite
warehouse file; then 1% of the contacts change and a second, incremental run reads only those.

The ceiling is the search limit times the page size (1,000 records/s); "x ceiling" is records per
second over it, from the first request to the last answer. "429 srv" counts what a tap in front
of the emulator answered 429; "429 cli" the client's own count. "verified": every contact is in
the table exactly once with its current values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from connectors import start  # noqa: E402  (the tap counting every status)

from partnerships_orchestrator.assets.crm_schema import crm_object  # noqa: E402
from partnerships_orchestrator.assets.crm_source import HubSpotSource  # noqa: E402
from partnerships_orchestrator.assets.sync import run_sync  # noqa: E402
from partnerships_orchestrator.connectors.hubspot import HubSpotCRM  # noqa: E402
from partnerships_orchestrator.warehouse import create_engine_for  # noqa: E402
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator  # noqa: E402

SEARCH_LIMIT = 5  # per second: HubSpot's search limit, the emulator's default
PAGE = 200
START_MS = 1_700_000_000_000


def verified(engine: sa.Engine, hubspot: HubSpotEmulator) -> bool:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select id, firstname from hubspot_contacts")).all()
    with hubspot.lock:
        truth = {
            str(r.id): r.properties.get("firstname")
            for r in hubspot.state.objects["contacts"].values()
        }
    return len(rows) == len({r[0] for r in rows}) == len(truth) and dict(map(tuple, rows)) == truth


def one_run(label: str, engine: sa.Engine, crm: HubSpotCRM, tap: object, records: int) -> None:
    before = len(tap.seen)  # type: ignore[attr-defined]
    limited = crm.http().stats.rate_limited
    started = time.perf_counter()
    result = run_sync(
        engine, HubSpotSource(crm), crm_object("hubspot", "contacts"), "hubspot_contacts"
    )
    seconds = time.perf_counter() - started
    seen = tap.seen[before:]  # type: ignore[attr-defined]
    searches = [s for s in seen if s[1] != 429]
    span = (seen[-1][0] - seen[0][0]) if len(seen) > 1 else seconds
    rate = result.seen / max(span, 1e-9)
    ceiling = SEARCH_LIMIT * PAGE
    print(
        f"{label:<12} {result.seen:>8,} {len(searches):>8} {seconds:>8.1f} {rate:>10,.0f} "
        f"{rate / ceiling:>9.2f} {sum(1 for s in seen if s[1] == 429):>8} "
        f"{crm.http().stats.rate_limited - limited:>8} {(result.inserted + result.updated) / seconds:>10,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.records:,} contacts")
    hubspot = HubSpotEmulator()
    tap, server = start(hubspot, "/crm/")
    try:
        hubspot.seed("contacts", args.records, start_ms=START_MS, step_ms=100)
        engine = create_engine_for(f"sqlite:///{tempfile.mkdtemp(prefix='bench-sync-')}/w.db")
        crm = HubSpotCRM(base_url=hubspot.base_url, token=hubspot.issue_private_token())
        print(
            f"{'run':<12} {'records':>8} {'requests':>8} {'seconds':>8} {'records/s':>10} "
            f"{'x ceiling':>9} {'429 srv':>8} {'429 cli':>8} {'rows/s':>10}"
        )
        one_run("full", engine, crm, tap, args.records)
        later = START_MS + args.records * 100 + 60_000
        with hubspot.lock:
            for n, record in enumerate(hubspot.state.objects["contacts"].values()):
                if n % 100 == 0:
                    record.properties["firstname"] = f"Changed{n}"
                    hubspot._touch("contacts", record, later + n)
        one_run("incremental", engine, crm, tap, args.records // 100)
        print(f"verified: {verified(engine, hubspot)}")
        crm.close()
        engine.dispose()
    finally:
        server.stop()
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
