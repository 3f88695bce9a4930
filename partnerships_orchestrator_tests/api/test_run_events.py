"""A finished run's log held by the API reads the same as Dagster's own reads of it, and grows
by what is written after the run ended."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.execution.stats import StepEventStatus

from partnerships_orchestrator.api.run_events import RunEvents


@dg.op
def fetch(context) -> int:
    context.log.info("fetched")
    return 2


@dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
def flaky(context, count: int) -> int:
    if context.retry_number == 0:
        raise dg.RetryRequested(max_retries=1)
    return count


@dg.op
def fail(count: int) -> None:
    raise ValueError(f"cannot use {count}")


@dg.job
def steps() -> None:
    count = fetch()
    flaky(count)
    fail(count)


@pytest.fixture(scope="module")
def finished() -> tuple[dg.DagsterInstance, dg.DagsterRun]:
    with dg.instance_for_test() as instance:
        result = steps.execute_in_process(instance=instance, raise_on_error=False)
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        yield instance, run


def _ids(records) -> list[int]:
    return [r.storage_id for r in records]


def _newest(instance: dg.DagsterInstance, run_id: str, count: int) -> list[int]:
    found = instance.get_records_for_run(run_id, limit=count, ascending=False).records
    return list(reversed(_ids(found)))


@pytest.mark.parametrize("records_held", [10_000, 5])  # held, and too many to hold
def test_a_finished_runs_steps_and_newest_records_read_as_dagster_reads_them(
    finished: tuple[dg.DagsterInstance, dg.DagsterRun], records_held: int
):
    instance, run = finished
    events = RunEvents(instance, records_held=records_held)
    for _ in range(2):  # the first read fills what is held, the second reads only what is new
        log = events.log(run, 4)
        assert list(log.steps) == list(instance.get_run_step_stats(run.run_id))
        assert _ids(log.newest(4)) == _newest(instance, run.run_id, 4)
    statuses = {s.step_key: (s.status, s.attempts) for s in log.steps}
    assert statuses["flaky"][1] == 2 and statuses["fail"][0] == StepEventStatus.FAILURE
    assert list(events.log(run, 0).newest(0)) == []


def test_records_written_after_the_run_ended_are_read_on_the_next_call(
    finished: tuple[dg.DagsterInstance, dg.DagsterRun],
):
    instance, run = finished
    events = RunEvents(instance)
    before = _ids(events.log(run, 1000).records)
    instance.report_engine_event("written after the end", run)
    after = events.log(run, 1000)
    assert _ids(after.records)[: len(before)] == before and len(after.records) == len(before) + 1
    assert after.records[-1].event_log_entry.message.endswith("written after the end")
    assert _ids(after.newest(3)) == _newest(instance, run.run_id, 3)


def test_the_least_recently_read_runs_are_let_go(
    finished: tuple[dg.DagsterInstance, dg.DagsterRun],
):
    instance, run = finished
    other = instance.get_run_by_id(
        steps.execute_in_process(instance=instance, raise_on_error=False).run_id
    )
    assert other is not None
    for events in (
        RunEvents(instance, runs_held=1),
        RunEvents(instance, records_total=len(instance.get_records_for_run(run.run_id).records)),
    ):
        events.log(run, 1)
        events.log(other, 1)
        assert list(events._held) == [other.run_id]
        assert _ids(events.log(run, 2).newest(2)) == _newest(instance, run.run_id, 2)
        assert list(events._held) == [run.run_id]
