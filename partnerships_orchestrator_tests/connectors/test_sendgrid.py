"""SendGridEmail against the loopback SendGrid emulator, and the emulator against the official SDK."""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message, Receipt
from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN
from partnerships_orchestrator.connectors.errors import ConnectorTimeout, VendorUnavailable
from partnerships_orchestrator.connectors.sendgrid import SendGridEmail
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator.settings import Settings
from partnerships_orchestrator.spec.models import CommunicateStep, Playbook
from partnerships_orchestrator.steps import communicate
from partnerships_orchestrator.steps.context import RunInfo, StepContext, StepResources
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.emulators.core import FaultAction
from partnerships_orchestrator_tests.emulators.sendgrid import API_KEY, SendGridEmulator

SENDER = "partners@example.org"
KEY_ENV = "SENDGRID_TEST_API_KEY"


MakeEmail = Callable[..., SendGridEmail]


@pytest.fixture
def make_email(sendgrid: SendGridEmulator) -> Iterator[MakeEmail]:
    """Build SendGridEmail resources on the emulator with test-sized backoffs; closed after."""
    built: list[SendGridEmail] = []

    def make(**fields: Any) -> SendGridEmail:
        values: dict[str, Any] = {
            "api_key": API_KEY,
            "sender": SENDER,
            "sender_name": "Partner Team",
            "base_url": sendgrid.base_url,
            "rate_limit": {"requests": 1000, "per_seconds": 1.0, "burst": 1000},
            "timeout_seconds": 5.0,
            "max_attempts": 3,
            "backoff_seconds": 0.01,
            "backoff_max_seconds": 0.02,
            **fields,
        }
        email = SendGridEmail(**values)
        built.append(email)
        return email

    yield make
    for email in built:
        email.close()


def message(to: str = "ada@example.com", **fields: Any) -> Message:
    values: dict[str, Any] = {
        "channel": "email",
        "to": to,
        "subject": "Welcome aboard",
        "body": "Hello **Ada**,\n\n- one\n- two\n",
        "run_id": "run-1",
        "step": "welcome",
        "playbook": "onboarding",
        "idempotency_key": f"root-1:welcome::{to}",
        **fields,
    }
    return Message(**values)


# ------------------------------------------------------------------------------ sending


def test_send_posts_markdown_as_text_and_html_and_returns_the_message_id(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    receipt = make_email().send(message())

    [delivered] = sendgrid.state.delivered
    assert receipt.provider == "sendgrid" and receipt.status == "sent"
    assert receipt.message_id == delivered.message_id and receipt.message_id
    assert delivered.to == "ada@example.com"
    assert (delivered.from_email, delivered.from_name) == (SENDER, "Partner Team")
    assert delivered.subject == "Welcome aboard"
    assert delivered.content["text/plain"] == "Hello **Ada**,\n\n- one\n- two\n"
    assert "<strong>Ada</strong>" in delivered.content["text/html"]
    assert "<li>one</li>" in delivered.content["text/html"]
    assert delivered.custom_args == {
        "idempotency_key": "root-1:welcome::ada@example.com",
        "run_id": "run-1",
        "playbook": "onboarding",
        "step": "welcome",
    }
    [request] = sendgrid.requests("/v3/mail/send")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


def test_sandbox_mode_is_answered_200_and_delivers_nothing(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    receipt = make_email(sandbox_mode=True).send(message())

    assert receipt.status == "sent" and receipt.detail == {"sandbox_mode": True}
    assert sendgrid.state.delivered == []
    assert len(sendgrid.state.sandboxed) == 1


def test_attachments_arrive_base64_encoded_with_name_and_type(
    sendgrid: SendGridEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7\n\x00\xffbinary")

    make_email().send(message(attachments=(str(report),)))

    [delivered] = sendgrid.state.delivered
    assert delivered.attachments == [
        {"filename": "report.pdf", "type": "application/pdf", "content": report.read_bytes()}
    ]
    sent = sendgrid.requests("/v3/mail/send")[0].json()["attachments"][0]
    assert base64.b64decode(sent["content"]) == report.read_bytes()


def test_a_missing_attachment_is_refused_before_anything_is_sent(
    sendgrid: SendGridEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_email().send(message(attachments=(str(tmp_path / "absent.pdf"),)))

    assert caught.value.retryable is False
    assert "absent.pdf" in caught.value.message
    assert sendgrid.requests() == []


# ------------------------------------------------------------------------------ batches


def test_a_batch_of_2345_recipients_goes_out_in_three_requests_each_recipient_once(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    messages = [message(f"partner{i}@example.com") for i in range(2345)]

    outcomes = make_email().send_batch(messages)

    requests = sendgrid.requests("/v3/mail/send")
    assert [len(r.json()["personalizations"]) for r in requests] == [1000, 1000, 345]
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert [o.to for o in outcomes if isinstance(o, Receipt)] == [m.to for m in messages]
    counts = sendgrid.delivered_counts()
    assert len(counts) == 2345 and set(counts.values()) == {1}
    first = sendgrid.delivered_to("partner7@example.com")[0]
    assert first.custom_args["idempotency_key"] == "root-1:welcome::partner7@example.com"


def test_a_batch_groups_by_content_and_never_repeats_an_address_in_one_request(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    messages = [
        message("ada@example.com"),
        message("bob@example.com", subject="Other subject"),
        message("ADA@example.com", idempotency_key="second-key"),
        message("cy@example.com"),
    ]

    outcomes = make_email().send_batch(messages)

    recipients = [
        [p["to"][0]["email"] for p in r.json()["personalizations"]]
        for r in sendgrid.requests("/v3/mail/send")
    ]
    assert recipients == [
        ["ada@example.com", "cy@example.com"],
        ["bob@example.com"],
        ["ADA@example.com"],
    ]
    assert [o.to for o in outcomes if isinstance(o, Receipt)] == [m.to for m in messages]


def test_a_failing_request_in_a_batch_fails_only_its_own_messages(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.fail_recipient("bob@example.com", times=10)
    messages = [message("ada@example.com"), message("bob@example.com", subject="Other")]

    ok, failed = make_email().send_batch(messages)

    assert isinstance(ok, Receipt)
    assert isinstance(failed, DeliveryError) and failed.retryable is True
    assert sendgrid.delivered_counts() == {"ada@example.com": 1}


def test_a_batch_request_with_an_unknown_outcome_is_raised_after_the_others_went_out(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.add_fault(path="/v3/mail/send", action=FaultAction.DELAY, delay_seconds=1.0)
    messages = [message("ada@example.com"), message("bob@example.com", subject="Other")]

    with pytest.raises(ConnectorTimeout) as caught:
        make_email(timeout_seconds=0.3).send_batch(messages)

    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(sendgrid.requests("/v3/mail/send")) == 2
    assert sendgrid.wait_for_deliveries(2)
    assert sendgrid.delivered_counts() == {"ada@example.com": 1, "bob@example.com": 1}


# ------------------------------------------------------------------------------ the emulator's own validation


def _raw_send(sendgrid: SendGridEmulator, payload: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.post(f"{sendgrid.base_url}/v3/mail/send", json=payload, headers=headers)


def _mail(personalizations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "personalizations": personalizations,
        "from": {"email": SENDER},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "v"}],
    }


@pytest.mark.parametrize(
    ("personalizations", "field", "words"),
    [
        ([], "personalizations", "must have at least one personalization"),
        (
            [{"to": [{"email": f"p{i}@example.com"}]} for i in range(1001)],
            "personalizations",
            "limited to 1000 personalizations per API request. You have provided 1001",
        ),
        (
            [{"to": [{"email": "a@example.com"}], "cc": [{"email": "A@example.com"}]}],
            "personalizations.0",
            "We found the first duplicate instance of [A@example.com]",
        ),
        (
            [{"to": [{"email": "a@example.com"}]}, {"to": [{"email": "a@example.com"}]}],
            "personalizations",
            "should only be included once",
        ),
        ([{"to": [{"email": "not-an-address"}]}], "personalizations.0.to.0.email", "valid address"),
        ([{"cc": [{"email": "a@example.com"}]}], "personalizations.0.to", "to array is required"),
    ],
)
def test_the_emulator_refuses_what_sendgrid_refuses_with_its_messages(
    sendgrid: SendGridEmulator, personalizations: list[dict[str, Any]], field: str, words: str
) -> None:
    answer = _raw_send(sendgrid, _mail(personalizations))

    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error["field"] == field and words in error["message"]
    assert sendgrid.state.delivered == []


def test_the_emulator_wants_text_plain_before_text_html(sendgrid: SendGridEmulator) -> None:
    mail = _mail([{"to": [{"email": "a@example.com"}]}])
    mail["content"] = [
        {"type": "text/html", "value": "<p>x</p>"},
        {"type": "text/plain", "value": "x"},
    ]

    answer = _raw_send(sendgrid, mail)

    assert answer.status_code == 400
    assert "text/plain must be first" in answer.json()["errors"][0]["message"]


# ------------------------------------------------------------------------------ errors


def test_a_vendor_validation_error_is_not_retryable_and_carries_sendgrids_message(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_email().send(message(subject=None))

    assert caught.value.retryable is False
    assert "subject: The subject is required." in caught.value.message
    assert len(sendgrid.requests("/v3/mail/send")) == 1


def test_bad_credentials_are_a_clear_non_retryable_error_without_the_secret(
    sendgrid: SendGridEmulator, make_email: MakeEmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "SG.wrong-key.do-not-log-me"

    with pytest.raises(DeliveryError) as caught:
        make_email(api_key=wrong).send(message())

    error = caught.value
    assert error.retryable is False
    assert "authorization grant is invalid" in error.message
    assert "api_key" in (error.hint or "")
    assert wrong not in str(error) and wrong not in caplog.text
    assert len(sendgrid.requests("/v3/mail/send")) == 1


def test_429_waits_until_x_ratelimit_reset_then_delivers(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    # Two seconds ahead: on a loaded machine the first request may leave a second late.
    reset = int(time.time()) + 2
    sendgrid.add_fault(
        path="/v3/mail/send",
        status=429,
        body={"errors": [{"field": None, "message": "too many requests"}]},
        headers={
            "X-RateLimit-Limit": "1",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        },
    )
    email = make_email()

    receipt = email.send(message())

    first, second = sendgrid.requests("/v3/mail/send")
    assert second.at >= reset and second.at > first.at
    assert receipt.message_id and sendgrid.delivered_counts() == {"ada@example.com": 1}
    assert email.http().stats.rate_limited == 1


def test_the_client_paces_itself_on_x_ratelimit_remaining_instead_of_hitting_429(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.configure(limit=2, window=1.0)
    email = make_email()

    for to in ("a@example.com", "b@example.com", "c@example.com"):
        email.send(message(to))

    assert len(sendgrid.requests("/v3/mail/send")) == 3
    assert email.http().stats.rate_limited == 0
    assert len(sendgrid.state.delivered) == 3


def test_5xx_is_retried_and_the_message_delivered_once(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.add_fault(path="/v3/mail/send", status=503, times=2)

    make_email().send(message())

    assert len(sendgrid.requests("/v3/mail/send")) == 3
    assert sendgrid.delivered_counts() == {"ada@example.com": 1}


def test_5xx_after_every_retry_is_a_retryable_delivery_error(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.fail_recipient("ada@example.com", times=3)

    with pytest.raises(DeliveryError) as caught:
        make_email(max_attempts=3).send(message())

    assert caught.value.retryable is True
    assert "internal error" in caught.value.message
    assert sendgrid.state.delivered == []


def test_a_read_timeout_is_an_unknown_outcome_raised_as_is_and_never_resent(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.add_fault(path="/v3/mail/send", action=FaultAction.DELAY, delay_seconds=1.0)

    with pytest.raises(ConnectorTimeout) as caught:
        make_email(timeout_seconds=0.3).send(message())

    assert not isinstance(caught.value, DeliveryError)
    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(sendgrid.requests("/v3/mail/send")) == 1
    # the vendor took it after all: re-sending would have delivered it twice
    assert sendgrid.wait_for_deliveries(1)
    assert sendgrid.delivered_counts() == {"ada@example.com": 1}


def test_a_dropped_connection_after_sending_is_an_unknown_outcome_never_resent(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.add_fault(path="/v3/mail/send", action=FaultAction.DROP_CONNECTION)

    with pytest.raises(VendorUnavailable) as caught:
        make_email().send(message())

    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(sendgrid.requests("/v3/mail/send")) == 1


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_sent_nothing_so_it_is_retried_and_retryable(
    make_email: MakeEmail,
) -> None:
    email = make_email(base_url=f"http://127.0.0.1:{_unused_port()}")

    with pytest.raises(DeliveryError) as caught:
        email.send(message())

    assert caught.value.retryable is True
    assert email.http().stats.requests == 3


# ------------------------------------------------------------------------------ secrets


def test_a_secret_reference_is_resolved_at_first_use_and_never_logged(
    sendgrid: SendGridEmulator,
    make_email: MakeEmail,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    email = make_email(api_key=f"${{env:{KEY_ENV}}}")  # built before the variable exists
    monkeypatch.setenv(KEY_ENV, API_KEY)
    sendgrid.add_fault(path="/v3/mail/send", status=500)

    email.send(message())

    assert email.api_key == f"${{env:{KEY_ENV}}}"
    assert sendgrid.delivered_counts() == {"ada@example.com": 1}
    assert API_KEY not in caplog.text and API_KEY not in repr(email)


def test_an_unresolvable_secret_reference_names_the_reference_only(
    sendgrid: SendGridEmulator, make_email: MakeEmail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)

    with pytest.raises(DeliveryError) as caught:
        make_email(api_key=f"${{env:{KEY_ENV}}}").send(message())

    assert f"${{env:{KEY_ENV}}}" in str(caught.value) and caught.value.retryable is False
    assert sendgrid.requests() == []


# ------------------------------------------------------------------------------ check


def test_check_reports_the_key_and_rate_limits_without_secrets(make_email: MakeEmail) -> None:
    report = make_email().check()

    assert report["ok"] is True and report["provider"] == "sendgrid"
    assert report["rate_limit"]["client"] == {"requests": 1000, "per_seconds": 1.0}
    assert report["rate_limit"]["vendor"]["remaining"]
    assert API_KEY not in repr(report)


def test_check_of_a_key_without_mail_send_or_a_wrong_key_is_not_ok(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    sendgrid.configure(api_keys={API_KEY: frozenset({"scopes.read"})})

    assert make_email().check()["detail"] == "the API key lacks the mail.send scope"
    wrong = make_email(api_key="SG.wrong").check()
    assert wrong["ok"] is False and "authorization grant" in wrong["detail"]
    assert "SG.wrong" not in repr(wrong)


def test_the_resource_sends_from_a_dagster_op(
    sendgrid: SendGridEmulator, make_email: MakeEmail
) -> None:
    @dg.op
    def welcome(email: SendGridEmail) -> str | None:
        return email.send(message()).message_id

    @dg.job
    def onboarding() -> None:
        welcome()

    result = onboarding.execute_in_process(resources={"email": make_email()})

    assert result.success
    assert result.output_for_node("welcome") == sendgrid.state.delivered[0].message_id


# ------------------------------------------------------------------------------ fidelity


def test_the_official_sdk_sends_through_the_emulator(sendgrid: SendGridEmulator) -> None:
    client = SendGridAPIClient(API_KEY, host=sendgrid.base_url)
    mail = Mail(
        from_email=SENDER,
        to_emails="ada@example.com",
        subject="From the SDK",
        plain_text_content="plain",
        html_content="<p>html</p>",
    )

    response = client.send(mail)

    assert response.status_code == 202
    [delivered] = sendgrid.state.delivered
    assert response.headers["X-Message-Id"] == delivered.message_id
    assert delivered.content == {"text/plain": "plain", "text/html": "<p>html</p>"}


def test_the_official_sdk_gets_sendgrids_errors_from_the_emulator(
    sendgrid: SendGridEmulator,
) -> None:
    mail = Mail(from_email=SENDER, to_emails="ada@example.com", plain_text_content="no subject")
    with pytest.raises(BadRequestsError) as bad:
        SendGridAPIClient(API_KEY, host=sendgrid.base_url).send(mail)
    with pytest.raises(UnauthorizedError):
        SendGridAPIClient("SG.wrong", host=sendgrid.base_url).send(mail)

    assert b"The subject is required" in bad.value.body


# ------------------------------------------------------------------------------ with the ledger


WELCOME = CommunicateStep(
    id="welcome",
    type="communicate",
    channel="email",
    to=[f"p{i}@example.com" for i in range(1, 6)],
    subject="Welcome",
    body="Hello from the **partner team**",
)


def _context(tmp_path: Path, provider: ChannelProvider, run_id: str) -> StepContext:
    """What the compiled op would hand the step: run ``run_id`` of root run ``root-1``."""
    step = WELCOME
    run = RunInfo(id=run_id, root_id="root-1", playbook="onboarding", started_at=datetime.now(UTC))
    home = tmp_path / "home"
    return StepContext(
        playbook=Playbook.model_construct(id="onboarding", steps=[step]),
        step=step,
        run=run,
        scope={"inputs": {}, "steps": {}, "trigger": None, "run": run.as_scope()},
        settings=Settings(playbooks_dir=tmp_path, templates_dir=tmp_path, home=home),
        resources=StepResources(
            state=StateStore(f"sqlite:///{tmp_path}/state.db"),
            warehouse=lambda: pytest.fail("communicate does not touch the warehouse"),
            channels={"email": provider},
        ),
    )


class OneByOne:
    """The provider without its batch API, so ``communicate`` sends recipient by recipient."""

    def __init__(self, provider: SendGridEmail) -> None:
        self.provider = provider

    @property
    def provider_name(self) -> str:
        return self.provider.provider_name

    def send(self, message: Message) -> Receipt:
        return self.provider.send(message)


def test_a_communicate_retry_after_exhausted_5xx_sends_each_recipient_once(
    sendgrid: SendGridEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    provider = OneByOne(make_email(max_attempts=3))
    sendgrid.fail_recipient("p3@example.com", times=3)  # every attempt of the 3rd send

    with pytest.raises(DeliveryError) as first:
        communicate.run(WELCOME, _context(tmp_path, provider, "run-1"))
    receipts = communicate.run(WELCOME, _context(tmp_path, provider, "run-2"))  # the retry

    assert first.value.retryable is True
    assert [r["status"] for r in receipts] == ["already_sent"] * 2 + ["sent"] * 3
    assert sendgrid.delivered_counts() == {f"p{i}@example.com": 1 for i in range(1, 6)}
    assert len(sendgrid.requests("/v3/mail/send")) == 2 + 3 + 3


def test_a_communicate_retry_of_a_failed_batch_sends_each_recipient_once(
    sendgrid: SendGridEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    email = make_email(max_attempts=3)
    sendgrid.fail_recipient("p3@example.com", times=3)  # the one batch request, every attempt

    with pytest.raises(DeliveryError):
        communicate.run(WELCOME, _context(tmp_path, email, "run-1"))
    receipts = communicate.run(WELCOME, _context(tmp_path, email, "run-2"))
    again = communicate.run(WELCOME, _context(tmp_path, email, "run-3"))

    assert [r["status"] for r in receipts] == ["sent"] * 5
    assert [r["status"] for r in again] == ["already_sent"] * 5
    assert sendgrid.delivered_counts() == {f"p{i}@example.com": 1 for i in range(1, 6)}
    assert len(sendgrid.requests("/v3/mail/send")) == 3 + 1


def test_a_batch_timing_out_in_communicate_stays_unknown_and_is_never_resent(
    sendgrid: SendGridEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    email = make_email(timeout_seconds=0.3)
    sendgrid.add_fault(path="/v3/mail/send", action=FaultAction.DELAY, delay_seconds=1.0)

    with pytest.raises(ConnectorTimeout):
        communicate.run(WELCOME, _context(tmp_path, email, "run-1"))
    assert sendgrid.wait_for_deliveries(5)
    receipts = communicate.run(WELCOME, _context(tmp_path, email, "run-2"))

    assert [r["status"] for r in receipts] == ["unknown"] * 5
    assert sendgrid.delivered_counts() == {f"p{i}@example.com": 1 for i in range(1, 6)}
    assert len(sendgrid.requests("/v3/mail/send")) == 1
