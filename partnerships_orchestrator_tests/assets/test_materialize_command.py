"""`partnerships materialize` and `partnerships list` through the command's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from partnerships_orchestrator.cli import main

DOCUMENTS = """
kind: sync
id: crm
provider: hubspot
objects: [companies]
---
kind: dataset
id: tiers
sql: select partner_tier as tier, count(*) as companies from crm_companies group by partner_tier
checks: [{type: row_count, max: 1}]
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "assets.yaml").write_text(DOCUMENTS)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("PARTNER_WAREHOUSE_URL", raising=False)
    return ["--playbooks", str(tmp_path / "playbooks"), "--home", str(tmp_path / "home")]


def test_materialize_shows_progress_and_a_summary(folder: list[str]) -> None:
    result = CliRunner().invoke(main, ["materialize", *folder])
    assert result.exit_code == 0, result.output
    assert "crm_companies: 300 records read, 300 rows written" in result.output
    assert "tiers: check row_count failed: 3 row(s), expected between 0 and 1" in result.output
    assert "2 of 2 assets materialized" in result.output

    again = CliRunner().invoke(main, ["materialize", "crm-companies", "--json", *folder])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert list(summary["assets"]) == ["crm_companies"]
    numbers = summary["assets"]["crm_companies"]
    assert 0 < numbers["records_seen"] < 300  # incremental: the sandbox's next generation only

    full = CliRunner().invoke(
        main, ["materialize", "crm_companies", "--full-refresh", "--json", *folder]
    )
    assert json.loads(full.output)["assets"]["crm_companies"]["records_seen"] >= 300


def test_materialize_reports_why_an_asset_failed(folder: list[str]) -> None:
    result = CliRunner().invoke(main, ["materialize", "tiers", *folder])  # crm never synced
    assert result.exit_code == 1
    assert "tiers: failed: dataset `tiers`: the warehouse refused its SQL" in (
        result.output.replace("\n", " ")
    )
    assert "no such table: crm_companies" in result.output


def test_materialize_names_unknown_assets_with_a_suggestion(folder: list[str]) -> None:
    result = CliRunner().invoke(main, ["materialize", "crm_company", *folder])
    assert result.exit_code == 2
    assert "no asset `crm_company`" in result.output
    assert "did you mean `crm_companies`?" in result.output


def test_list_shows_the_assets_of_each_document(folder: list[str]) -> None:
    result = CliRunner().invoke(main, ["list", "--json", *folder])
    assert result.exit_code == 0, result.output
    rows = {d["id"]: d for d in json.loads(result.output)["documents"]}
    assert (rows["crm"]["kind"], rows["crm"]["assets"]) == ("sync", ["crm_companies"])
    assert (rows["tiers"]["kind"], rows["tiers"]["assets"]) == ("dataset", ["tiers"])


def test_first_start_selects_every_asset_until_one_is_materialized(folder: list[str]) -> None:
    from partnerships_orchestrator.materialize import first_start_assets
    from partnerships_orchestrator.project import Project
    from partnerships_orchestrator.settings import load_settings

    project = Project(load_settings(folder[1], folder[3]))
    keys = first_start_assets(project)
    assert [k.to_user_string() for k in keys] == ["crm_companies", "tiers"]
    result = CliRunner().invoke(main, ["materialize", "crm_companies", "--quiet", *folder])
    assert result.exit_code == 0, result.output
    assert first_start_assets(project) == []  # not on later starts
