"""MailgunEmail against the loopback Mailgun emulator."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN
from partnerships_orchestrator.connectors.errors import ConnectorTimeout, VendorUnavailable
from partnerships_orchestrator.connectors.mailgun import MailgunEmail
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator_tests.emulators.core import FaultAction
from partnerships_orchestrator_tests.emulators.mailgun import API_KEY, DOMAIN, MailgunEmulator

SENDER = "partners@mg.example.org"
MESSAGES = f"/v3/{DOMAIN}/messages"
KEY_ENV = "MAILGUN_TEST_API_KEY"


MakeEmail = Callable[..., MailgunEmail]


@pytest.fixture
def make_email(mailgun: MailgunEmulator) -> Iterator[MakeEmail]:
    """Build MailgunEmail resources on the emulator with test-sized backoffs; closed after."""
    built: list[MailgunEmail] = []

    def make(**fields: Any) -> MailgunEmail:
        values: dict[str, Any] = {
            "api_key": API_KEY,
            "domain": DOMAIN,
            "sender": SENDER,
            "sender_name": "Partner Team",
            "base_url": mailgun.base_url,
            "rate_limit": {"requests": 1000, "per_seconds": 1.0, "burst": 1000},
            "timeout_seconds": 5.0,
            "max_attempts": 3,
            "backoff_seconds": 0.01,
            "backoff_max_seconds": 0.02,
            **fields,
        }
        email = MailgunEmail(**values)
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
        "body": "Hello **Ada**",
        "run_id": "run-1",
        "step": "welcome",
        "playbook": "onboarding",
        "idempotency_key": f"root-1:welcome::{to}",
        **fields,
    }
    return Message(**values)


def _basic() -> str:
    return base64.b64encode(f"api:{API_KEY}".encode()).decode()


# ------------------------------------------------------------------------------ sending


def test_send_posts_the_form_with_basic_auth_and_returns_mailguns_id(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    receipt = make_email().send(message())

    [delivered] = mailgun.state.delivered
    assert receipt.provider == "mailgun" and receipt.status == "sent"
    assert receipt.message_id == delivered.message_id and receipt.message_id.endswith(f"@{DOMAIN}>")
    assert delivered.sender == f"Partner Team <{SENDER}>"
    assert (delivered.to, delivered.subject, delivered.text) == (
        "ada@example.com",
        "Welcome aboard",
        "Hello **Ada**",
    )
    assert delivered.html == "<p>Hello <strong>Ada</strong></p>"
    assert delivered.variables["idempotency_key"] == "root-1:welcome::ada@example.com"
    [request] = mailgun.requests(MESSAGES)
    assert request.headers["authorization"] == f"Basic {_basic()}"
    assert json.loads(request.form()["h:X-Mailgun-Variables"][0])["run_id"] == "run-1"


def test_test_mode_is_accepted_and_delivers_nothing(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    receipt = make_email(test_mode=True).send(message())

    assert receipt.message_id and receipt.detail == {"test_mode": True}
    assert mailgun.state.delivered == []
    assert len(mailgun.state.test_mode) == 1


def test_attachments_arrive_as_multipart_files(
    mailgun: MailgunEmulator, make_email: MakeEmail, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7\n\x00\xffbinary")
    notes = tmp_path / "notes.txt"
    notes.write_text("see attached")

    make_email().send(message(attachments=(str(report), str(notes))))

    [delivered] = mailgun.state.delivered
    assert delivered.attachments == [
        {
            "filename": "report.pdf",
            "content_type": "application/pdf",
            "content": report.read_bytes(),
        },
        {"filename": "notes.txt", "content_type": "text/plain", "content": b"see attached"},
    ]
    assert mailgun.requests(MESSAGES)[0].headers["content-type"].startswith("multipart/form-data")


# ------------------------------------------------------------------------------ batches


def test_a_batch_of_2345_recipients_goes_out_in_three_requests_each_recipient_once(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    messages = [message(f"partner{i}@example.com") for i in range(2345)]

    outcomes = make_email().send_batch(messages)

    forms = [r.form() for r in mailgun.requests(MESSAGES)]
    assert [len(f["to"]) for f in forms] == [1000, 1000, 345]
    assert all(f["v:idempotency_key"] == ["%recipient.idempotency_key%"] for f in forms)
    assert [o.to for o in outcomes if isinstance(o, Receipt)] == [m.to for m in messages]
    counts = mailgun.delivered_counts()
    assert len(counts) == 2345 and set(counts.values()) == {1}
    seventh = next(d for d in mailgun.state.delivered if d.to == "partner7@example.com")
    assert seventh.batch and seventh.variables["idempotency_key"] == (
        "root-1:welcome::partner7@example.com"
    )


# ------------------------------------------------------------------------------ the emulator's own validation


def _raw_send(mailgun: MailgunEmulator, data: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Basic {_basic()}"}
    return httpx.post(f"{mailgun.base_url}{MESSAGES}", data=data, headers=headers)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"to": "a@example.com", "text": "x"}, "'from' parameter is missing"),
        ({"from": SENDER, "text": "x"}, 'Need at least one of "to", "cc", "bcc" fields'),
        ({"from": SENDER, "to": "a@example.com"}, "Need at least one of 'text', 'html'"),
        ({"from": SENDER, "to": "nobody", "text": "x"}, "to parameter is not a valid address"),
        (
            {"from": SENDER, "to": "a@example.com", "text": "x", "recipient-variables": "{"},
            "recipient-variables parameter is not a valid JSON",
        ),
        (
            {"from": SENDER, "to": [f"p{i}@example.com" for i in range(1001)], "text": "x"},
            "Too many recipients",
        ),
    ],
)
def test_the_emulator_refuses_what_mailgun_refuses_with_its_messages(
    mailgun: MailgunEmulator, data: dict[str, Any], words: str
) -> None:
    answer = _raw_send(mailgun, data)

    assert answer.status_code == 400 and words in answer.json()["message"]
    assert mailgun.state.delivered == []


# ------------------------------------------------------------------------------ errors


def test_a_vendor_validation_error_is_not_retryable_and_carries_mailguns_message(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_email().send(message("not-an-address"))

    assert caught.value.retryable is False
    assert "to parameter is not a valid address" in caught.value.message
    assert len(mailgun.requests(MESSAGES)) == 1


def test_a_bad_key_gets_plain_text_forbidden_and_a_clear_error_without_the_secret(
    mailgun: MailgunEmulator, make_email: MakeEmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "key-wrong-do-not-log-me"

    with pytest.raises(DeliveryError) as caught:
        make_email(api_key=wrong).send(message())

    error = caught.value
    assert error.retryable is False
    assert "Mailgun refused the API key (401 Forbidden)" in error.message
    assert "api.eu.mailgun.net" in (error.hint or "")
    encoded = base64.b64encode(f"api:{wrong}".encode()).decode()
    for secret in (wrong, encoded):
        assert secret not in str(error) and secret not in caplog.text
    assert len(mailgun.requests(MESSAGES)) == 1


def test_429_with_retry_after_is_waited_out_then_delivered(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.configure(limit=1, window=1.0)
    email = make_email()

    email.send(message("a@example.com"))
    email.send(message("b@example.com"))

    first, limited, retried = mailgun.requests(MESSAGES)
    assert retried.at - limited.at >= 1.0  # Retry-After is whole seconds
    assert email.http().stats.rate_limited == 1
    assert mailgun.delivered_counts() == {"a@example.com": 1, "b@example.com": 1}


def test_5xx_is_retried_and_the_message_delivered_once(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.add_fault(path=MESSAGES, status=500, body={"message": "Internal Server Error"}, times=2)

    make_email().send(message())

    assert len(mailgun.requests(MESSAGES)) == 3
    assert mailgun.delivered_counts() == {"ada@example.com": 1}


def test_5xx_after_every_retry_is_a_retryable_delivery_error(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.fail_recipient("ada@example.com", times=3)

    with pytest.raises(DeliveryError) as caught:
        make_email().send(message())

    assert caught.value.retryable is True and "Internal Server Error" in caught.value.message
    assert mailgun.state.delivered == []


def test_an_unknown_domain_is_retried_as_mailgun_advises_then_named(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_email(domain="wrong.example.org").send(message())

    assert "Domain not found: wrong.example.org" in caught.value.message
    assert caught.value.retryable is True
    assert len(mailgun.requests("/v3/wrong.example.org/messages")) == 3


def test_a_read_timeout_is_an_unknown_outcome_raised_as_is_and_never_resent(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.add_fault(path=MESSAGES, action=FaultAction.DELAY, delay_seconds=1.0)

    with pytest.raises(ConnectorTimeout) as caught:
        make_email(timeout_seconds=0.3).send(message())

    assert not isinstance(caught.value, DeliveryError)
    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(mailgun.requests(MESSAGES)) == 1
    assert mailgun.wait_for_deliveries(1)  # it did arrive: a resend would have doubled it
    assert mailgun.delivered_counts() == {"ada@example.com": 1}


def test_a_dropped_connection_is_an_unknown_outcome_never_resent(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.add_fault(path=MESSAGES, action=FaultAction.DROP_CONNECTION)

    with pytest.raises(VendorUnavailable) as caught:
        make_email().send(message())

    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(mailgun.requests(MESSAGES)) == 1


def test_an_accepted_message_with_an_unreadable_answer_is_not_sent_again(
    mailgun: MailgunEmulator, make_email: MakeEmail
) -> None:
    mailgun.add_fault(path=MESSAGES, action=FaultAction.MALFORMED_JSON)

    receipt = make_email().send(message())

    assert receipt.status == "sent" and receipt.message_id is None
    assert len(mailgun.requests(MESSAGES)) == 1


# ------------------------------------------------------------------------------ secrets and check


def test_a_secret_reference_is_resolved_at_first_use_and_never_logged(
    mailgun: MailgunEmulator,
    make_email: MakeEmail,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    email = make_email(api_key=f"${{env:{KEY_ENV}}}")
    monkeypatch.setenv(KEY_ENV, API_KEY)
    mailgun.add_fault(path=MESSAGES, status=503)

    email.send(message())

    assert mailgun.delivered_counts() == {"ada@example.com": 1}
    for secret in (API_KEY, _basic()):
        assert secret not in caplog.text and secret not in repr(email)


def test_check_reports_the_domain_and_never_the_key(make_email: MakeEmail) -> None:
    report = make_email().check()
    wrong = make_email(api_key="key-wrong").check()

    assert report["ok"] is True and report["detail"] == f"domain {DOMAIN} is active"
    assert wrong["ok"] is False and "Forbidden" in wrong["detail"]
    assert "key-wrong" not in repr(wrong) and API_KEY not in repr(report)
