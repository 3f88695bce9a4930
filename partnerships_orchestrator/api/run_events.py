"""The event records of finished runs, read from Dagster's event log once and then only what is
new: what `GET /executions/{id}` shows as steps and log lines.

A record never changes once written (its storage id names it), and a finished run's log only
grows at its end, written by its one remaining process in id order (the resources its hooks
initialise, the process's exit). So for a finished run each call reads just the records after
the last one held (one query by id cursor, usually empty) instead of the newest N and every step
event again. A run that is not finished yet is read as Dagster serves it on every call: its step
processes write concurrently, and on PostgreSQL a lower id can commit after a higher one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.execution.stats import (
    STEP_STATS_EVENT_TYPES,
    RunStepKeyStatsSnapshot,
    build_run_step_stats_from_events,
)

RUNS_HELD = 256  # finished runs whose records stay in memory (least recently read dropped first)
RECORDS_HELD = 10_000  # a run with more records than this is read from Dagster on every call
RECORDS_TOTAL = 50_000  # records held of all runs together (least recently read dropped first)


@dataclass(frozen=True)
class RunLog:
    """Every event record of a run so far (oldest first) and its steps' stats."""

    records: Sequence[dg.EventLogRecord]
    steps: Sequence[RunStepKeyStatsSnapshot]

    def newest(self, count: int) -> Sequence[dg.EventLogRecord]:
        return self.records[-count:] if count else ()


@dataclass
class _Held:
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: RunLog | None = None
    cursor: str | None = None
    read_at: float = -1.0  # when the last read began (monotonic)


def step_stats(run_id: str, records: Sequence[dg.EventLogRecord]) -> list[RunStepKeyStatsSnapshot]:
    """Dagster's step stats from the run's records, as its event log storage derives them."""
    entries = [
        r.event_log_entry
        for r in records
        if r.event_log_entry.step_key is not None
        and r.event_log_entry.dagster_event_type in STEP_STATS_EVENT_TYPES
    ]
    return list(build_run_step_stats_from_events(run_id, entries))


class RunEvents:
    """``log(run)``: a run's records and step stats; finished runs' held and read incrementally."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        *,
        runs_held: int = RUNS_HELD,
        records_held: int = RECORDS_HELD,
        records_total: int = RECORDS_TOTAL,
    ) -> None:
        self.instance = instance
        self.runs_held = runs_held
        self.records_held = records_held
        self.records_total = records_total
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._lock = threading.Lock()

    def log(self, run: dg.DagsterRun, newest: int) -> RunLog:
        """The run's step stats and at least its ``newest`` records."""
        if not run.is_finished:
            return self._read_live(run.run_id, newest)
        held = self._slot(run.run_id)
        arrived = time.monotonic()
        with held.lock:
            # a read that began after this call arrived saw everything written before it
            if held.log is None or held.read_at < arrived:
                held.read_at = time.monotonic()
                if not self._read_more(run.run_id, held):
                    self._drop(run.run_id)
                    return self._read_live(run.run_id, newest)
            assert held.log is not None  # nosec B101 # set by _read_more when it returns True
            return held.log

    def _slot(self, run_id: str) -> _Held:
        with self._lock:
            held = self._held.get(run_id)
            if held is None:
                held = self._held[run_id] = _Held()
                while len(self._held) > self.runs_held:
                    self._held.popitem(last=False)
            else:
                self._held.move_to_end(run_id)
            return held

    def _drop(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def _read_more(self, run_id: str, held: _Held) -> bool:
        """Append the records written since the last read; ``False`` when there are too many to
        hold."""
        known = held.log.records if held.log else ()
        room = self.records_held - len(known)
        if room <= 0:
            return False
        found = self.instance.get_records_for_run(run_id, cursor=held.cursor, limit=room + 1)
        if len(found.records) > room:
            return False
        held.cursor = found.cursor
        if held.log is None or found.records:
            records = [*known, *found.records]
            held.log = RunLog(records, step_stats(run_id, records))
            self._fit(run_id)
        return True

    def _fit(self, keep: str) -> None:
        """Let go of the least recently read runs until all held records fit the total."""
        with self._lock:
            total = sum(len(h.log.records) for h in self._held.values() if h.log)
            for run_id in list(self._held):
                if total <= self.records_total:
                    break
                if run_id != keep:
                    dropped = self._held.pop(run_id)
                    total -= len(dropped.log.records) if dropped.log else 0

    def _read_live(self, run_id: str, newest: int) -> RunLog:
        steps = self.instance.get_run_step_stats(run_id)
        if not newest:
            return RunLog((), steps)
        found = self.instance.get_records_for_run(run_id, limit=newest, ascending=False)
        return RunLog(list(reversed(found.records)), steps)
