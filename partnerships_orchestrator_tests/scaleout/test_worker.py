"""`partnerships worker` is the Celery worker itself: stopping the command stops the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from partnerships_orchestrator_tests.e2e.chaos import processes_with

BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0


def _answering(broker_url: str) -> set[str]:
    """Names of the workers that answer a ping through the broker."""
    from dagster_celery.make_app import make_app

    app = make_app({"broker": broker_url, "backend": "rpc://"})
    return {name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply}


def test_sigterm_to_the_command_stops_its_celery_worker(rabbitmq_url: str, tmp_path: Path):
    (tmp_path / "playbooks").mkdir()
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARTNERSHIPS_", "DAGSTER_", "PARTNER_WAREHOUSE"))
    }
    env.update(
        PARTNERSHIPS_HOME=str(home),
        PARTNERSHIPS_PLAYBOOKS=str(tmp_path / "playbooks"),
        PARTNERSHIPS_CELERY_BROKER=rabbitmq_url,
        PARTNERSHIPS_EXECUTOR="celery",
    )
    marker = f"PARTNERSHIPS_HOME={home}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "partnerships"), "worker", "--name", "solo", "--concurrency", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "solo" not in _answering(rabbitmq_url):
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]

        worker.send_signal(signal.SIGTERM)  # to the command's pid only, as `kill PID` does
        worker.wait(timeout=30)

        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)  # the pool's children exit after their parent
        assert processes_with(marker) == [], log.read_text()[-3000:]
        assert "solo" not in _answering(rabbitmq_url)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        for process in processes_with(marker):
            os.kill(process.pid, signal.SIGKILL)
