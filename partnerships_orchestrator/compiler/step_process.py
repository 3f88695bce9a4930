"""A step process of the `multiprocess` executor ends when the run worker that started it dies.

Dagster's run worker starts one child process per step (``multiprocessing``, spawn) and reads
its events through a pipe. When the run worker is killed, Dagster reports the run failed at once,
but the step process is only orphaned: measured with a 200-recipient bulk send at 10 messages a
second, an orphan went on delivering 180 messages after its run had been reported FAILURE, racing
the re-execution a user starts to finish the run. So a step process watches its parent: no
request leaves it once the parent is gone (checked as each request departs), and a watcher thread
exits the process as soon as it notices, as if it had been killed with it: what it had not sent is left to the
re-execution, and a request it had in flight is a ledger `pending` row (an "outcome unknown"
dead letter), exactly as for a killed step process.

Only step processes of the `multiprocess` executor watch: a run worker's own parent (the code
server that launched it) may go away while the run goes on, and Celery workers manage their own
tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import dagster as dg

from partnerships_orchestrator.connectors.departure import stop_sending_when

MULTIPROCESS = "multiprocess"
EXIT_CODE = 70  # what a step process that outlived its run worker exits with

_watching = False
_lock = threading.Lock()


def end_with_run_worker(context: dg.OpExecutionContext) -> None:
    """In a step process of the `multiprocess` executor, exit once the run worker is gone."""
    if context.job_def.executor_def.name == MULTIPROCESS:
        exit_with_parent()


def exit_with_parent() -> None:
    """Exit this child process (started by ``multiprocessing``) as soon as its parent exits."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not a child process (e.g. a test executing in process)
        return
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    # No request leaves once the parent is gone (checked as each one departs), even before the
    # watcher thread below gets the CPU to end the process.
    stop_sending_when(lambda: None if parent.is_alive() else "the run worker is gone")
    threading.Thread(
        target=_exit_after, args=(parent,), name="run-worker-watch", daemon=True
    ).start()


def _exit_after(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent's sentinel closes: the run worker has exited
    os._exit(EXIT_CODE)
