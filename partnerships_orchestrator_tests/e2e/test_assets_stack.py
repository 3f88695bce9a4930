"""Assets in the running product: after `partnerships materialize` lands a sync, the daemon
refreshes the dataset that reads it (declarative automation, no schedule) and then runs the
playbook whose `dataset` trigger names that dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from partnerships_orchestrator_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e

DOCUMENTS = """
kind: sync
id: crm
provider: hubspot
objects: [companies]
---
kind: dataset
id: company-tiers
sql: |
  select partner_tier as tier, count(*) as companies
  from crm_companies where not is_deleted group by partner_tier
---
id: after-tiers
triggers: [{type: dataset, dataset: company-tiers}]
steps:
  - {id: tiers, type: query, sql: "select count(*) as n from company_tiers"}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("assets-stack")
    (base / "playbooks").mkdir()
    (base / "playbooks" / "assets.yaml").write_text(DOCUMENTS)
    env = {
        k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PARTNER_WAREHOUSE_URL")
    }
    env.update(PARTNERSHIPS_HOME=str(base / "home"), PARTNERSHIPS_PLAYBOOKS=str(base / "playbooks"))
    log = base / "up.log"
    process = subprocess.Popen(
        [str(BIN / "partnerships"), "up", "--no-materialize", "--port", str(free_port()),
         "--api-port", str(free_port())],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while b"ready:" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the product did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    yield {**env, "DAGSTER_HOME": str(base / "home" / "dagster")}
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_for(predicate: object, seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()  # type: ignore[operator]
        if found:
            return found
        time.sleep(1)
    return None


def test_dataset_follows_its_sync_and_triggers_its_playbook(stack: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "partnerships"), "materialize", "crm_companies", "--quiet"],
        env=stack, cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    with dg.DagsterInstance.from_config(stack["DAGSTER_HOME"]) as instance:
        tiers = _wait_for(
            lambda: instance.get_latest_materialization_event(dg.AssetKey("company_tiers")), 150
        )
        assert tiers is not None, "the daemon did not refresh the dataset after its sync"
        run = instance.get_run_by_id(tiers.run_id)  # type: ignore[attr-defined]
        assert run is not None
        assert run.tags.get("dagster/sensor_name") == "partnerships_automation"

        def triggered() -> list[dg.DagsterRun]:
            found = instance.get_runs(dg.RunsFilter(job_name="after_tiers"))
            return [r for r in found if r.status == dg.DagsterRunStatus.SUCCESS]

        runs = _wait_for(triggered, 150)
        assert runs, "the dataset trigger did not run the playbook"
        assert "company-tiers" in runs[0].tags["partnerships/trigger"]  # type: ignore[index]
