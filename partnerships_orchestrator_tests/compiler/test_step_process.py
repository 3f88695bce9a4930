"""A step process outlives its run worker by no more than an instant (real processes)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from partnerships_orchestrator.compiler.step_process import exit_with_parent


def _step(ready: multiprocessing.synchronize.Event) -> None:
    exit_with_parent()
    ready.set()
    time.sleep(60)  # the step's work: far longer than the test waits


def _run_worker(ready: multiprocessing.synchronize.Event, pids: multiprocessing.Queue) -> None:
    context = multiprocessing.get_context("spawn")
    step = context.Process(target=_step, args=(ready,))
    step.start()
    pids.put(step.pid)
    time.sleep(60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_step_process_exits_as_soon_as_its_run_worker_is_killed() -> None:
    context = multiprocessing.get_context("spawn")
    ready, pids = context.Event(), context.Queue()
    worker = context.Process(target=_run_worker, args=(ready, pids))
    worker.start()
    step_pid = pids.get(timeout=60)
    assert ready.wait(timeout=60)
    assert _alive(step_pid)

    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    deadline = time.monotonic() + 5
    while _alive(step_pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not _alive(step_pid), "the step process outlived its run worker"
