"""The delivery service: claims when the request leaves, one dead letter per unknown outcome."""

from __future__ import annotations

import threading
from pathlib import Path

from partnerships_orchestrator.connectors.channel import Message
from partnerships_orchestrator.connectors.departure import Cancellation, cancellable
from partnerships_orchestrator.connectors.sendgrid import SendGridEmail
from partnerships_orchestrator.dispatch import Delivery, Dispatcher, DispatchRun
from partnerships_orchestrator.store.state import DeliveryKey, StateStore
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator

RUN = DispatchRun(run_id="run-1", root_run_id="root-1", playbook="announce")


def _email(sendgrid: SendGridEmulator, requests: int, per_seconds: float = 1.0) -> SendGridEmail:
    assert sendgrid.base_url is not None
    return SendGridEmail(
        api_key=API_KEY,
        sender="partners@example.org",
        base_url=sendgrid.base_url,
        rate_limit={"requests": requests, "per_seconds": per_seconds, "burst": 1},
        timeout_seconds=5.0,
    )


def _deliveries(count: int, step: str = "send") -> list[Delivery]:
    found = []
    for i in range(count):
        to = f"p{i}@example.com"
        key = DeliveryKey(RUN.root_run_id, step, str(i), to)
        message = Message(channel="email", to=to, body="Hello", subject="Hi", run_id=RUN.run_id)
        found.append(Delivery(key, message, f"{step}[{i}]"))
    return found


class OneByOne:
    """SendGrid without its batch API: one request per message, each through the limiter."""

    def __init__(self, provider: SendGridEmail) -> None:
        self.provider = provider

    @property
    def provider_name(self) -> str:
        return self.provider.provider_name

    def send(self, message: Message):  # type: ignore[no-untyped-def]
        return self.provider.send(message)


def test_a_message_waiting_for_the_rate_limiter_is_not_claimed_yet(
    sendgrid: SendGridEmulator, tmp_path: Path
) -> None:
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    email = _email(
        sendgrid, requests=1, per_seconds=2.0
    )  # the second request waits ~2 s in the limiter
    dispatcher = Dispatcher(state, OneByOne(email), RUN, channel="email")
    worker = threading.Thread(target=dispatcher.deliver, args=(_deliveries(2),))
    worker.start()
    try:
        assert sendgrid.wait_for_deliveries(1)
        # the first left; the second is in the limiter's wait: a process killed now would leave
        # no pending claim for a message that never left
        assert [d["recipient"] for d in state.deliveries("root-1")] == ["p0@example.com"]
    finally:
        worker.join(10)
        email.close()
    assert {d["status"] for d in state.deliveries("root-1")} == {"sent"}
    assert sendgrid.delivered_counts() == {"p0@example.com": 1, "p1@example.com": 1}


def test_a_pending_claim_becomes_one_outcome_unknown_dead_letter_however_often_retried(
    sendgrid: SendGridEmulator, tmp_path: Path
) -> None:
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    email = _email(sendgrid, requests=1000)
    deliveries = _deliveries(3)
    # a process died after claiming p1: its request may have left
    state.claim(
        deliveries[1].key, run_id="run-0", playbook="announce", channel="email", provider="sendgrid"
    )
    for run_id in ("run-1", "run-2", "run-3"):
        run = DispatchRun(run_id=run_id, root_run_id="root-1", playbook="announce")
        outcomes = Dispatcher(state, email, run, channel="email").deliver(deliveries)
    email.close()

    assert [o.status for o in outcomes] == ["already_sent", "unknown", "already_sent"]
    assert sendgrid.delivered_counts() == {"p0@example.com": 1, "p2@example.com": 1}
    letters = state.dead_letters(playbook="announce")
    assert [(d["step"], d["action"], d["run_id"]) for d in letters] == [
        ("send[1]", "outcome_unknown", "run-3")
    ]
    assert "outcome unknown" in letters[0]["error"]


def test_a_cancelled_dispatch_sends_nothing_more_and_claims_nothing(
    sendgrid: SendGridEmulator, tmp_path: Path
) -> None:
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    email = _email(sendgrid, requests=1000)
    cancellation = Cancellation(reason="the step ran past its timeout")
    cancellation.cancel()
    outcomes = []
    try:
        with cancellable(cancellation):
            Dispatcher(state, email, RUN, channel="email").deliver(_deliveries(3))
    except Exception as exc:  # noqa: BLE001 - the type is asserted below
        outcomes.append(exc)
    email.close()
    assert [type(e).__name__ for e in outcomes] == ["StepTimeout"]
    assert sendgrid.requests("/v3/mail/send") == []
    assert state.deliveries("root-1") == []
