"""TwilioSMS against the loopback Twilio emulator, and the emulator against the official SDK."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from partnerships_orchestrator.connectors.channel import Message
from partnerships_orchestrator.connectors.delivery import OUTCOME_UNKNOWN
from partnerships_orchestrator.connectors.errors import ConnectorTimeout
from partnerships_orchestrator.connectors.twilio import TwilioSMS
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator_tests.emulators.core import FaultAction, RunningServer, serve
from partnerships_orchestrator_tests.emulators.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MESSAGING_SERVICE_SID,
    TwilioEmulator,
)

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
TOKEN_ENV = "TWILIO_TEST_AUTH_TOKEN"
TO = "+15557654321"


MakeSMS = Callable[..., TwilioSMS]


@pytest.fixture
def make_sms(twilio: TwilioEmulator) -> Iterator[MakeSMS]:
    """Build TwilioSMS resources on the emulator with test-sized backoffs; closed after."""
    built: list[TwilioSMS] = []

    def make(**fields: Any) -> TwilioSMS:
        values: dict[str, Any] = {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "base_url": twilio.base_url,
            "rate_limit": {"requests": 1000, "per_seconds": 1.0, "burst": 1000},
            "timeout_seconds": 5.0,
            "max_attempts": 3,
            "backoff_seconds": 0.01,
            "backoff_max_seconds": 0.02,
            **fields,
        }
        if "messaging_service_sid" not in values:
            values.setdefault("sender", FROM_NUMBER)
        sms = TwilioSMS(**values)
        built.append(sms)
        return sms

    yield make
    for sms in built:
        sms.close()


def message(to: str = TO, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "channel": "sms",
        "to": to,
        "body": "Your partner review is due on Friday.",
        "run_id": "run-1",
        "step": "remind",
        "playbook": "reviews",
        "idempotency_key": f"root-1:remind::{to}",
        **fields,
    }
    return Message(**values)


def _basic(token: str = AUTH_TOKEN) -> str:
    return base64.b64encode(f"{ACCOUNT_SID}:{token}".encode()).decode()


# ------------------------------------------------------------------------------ sending


def test_send_creates_a_message_from_the_number_and_returns_its_sid(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    receipt = make_sms(status_callback="https://example.org/twilio/status").send(message())

    [created] = twilio.state.messages
    assert receipt.provider == "twilio" and receipt.status == "sent"
    assert receipt.message_id == created.sid and created.sid.startswith("SM")
    assert receipt.detail == {"status": "queued", "num_segments": "1"}
    [request] = twilio.requests(MESSAGES)
    assert request.headers["authorization"] == f"Basic {_basic()}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": [TO],
        "Body": ["Your partner review is due on Friday."],
        "From": [FROM_NUMBER],
        "StatusCallback": ["https://example.org/twilio/status"],
    }


def test_send_through_a_messaging_service_sends_no_from(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    receipt = make_sms(messaging_service_sid=MESSAGING_SERVICE_SID).send(message())

    [created] = twilio.state.messages
    assert (created.from_, created.messaging_service_sid) == (None, MESSAGING_SERVICE_SID)
    assert receipt.detail["status"] == "accepted"


@pytest.mark.parametrize(
    "senders",
    [{}, {"sender": FROM_NUMBER, "messaging_service_sid": MESSAGING_SERVICE_SID}],
)
def test_exactly_one_of_from_and_messaging_service_is_required(senders: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        TwilioSMS(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, **senders)

    assert "exactly one of `from`" in str(caught.value)
    assert AUTH_TOKEN not in str(caught.value)


def test_the_default_pace_is_one_message_a_second() -> None:
    sms = TwilioSMS(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, sender=FROM_NUMBER)

    assert sms.rate_limit is not None
    assert (sms.rate_limit.requests, sms.rate_limit.per_seconds) == (1, 1.0)


def test_attachments_are_refused_before_anything_is_sent(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_sms().send(message(attachments=("/tmp/report.pdf",)))

    assert caught.value.retryable is False and "public media URLs" in caught.value.message
    assert twilio.requests() == []


# ------------------------------------------------------------------------------ errors


def test_an_invalid_number_is_not_retryable_with_twilios_code_and_link(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    with pytest.raises(DeliveryError) as caught:
        make_sms().send(message("555-0100"))

    error = caught.value
    assert error.retryable is False
    assert "21211" in error.message and "The 'To' number 555-0100 is not a valid" in error.message
    assert error.hint == "see https://www.twilio.com/docs/errors/21211"
    assert isinstance(error.__cause__, Exception) and error.__cause__.code == "21211"  # type: ignore[attr-defined]
    assert len(twilio.requests(MESSAGES)) == 1


def test_bad_credentials_are_20003_a_clear_error_without_the_secret(
    twilio: TwilioEmulator, make_sms: MakeSMS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0123456789abcdef-do-not-log-me"

    with pytest.raises(DeliveryError) as caught:
        make_sms(auth_token=wrong).send(message())

    error = caught.value
    assert error.retryable is False
    assert "Authenticate: Your AccountSid or AuthToken was incorrect." in error.message
    assert "auth_token" in (error.hint or "")
    for secret in (wrong, _basic(wrong)):
        assert secret not in str(error) and secret not in caplog.text
    assert len(twilio.requests(MESSAGES)) == 1


def test_20429_too_many_requests_is_retried_then_delivered(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    body = {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    twilio.add_fault(path=MESSAGES, status=429, body=body)
    sms = make_sms()

    sms.send(message())

    assert len(twilio.requests(MESSAGES)) == 2
    assert sms.http().stats.rate_limited == 1
    assert twilio.delivered_counts() == {TO: 1}


def test_20429_until_the_attempts_run_out_is_a_retryable_delivery_error(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    twilio.configure(limit=1, window=60.0)
    sms = make_sms()
    sms.send(message())

    with pytest.raises(DeliveryError) as caught:
        sms.send(message("+15550000002"))

    assert caught.value.retryable is True and "Too Many Requests" in caught.value.message
    assert twilio.delivered_counts() == {TO: 1}


def test_5xx_is_retried_and_the_message_created_once(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    twilio.fail_recipient(TO, times=2)

    make_sms().send(message())

    assert len(twilio.requests(MESSAGES)) == 3
    assert twilio.delivered_counts() == {TO: 1}


def test_a_read_timeout_is_an_unknown_outcome_raised_as_is_and_never_resent(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    twilio.add_fault(path=MESSAGES, action=FaultAction.DELAY, delay_seconds=1.0)

    with pytest.raises(ConnectorTimeout) as caught:
        make_sms(timeout_seconds=0.3).send(message())

    assert not isinstance(caught.value, DeliveryError)
    assert caught.value.code == OUTCOME_UNKNOWN
    assert len(twilio.requests(MESSAGES)) == 1
    assert twilio.wait_for_messages(1)  # Twilio created it after all
    assert twilio.delivered_counts() == {TO: 1}


def test_a_created_message_with_an_unreadable_answer_is_not_sent_again(
    twilio: TwilioEmulator, make_sms: MakeSMS
) -> None:
    twilio.add_fault(path=MESSAGES, action=FaultAction.MALFORMED_JSON)

    receipt = make_sms().send(message())

    assert receipt.status == "sent" and receipt.message_id is None
    assert len(twilio.requests(MESSAGES)) == 1


# ------------------------------------------------------------------------------ secrets and check


def test_a_secret_reference_is_resolved_at_first_use_and_never_logged(
    twilio: TwilioEmulator,
    make_sms: MakeSMS,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sms = make_sms(auth_token=f"${{env:{TOKEN_ENV}}}")
    monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)
    twilio.fail_recipient(TO, times=1)

    sms.send(message())

    assert twilio.delivered_counts() == {TO: 1}
    for secret in (AUTH_TOKEN, _basic()):
        assert secret not in caplog.text and secret not in repr(sms)


def test_check_reads_the_account_without_echoing_its_auth_token(make_sms: MakeSMS) -> None:
    report = make_sms().check()
    wrong = make_sms(auth_token="wrong-token").check()

    assert report["ok"] is True and report["detail"] == "account 'Partnerships emulator' is active"
    assert AUTH_TOKEN not in repr(report)
    assert wrong["ok"] is False and "Authenticate" in wrong["detail"]
    assert "wrong-token" not in repr(wrong)


# ------------------------------------------------------------------------------ fidelity


class EmulatorHttpClient(TwilioHttpClient):
    """The SDK's documented hook: its requests to api.twilio.com go to the emulator."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        url = url.replace("https://api.twilio.com", self.base_url)
        return super().request(method, url, *args, **kwargs)


def _sdk(twilio: TwilioEmulator) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=EmulatorHttpClient(twilio.base_url or ""))


def test_the_official_sdk_creates_messages_and_fetches_the_account(twilio: TwilioEmulator) -> None:
    client = _sdk(twilio)

    created = client.messages.create(to=TO, from_=FROM_NUMBER, body="from the SDK")
    account = client.api.v2010.accounts(ACCOUNT_SID).fetch()

    assert created.sid == twilio.state.messages[0].sid
    assert (created.status, created.to, created.num_segments) == ("queued", TO, "1")
    assert created.date_created is not None and created.date_created.year >= 2024
    assert account.status == "active"


def test_the_official_sdk_raises_twilios_errors_from_the_emulator(twilio: TwilioEmulator) -> None:
    with pytest.raises(TwilioRestException) as invalid:
        _sdk(twilio).messages.create(to="555", from_=FROM_NUMBER, body="x")
    with pytest.raises(TwilioRestException) as no_sender:
        _sdk(twilio).messages.create(to=TO, body="x")

    assert (invalid.value.status, invalid.value.code) == (400, 21211)
    assert no_sender.value.code == 21603


# ------------------------------------------------------------------------------ status callbacks


@pytest.fixture
def callback_receiver() -> Iterator[tuple[RunningServer, list[dict[str, Any]]]]:
    """A loopback endpoint recording each status callback and whether its signature verifies."""
    received: list[dict[str, Any]] = []
    validator = RequestValidator(AUTH_TOKEN)

    async def status(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        signature = request.headers.get("x-twilio-signature", "")
        received.append(
            {
                **form,
                "valid": validator.validate(str(request.url), form, signature),
                "token": request.headers.get("i-twilio-idempotency-token"),
            }
        )
        return PlainTextResponse("")

    with serve(Starlette(routes=[Route("/status", status, methods=["POST"])])) as server:
        yield server, received


def test_status_callbacks_are_signed_so_twilios_validator_accepts_them(
    twilio: TwilioEmulator,
    make_sms: MakeSMS,
    callback_receiver: tuple[RunningServer, list[dict[str, Any]]],
) -> None:
    server, received = callback_receiver
    twilio.configure(send_callbacks=True)

    receipt = make_sms(status_callback=f"{server.url}/status").send(message())

    assert twilio.wait_for_callbacks(2)
    assert [(r["MessageStatus"], r["MessageSid"], r["valid"]) for r in received] == [
        ("sent", receipt.message_id, True),
        ("delivered", receipt.message_id, True),
    ]
    assert all(r["token"] for r in received)
