"""The API's open connections to Dagster's SQLite run storage and event log see every run,
status change and event another process writes, the moment it is written."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from partnerships_orchestrator.api.run_events import RunEvents
from partnerships_orchestrator.api.storage_connections import keep_storage_connections


@dg.op
def greet() -> str:
    return "hello"


@dg.job
def hello() -> None:
    greet()


@pytest.fixture
def instances() -> Iterator[tuple[dg.DagsterInstance, dg.DagsterInstance]]:
    """The API's instance (connections kept) and a writer's on the same home."""
    with dg.instance_for_test() as writer:
        reader = dg.DagsterInstance.from_ref(writer.get_ref())
        assert keep_storage_connections(reader) == ["runs", "event log"]
        yield reader, writer
        reader.dispose()


def test_runs_and_status_changes_written_elsewhere_are_read_at_once(
    instances: tuple[dg.DagsterInstance, dg.DagsterInstance],
):
    reader, writer = instances
    assert reader.get_run_records() == []
    done = hello.execute_in_process(instance=writer)
    [record] = reader.get_run_records(dg.RunsFilter(run_ids=[done.run_id]))
    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS and record.end_time
    queued = writer.create_run_for_job(hello)
    assert reader.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.NOT_STARTED
    writer.report_run_canceled(queued)
    assert reader.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.CANCELED
    assert [r.dagster_run.run_id for r in reader.get_run_records()] == [
        queued.run_id,
        done.run_id,
    ]


def test_many_threads_read_and_the_reader_can_still_write(
    instances: tuple[dg.DagsterInstance, dg.DagsterInstance],
):
    reader, writer = instances
    ids = [writer.create_run_for_job(hello).run_id for _ in range(3)]
    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda _: len(reader.get_run_records(limit=10)), range(200)))
    assert found == [3] * 200
    reader.add_run_tags(ids[0], {"partnerships/test": "yes"})
    assert writer.get_run_by_id(ids[0]).tags["partnerships/test"] == "yes"


def test_events_written_elsewhere_after_a_read_are_read_on_the_next_call(
    instances: tuple[dg.DagsterInstance, dg.DagsterInstance],
):
    reader, writer = instances
    run = reader.get_run_by_id(hello.execute_in_process(instance=writer).run_id)
    assert run is not None
    events = RunEvents(reader)
    first = events.log(run, 1000)  # Dagster opens the run's file: later reads keep a connection
    for n in range(1, 4):
        writer.report_engine_event(f"after the end {n}", run)
        log = events.log(run, 1000)
        assert len(log.records) == len(first.records) + n
        assert log.records[-1].event_log_entry.message.endswith(f"after the end {n}")
    direct = writer.get_records_for_run(run.run_id).records
    assert [r.storage_id for r in log.records] == [r.storage_id for r in direct]
    assert list(log.steps) == list(writer.get_run_step_stats(run.run_id))


def test_other_storages_are_left_as_configured():
    assert keep_storage_connections(dg.DagsterInstance.ephemeral()) == []
