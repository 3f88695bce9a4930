"""Reports rendered from materialized datasets and metrics: the PDF opened with pypdf shows the
numbers the data implies on the pages it should, charts are SVG, and each recipient gets the
report once, also when a failed delivery makes Dagster retry the asset."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from partnerships_orchestrator.assets.chart import ChartError, chart
from partnerships_orchestrator.compiler.location import build_repository
from partnerships_orchestrator.connectors.outbox import TRANSIENT_FAILURE_DOMAIN
from partnerships_orchestrator.demo import seed_demo_data
from partnerships_orchestrator.expressions import FILTERS
from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator.warehouse import create_engine_for

TEMPLATE = """\
## Tiers

{{ chart('bar', data.tiers, x='tier', y='partners', title='Partners per tier') }}

| Tier | Partners | Deal amount |
|---|---:|---:|
{% for row in data.tiers -%}
| {{ row.tier }} | {{ row.partners }} | {{ row.amount | money }} |
{% endfor %}
Active partners: {{ metrics.health.active | int }}

## Every partner

| Partner | Tier | Health |
|---|---|---:|
{% for row in data.roster -%}
| {{ row.name }} | {{ row.tier }} | {{ row.health_score }} |
{% endfor %}
"""

DOCUMENTS = f"""
kind: dataset
id: tiers
sql: |
  select p.tier, count(distinct p.id) as partners, coalesce(sum(d.amount), 0) as amount
  from partners p left join deals d on d.partner_id = p.id
  group by p.tier order by p.tier
---
kind: dataset
id: roster
sql: select id, name, tier, health_score from partners order by name
---
kind: metrics
id: health
metrics:
  - {{id: active, sql: "select count(*) from partners where status = 'active'"}}
---
kind: report
id: tier-review
title: Tier review
template: reports/tier_review.md.j2
data: [tiers, roster, health]
formats: [markdown, html, pdf]
deliver:
  - {{channel: email, to: ["lead@example.org", "cfo@{TRANSIENT_FAILURE_DOMAIN}"], subject: Tiers}}
  - {{channel: slack, to: "#leadership"}}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    playbooks, templates, home = tmp_path / "playbooks", tmp_path / "templates", tmp_path / "home"
    playbooks.mkdir()
    (templates / "reports").mkdir(parents=True)
    (playbooks / "docs.yaml").write_text(DOCUMENTS)
    (templates / "reports" / "tier_review.md.j2").write_text(TEMPLATE)
    monkeypatch.delenv("PARTNER_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("PARTNERSHIPS_TEMPLATES", str(templates))
    settings = load_settings(playbooks, home)
    engine = create_engine_for(settings.warehouse_url)
    seed_demo_data(engine, partners=150)
    engine.dispose()
    return {"playbooks": playbooks, "home": home}


def test_report_pdf_shows_the_numbers_of_its_data_and_is_delivered_once(
    project: dict[str, Path],
) -> None:
    settings = load_settings(project["playbooks"], project["home"])
    repo = build_repository(settings, strict=True)
    result = repo.get_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path == ["tier_review"]
    ]
    metadata = event.materialization.metadata
    pdf_path = Path(metadata["path_pdf"].value)
    reader = PdfReader(pdf_path)
    assert metadata["pages"].value == len(reader.pages) >= 4  # title, contents, >1 body pages
    pages = [page.extract_text() for page in reader.pages]
    text = "\n".join(pages)

    engine = create_engine_for(settings.warehouse_url)
    with engine.connect() as conn:
        tiers = conn.execute(
            sa.text(
                "select p.tier, count(distinct p.id), coalesce(sum(d.amount), 0) from partners p "
                "left join deals d on d.partner_id = p.id group by p.tier"
            )
        ).all()
        active = conn.execute(
            sa.text("select count(*) from partners where status='active'")
        ).scalar()
        names = [r[0] for r in conn.execute(sa.text("select name from partners order by name"))]
    engine.dispose()
    for tier, partners, amount in tiers:
        assert f"{tier} {partners} {FILTERS['money'](amount)}" in text
    assert f"Active partners: {active}" in text
    assert "Tier review" in pages[0] and "Contents" in pages[1]
    assert "Every partner" in pages[1] and "Tiers" in pages[1]  # the contents list the sections
    for name in (names[0], names[-1]):  # the long table is whole ...
        assert name in text
    spanned = [n for n, page in enumerate(pages) if "Partner Tier Health" in page]
    assert len(spanned) >= 2  # ... and its header repeats on every page it spans

    html = Path(metadata["path_html"].value).read_text()
    assert html.count("<svg") == 1 and "Partners per tier" in html
    assert "Active partners:" in metadata["preview"].value

    # the flaky recipient failed once: Dagster retried the asset; nobody got it twice
    outbox = StateStore(settings.state_url).outbox()
    assert sorted(m["recipient"] for m in outbox) == sorted(
        ["lead@example.org", f"cfo@{TRANSIENT_FAILURE_DOMAIN}", "#leadership"]
    )
    email = next(m for m in outbox if m["recipient"] == "lead@example.org")
    assert email["attachments"] == [str(pdf_path)]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert retried, "the failed delivery should have made Dagster retry the report"


def test_chart_refuses_columns_the_rows_do_not_have() -> None:
    rows = [{"tier": "gold", "n": 3}]
    assert "<svg" in chart("line", rows, x="tier", y=["n"])
    with pytest.raises(ChartError, match="`amount` is not in the rows"):
        chart("bar", rows, x="tier", y="amount")
    with pytest.raises(ChartError, match="`pie` is not `bar` or `line`"):
        chart("pie", rows, x="tier", y="n")
