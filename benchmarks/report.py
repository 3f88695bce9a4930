"""A 20-page report with 6 charts: seconds from data to PDF, against WeasyPrint alone.

    .venv/bin/python benchmarks/report.py              # median of 3
    .venv/bin/python benchmarks/report.py --repeat 1

The report (``assets.report.render_report``: sandboxed Jinja2 -> Markdown -> HTML -> PDF) reads
rows built in memory: a partner table long enough for about 20 A4 pages and six SVG charts from
``chart()`` (three bar, three line). The baseline is WeasyPrint rendering the very HTML the report
produced, straight to PDF: what is left is the cost of the template, Markdown and charts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partnerships_orchestrator.assets.report import Rows, render_report, write_pdf  # noqa: E402
from partnerships_orchestrator.spec.models import Report  # noqa: E402

TEMPLATE = """\
## Overview

{% for chart_no in range(3) -%}
{{ chart('bar', data.tiers, x='tier', y=['open', 'won'], title='Pipeline by tier ' ~ chart_no) }}

{{ chart('line', data.months, x='month', y=['active', 'calls'], title='Usage trend ' ~ chart_no) }}

{% endfor %}
## Partners

| Partner | Tier | Region | Open deals | Open amount | Health |
|---|---|---|---:|---:|---:|
{% for row in data.partners -%}
| {{ row.name }} | {{ row.tier }} | {{ row.region }} | {{ row.deals }} | {{ row.amount | money }} | {{ row.health }} |
{% endfor %}
"""


def data(partners: int) -> dict[str, Rows]:
    tiers = Rows(
        {"tier": t, "open": 1_000_000 * (3 - n), "won": 400_000 * (n + 1)}
        for n, t in enumerate(("gold", "silver", "bronze"))
    )
    months = Rows(
        {"month": f"2026-{m:02d}", "active": 100 + m * 7, "calls": 80 + (m * 13) % 50}
        for m in range(1, 13)
    )
    rows = Rows(
        {
            "name": f"Partner {n:04d} Analytics",
            "tier": ("gold", "silver", "bronze")[n % 3],
            "region": ("EMEA", "AMER", "APAC")[n % 3],
            "deals": n % 7,
            "amount": 1000.0 * (n % 97),
            "health": 40 + n % 60,
        }
        for n in range(partners)
    )
    return {"tiers": tiers, "months": months, "partners": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partners", type=int, default=620, help="table rows (~20 pages)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="bench-report-"))
    (root / "templates" / "reports").mkdir(parents=True)
    (root / "templates" / "reports" / "bench.md.j2").write_text(TEMPLATE)
    report = Report(
        kind="report",
        id="bench",
        title="Benchmark review",
        template="reports/bench.md.j2",
        data=["tiers", "months", "partners"],
        formats=["markdown", "pdf"],
    )
    rows = data(args.partners)
    ours, baseline, cpu, pages, charts = [], [], [], 0, 0
    for n in range(args.repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        rendered = render_report(report, root / "templates", root / f"out{n}", rows, {})
        ours.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        pages, charts = rendered.pages or 0, rendered.html.count("<svg")
        started = time.perf_counter()
        write_pdf(rendered.html, root / f"plain{n}.pdf", root / "templates")
        baseline.append(time.perf_counter() - started)
    mine, plain = statistics.median(ours), statistics.median(baseline)
    print(f"{pages} pages, {charts} charts, {args.partners} table rows; median of {args.repeat}")
    print(f"{'':<32} {'seconds':>8} {'pages/s':>8}")
    print(f"{'report (template -> PDF)':<32} {mine:>8.2f} {pages / mine:>8.1f}")
    print(f"{'  of which CPU in this process':<32} {statistics.median(cpu):>8.2f}")
    print(f"{'WeasyPrint alone (HTML -> PDF)':<32} {plain:>8.2f} {pages / plain:>8.1f}")
    print(f"overhead of template, Markdown and charts: {mine / plain:.2f}x WeasyPrint alone")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
