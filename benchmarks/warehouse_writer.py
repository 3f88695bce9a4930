"""Landing contact rows in a PostgreSQL warehouse: the sync's writer against pandas' to_sql.

    .venv/bin/python benchmarks/warehouse_writer.py                 # 1,000,000 rows (~3 min here)
    .venv/bin/python benchmarks/warehouse_writer.py --rows 200000   # a quick look

A throwaway PostgreSQL server is started from the machine's binaries (as the tests do). The same
rows (the `hubspot_contacts` table of a sync: id, eight properties, bookkeeping columns and the
raw record as JSON) are written, in blocks of ``--block`` rows, by

- **project**: ``assets.writer.PostgresWriter.upsert`` (COPY into a staging table, one
  ``INSERT ... ON CONFLICT``), one transaction per block as a sync commits them;
- **adbc**: the same staging + ``INSERT ... ON CONFLICT``, with the staging table filled by
  ``adbc_driver_postgresql``'s bulk ingest from an Arrow table (built inside the timing);
- **to_sql**: ``DataFrame.to_sql(method="multi", chunksize=...)`` appending to an empty table
  (no upsert: the baseline is given the easier job). ``chunksize`` is 10,000 rows where that
  fits PostgreSQL's 65,535 bind parameters per statement; with this table's 15 columns it is
  4,369 (10,000 rows would be 150,000 parameters, which the server refuses).

Row generation and DataFrame construction are outside the timings; converting rows to what
each writer sends is inside. Each writer gets a fresh table. Prints rows/s and the ratio over
to_sql; a second project pass over the same ids measures updates (every row conflicts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partnerships_orchestrator.assets.crm_schema import crm_object  # noqa: E402
from partnerships_orchestrator.assets.sync import sync_table  # noqa: E402
from partnerships_orchestrator.assets.writer import PostgresWriter  # noqa: E402
from partnerships_orchestrator_tests.postgres import create_database, start_postgres  # noqa: E402

BASE = datetime(2026, 1, 1)
TO_SQL_CHUNKSIZE = 10_000
MAX_PARAMETERS = 65_535  # per statement, in PostgreSQL's wire protocol


def rows(start: int, count: int, version: int = 0) -> list[dict[str, Any]]:
    out = []
    for n in range(start, start + count):
        modified = BASE + timedelta(seconds=n + version)
        props = {
            "email": f"person{n}@partner{n % 997}.example.com",
            "firstname": f"First{n}",
            "lastname": f"Last{n}{'x' * version}",
            "company": f"Partner {n % 997}",
            "jobtitle": ("Partner Manager", "CTO", "Head of Alliances")[n % 3],
            "lifecyclestage": ("lead", "customer")[n % 2],
            "partner_tier": ("gold", "silver", "bronze")[n % 3],
        }
        out.append(
            {
                "id": str(10_000_000 + n),
                **props,
                "createdate": BASE,
                "lastmodifieddate": modified,
                "modified_at": modified,
                "is_deleted": False,
                "deleted_at": None,
                "synced_at": modified,
                "raw": json.dumps({"id": str(10_000_000 + n), "properties": props}),
            }
        )
    return out


def blocks(total: int, block: int, version: int = 0) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, total, block):
        yield rows(start, min(block, total - start), version)


def table(name: str) -> sa.Table:
    contacts = crm_object("hubspot", "contacts")
    built = sync_table(name, contacts.columns(None))
    return built


def fresh(engine: sa.Engine, name: str) -> sa.Table:
    t = table(name)
    t.drop(engine, checkfirst=True)
    t.create(engine)
    return t


def run_project(engine: sa.Engine, t: sa.Table, total: int, block: int, version: int) -> float:
    writer, spent = PostgresWriter(), 0.0
    for chunk in blocks(total, block, version):
        started = time.perf_counter()
        with engine.begin() as conn:
            writer.upsert(conn, t, chunk)
        spent += time.perf_counter() - started
    return spent


def adbc_available() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        print("adbc-driver-postgresql is not installed: its row is left out")
        return False
    return True


def run_adbc(url: str, engine: sa.Engine, t: sa.Table, total: int, block: int) -> float:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    names = [c.name for c in t.columns]
    columns = ", ".join(f'"{n}"' for n in names)
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n != "id")
    plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    spent = 0.0
    with adbc.connect(plain) as conn:
        for chunk in blocks(total, block):
            started = time.perf_counter()
            arrow = pa.Table.from_pylist(chunk)
            with conn.cursor() as cur:
                cur.execute(f'CREATE TEMPORARY TABLE stage (LIKE "{t.name}")')
                cur.adbc_ingest("stage", arrow, mode="append", temporary=True)
                cur.execute(
                    f'INSERT INTO "{t.name}" ({columns}) SELECT {columns} FROM stage '
                    f"ON CONFLICT (id) DO UPDATE SET {updates}"
                )
                cur.execute("DROP TABLE stage")
            conn.commit()
            spent += time.perf_counter() - started
    return spent


def to_sql_chunksize(t: sa.Table) -> int:
    """10,000 rows per INSERT, or as many as PostgreSQL's 65,535 bind parameters allow."""
    return min(TO_SQL_CHUNKSIZE, MAX_PARAMETERS // len(t.columns))


def run_to_sql(engine: sa.Engine, t: sa.Table, total: int, block: int) -> float:
    spent, chunksize = 0.0, to_sql_chunksize(t)
    for chunk in blocks(total, block):
        frame = pd.DataFrame(chunk)
        frame["deleted_at"] = pd.to_datetime(frame["deleted_at"])  # all null: typed, not text
        started = time.perf_counter()
        frame.to_sql(
            t.name, engine, if_exists="append", index=False, method="multi", chunksize=chunksize
        )
        spent += time.perf_counter() - started
    return spent


def count(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=50_000, help="rows per transaction")
    parser.add_argument("--skip-adbc", action="store_true")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=None,
        help="rows for to_sql (default: --rows); its rows/s is what the ratio divides by",
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rows:,} rows in blocks of {args.block:,}")
    server, stop = start_postgres(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        url = create_database(server, "bench")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        results: dict[str, float] = {}
        base_rows = args.baseline_rows or args.rows
        t = fresh(engine, "to_sql_contacts")
        results["to_sql (multi)"] = run_to_sql(engine, t, base_rows, args.block)
        assert count(engine, t.name) == base_rows
        rates = {"to_sql (multi)": base_rows / results["to_sql (multi)"]}
        t = fresh(engine, "project_contacts")
        results["project writer (insert)"] = run_project(engine, t, args.rows, args.block, 0)
        assert count(engine, t.name) == args.rows
        results["project writer (update)"] = run_project(engine, t, args.rows, args.block, 1)
        assert count(engine, t.name) == args.rows
        if not args.skip_adbc and adbc_available():
            t = fresh(engine, "adbc_contacts")
            results["adbc ingest + upsert"] = run_adbc(url, engine, t, args.rows, args.block)
            assert count(engine, t.name) == args.rows
        print(
            f"to_sql chunksize {to_sql_chunksize(t)} ({len(t.columns)} columns), {base_rows:,} rows"
        )
        baseline = rates["to_sql (multi)"]
        print(f"{'writer':<26} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'x to_sql':>9}")
        for name, seconds in results.items():
            written = base_rows if name == "to_sql (multi)" else args.rows
            rate = written / seconds
            print(
                f"{name:<26} {written:>10,} {seconds:>8.1f} {rate:>10,.0f} {rate / baseline:>9.1f}"
            )
        engine.dispose()
    finally:
        stop()
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
