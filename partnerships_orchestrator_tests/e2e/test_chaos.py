"""SIGKILL the step process, the run worker, the daemon and the webserver during a 200-recipient
bulk send, recover the documented way, and count what the receiver got (see ``chaos.py``)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from partnerships_orchestrator.connectors.sendgrid import SendGridEmail
from partnerships_orchestrator.dispatch import in_flight
from partnerships_orchestrator_tests.e2e import chaos
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator

pytestmark = pytest.mark.e2e

# Eight kills in a random order, each at a random delivery count: the step process and the run
# worker three times each, the daemon and the webserver once each (each of those two costs a
# restart of the whole stack, the slowest recovery).
TARGETS = ["step"] * 3 + ["run_worker"] * 3 + ["daemon", "webserver"]
RECIPIENTS = 200
RATE = 20  # messages a second: slow enough that every kill lands while messages remain
MAX_CAMPAIGNS = 3


@pytest.fixture(scope="module")
def receiver() -> Iterator[SendGridEmulator]:
    emulator = SendGridEmulator()
    server = emulator.serve()
    emulator.configure(limit=RATE * 10, window=1.0)  # the connection paces itself, not the vendor
    yield emulator
    server.stop()


def test_a_bulk_send_survives_sigkills_without_duplicates_or_silent_gaps(
    receiver: SendGridEmulator, tmp_path: Path
) -> None:
    connection = SendGridEmail(
        api_key=API_KEY,
        sender="partners@example.org",
        rate_limit={"requests": RATE, "per_seconds": 1},
    )
    requests_in_flight = in_flight(connection)
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    targets = rng.sample(TARGETS, len(TARGETS))
    reports: list[chaos.Report] = []
    with chaos.running_stack(tmp_path, receiver, recipients=RECIPIENTS, rate=RATE) as stack:
        # A send may finish before every planned kill (a loaded machine finds and kills its
        # target late): the kills left over go to a fresh campaign, a new root run counted at a
        # receiver started afresh, and every campaign is held to the same rules.
        while len(reports) < MAX_CAMPAIGNS:
            remaining = targets[sum(len(r.kills) for r in reports) :]
            if not remaining:
                break
            if reports:
                receiver.reset()
                receiver.configure(limit=RATE * 10, window=1.0)
            reports.append(chaos.run_campaign(stack, remaining, rng, say=print))
            _check_campaign(reports[-1], requests_in_flight, f"seed {seed}")
    kills = [k for r in reports for k in r.kills]
    context = f"seed {seed} (rerun with CHAOS_SEED={seed}): {[r.summary() for r in reports]}"
    assert len(kills) == len(targets), f"the sends finished before every kill; {context}"
    assert {k.target for k in kills} == set(chaos.TARGETS), context
    assert chaos.processes_with(stack.marker) == []  # nothing outlives the stack


def _check_campaign(report: chaos.Report, requests_in_flight: int, seed: str) -> None:
    context = f"{seed} (rerun with CHAOS_SEED={seed.split()[-1]}): {report.summary()}"
    print(context)
    assert report.duplicates == 0, context
    # Every recipient not reached is a dead letter saying its outcome is unknown (its request
    # may have left when its sender died), never a silent gap ...
    assert report.missing <= report.unknown_recipients, context
    # ... and only messages in flight when a sender died are unknown: at 20 messages a second the
    # fan-out keeps one request in flight, so at most one per killed process.
    assert len(report.unknown) <= requests_in_flight * len(report.kills), context
    assert len(report.unknown_recipients) == len(report.unknown), context  # one letter each
    # A run whose step process or run worker was killed (Dagster reports it failed at once)
    # sends nothing after the kill but the request that was already departing (its ledger claim,
    # stamped as it leaves, may be a moment later): a step process ends with its run worker.
    # (A stack stopped because its daemon or webserver died stops its runs gracefully; what
    # they send meanwhile is theirs.)
    sender_killed = [k for k in report.kills if k.target in ("step", "run_worker")]
    assert all(k.late <= requests_in_flight for k in sender_killed), context
    # The campaign ends with a successful run, or a failed one whose dead letters are listed.
    last = report.runs[0]
    assert last["status"] == "SUCCESS" or report.dead_letters, context
    assert all(r["rootRunId"] in (None, report.runs[-1]["runId"]) for r in report.runs), context
