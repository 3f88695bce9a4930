"""The API's open connections to Dagster's SQLite run storage see every run and status change
another process writes, the moment it is written."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from partnerships_orchestrator.api.run_storage_connections import keep_run_storage_connections


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
        assert keep_run_storage_connections(reader)
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


def test_other_run_storages_are_left_as_configured():
    with dg.instance_for_test() as instance:
        memory = dg.DagsterInstance.ephemeral()
        assert not keep_run_storage_connections(memory)
        assert keep_run_storage_connections(instance)
