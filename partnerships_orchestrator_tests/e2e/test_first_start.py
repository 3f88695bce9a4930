"""`partnerships up` on a fresh home: the UI is ready first, then the assets are materialized by
a run the daemon launches (so the UI shows it live), once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from partnerships_orchestrator.materialize import FIRST_START_TAG, first_start_assets
from partnerships_orchestrator.project import Project
from partnerships_orchestrator.settings import load_settings
from partnerships_orchestrator_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e

DATASET = """
kind: dataset
id: tier-counts
sql: select tier, count(*) as partners from partners group by tier
"""


def _up(base: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PARTNER_WAREHOUSE_URL")
    }
    env.update(PARTNERSHIPS_HOME=str(base / "home"), PARTNERSHIPS_PLAYBOOKS=str(base / "playbooks"))
    return subprocess.Popen(
        [str(BIN / "partnerships"), "up", "--port", str(free_port()),
         "--api-port", str(free_port())],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, text: str) -> str:
    deadline = time.monotonic() + 240
    while text not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {text!r} from `partnerships up`:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    return log.read_text()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_first_start_materializes_the_assets_after_the_ui_is_ready(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "assets.yaml").write_text(DATASET)
    first = _up(tmp_path, tmp_path / "first.log")
    try:
        said = _wait_for_line(first, tmp_path / "first.log", "materialized on first start")
    finally:
        _stop(first)
    lines = said.splitlines()
    ready = next(i for i, line in enumerate(lines) if line.startswith("ready:"))
    launched = next(i for i, line in enumerate(lines) if line.startswith("materializing 1 assets"))
    assert ready < launched, said
    assert "assets: 1 of 1 materialized on first start" in said and ": SUCCESS)" in said

    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("tier_counts"))
        assert event is not None
        run = instance.get_run_by_id(event.run_id)
        assert run is not None and run.tags.get(FIRST_START_TAG) == "true"
        assert "dagster/sensor_name" not in run.tags  # launched by `up`, not by automation

    home = load_settings(tmp_path / "playbooks", tmp_path / "home")
    assert first_start_assets(Project(home)) == []  # once per home: a later `up` launches nothing
