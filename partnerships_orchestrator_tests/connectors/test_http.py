"""The shared HTTP client against a real loopback server with injected faults."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ConnectorTimeout,
    QuotaExhausted,
    RateLimitExceeded,
    ResourceNotFound,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import (
    Action,
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    HttpClient,
    Redactor,
    ResponsePolicy,
    RetrySettings,
    Timeouts,
    Verdict,
    parse_retry_after,
)
from partnerships_orchestrator.connectors.ratelimit import RateLimit
from partnerships_orchestrator_tests.emulators.generic import GenericEmulator

MakeClient = Callable[..., HttpClient]
TOKEN = "tok-S3CR3T-4f9a"
API_KEY = "key/with+special&chars"


def test_get_sends_auth_and_params_and_returns_the_answer(make_client: MakeClient) -> None:
    client = make_client(auth=BearerAuth(TOKEN), headers={"User-Agent": "partnerships"})
    answer = client.request_json("GET", "/echo", params={"limit": 100})
    assert answer["query"] == {"limit": "100"}
    assert answer["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert answer["headers"]["user-agent"] == "partnerships"
    assert client.stats.as_dict() | {"wait_seconds": 0} == {
        "requests": 1,
        "retries": 0,
        "rate_limited": 0,
        "auth_refreshes": 0,
        "failures": 0,
        "wait_seconds": 0,
    }


def test_basic_and_header_auth_are_sent(make_client: MakeClient, generic: GenericEmulator) -> None:
    basic = make_client(auth=BasicAuth("api", generic.state.basic_password))
    assert basic.request_json("GET", "/basic") == {"ok": True}
    header = make_client(auth=HeaderAuth("X-Vault-Token", TOKEN))
    assert header.request_json("GET", "/echo")["headers"]["x-vault-token"] == TOKEN


def test_429_with_retry_after_seconds_waits_then_succeeds(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(
        path="/echo", status=429, body={"message": "slow down"}, headers={"Retry-After": "1"}
    )
    client = make_client()
    started = time.monotonic()
    assert client.request_json("GET", "/echo")["path"] == "/echo"
    assert time.monotonic() - started >= 1.0
    assert len(generic.requests("/echo")) == 2
    stats = client.stats
    assert (stats.requests, stats.retries, stats.rate_limited) == (2, 1, 1)
    assert stats.wait_seconds >= 0.5  # counted from the retry's start, a hair after the 429


def test_429_with_retry_after_http_date_waits_until_then(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    started = time.monotonic()
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    generic.add_fault(path="/echo", status=429, headers={"Retry-After": when})
    client = make_client()
    client.request("GET", "/echo")
    assert len(generic.requests("/echo")) == 2
    # an HTTP-date has whole seconds: 2 s ahead, truncated, is still at least 1 s away
    assert time.monotonic() - started >= 0.9


def test_5xx_is_retried_then_succeeds(make_client: MakeClient, generic: GenericEmulator) -> None:
    generic.add_fault(path="/echo", status=503, body={"message": "maintenance"}, times=2)
    client = make_client()
    assert client.request("GET", "/echo").status_code == 200
    assert len(generic.requests("/echo")) == 3
    assert client.stats.retries == 2


def test_exhausted_retries_raise_vendor_unavailable_naming_the_connection(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", status=502, body={"message": "bad gateway"}, times=None)
    client = make_client(retry=RetrySettings(attempts=3, backoff_initial=0.01))
    with pytest.raises(VendorUnavailable) as caught:
        client.request("GET", "/echo")
    error = caught.value
    assert (error.vendor, error.status, error.retryable) == ("generic", 502, True)
    assert "generic: GET /echo failed after 3 attempts: HTTP 502: bad gateway" in str(error)
    assert len(generic.requests("/echo")) == 3


def test_rate_limited_on_every_attempt_raises_rate_limit_exceeded(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", status=429, headers={"Retry-After": "0"}, times=None)
    client = make_client(retry=RetrySettings(attempts=3))
    with pytest.raises(RateLimitExceeded) as caught:
        client.request("GET", "/echo")
    assert caught.value.status == 429
    assert client.stats.rate_limited == 3
    assert len(generic.requests("/echo")) == 3


def test_retry_after_beyond_the_cap_ends_the_call_at_once(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", status=429, headers={"Retry-After": "3600"})
    client = make_client(retry=RetrySettings(attempts=5, max_retry_after=60))
    with pytest.raises(RateLimitExceeded) as caught:
        client.request("GET", "/echo")
    assert caught.value.retry_after == 3600
    assert "asked to wait 3600 s" in str(caught.value)
    assert len(generic.requests("/echo")) == 1


def test_validation_error_is_not_retried_and_carries_the_vendor_message(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    client = make_client()
    with pytest.raises(VendorValidationError) as caught:
        client.request("POST", "/validate", json={"title": "no name"})
    error = caught.value
    assert (error.status, error.code, error.retryable) == (400, "VALIDATION_ERROR", False)
    assert "name is required" in str(error)
    assert len(generic.requests("/validate")) == 1
    assert client.stats.retries == 0


def test_404_raises_resource_not_found(make_client: MakeClient, generic: GenericEmulator) -> None:
    with pytest.raises(ResourceNotFound) as caught:
        make_client().request("GET", "/no/such/thing")
    assert caught.value.status == 404
    assert len(generic.requests("/no/such")) == 1


def test_401_with_a_static_token_fails_without_retrying(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make_client(auth=BearerAuth(TOKEN)).request("GET", "/protected")
    assert caught.value.code == "INVALID_AUTHENTICATION"
    assert len(generic.requests("/protected")) == 1


def test_dropped_connection_is_retried(make_client: MakeClient, generic: GenericEmulator) -> None:
    generic.add_fault(path="/echo", action="drop_connection")
    client = make_client()
    assert client.request_json("GET", "/echo")["method"] == "GET"
    assert len(generic.requests("/echo")) == 2
    assert client.stats.retries == 1


def test_dropped_connection_every_time_raises_vendor_unavailable(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", action="drop_connection", times=None)
    with pytest.raises(VendorUnavailable) as caught:
        make_client(retry=RetrySettings(attempts=2, backoff_initial=0.01)).request("GET", "/echo")
    assert caught.value.status is None
    assert "generic: GET /echo failed after 2 attempts" in str(caught.value)


def test_timeout_raises_connector_timeout_after_retries(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", action="delay", delay_seconds=1.0, times=None)
    client = make_client(
        timeouts=Timeouts(connect=1.0, read=0.2, write=1.0, pool=1.0),
        retry=RetrySettings(attempts=2, backoff_initial=0.01),
    )
    with pytest.raises(ConnectorTimeout) as caught:
        client.request("GET", "/echo")
    assert "after 2 attempts" in str(caught.value)
    assert len(generic.requests("/echo")) == 2


def test_malformed_json_is_retried(make_client: MakeClient, generic: GenericEmulator) -> None:
    generic.add_fault(path="/echo", action="malformed_json")
    assert make_client().request_json("GET", "/echo")["path"] == "/echo"
    assert len(generic.requests("/echo")) == 2


def test_no_content_answers_decode_to_none(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", status=204)
    assert make_client().request_json("DELETE", "/echo") is None


def test_retry_false_gives_up_at_the_first_failure(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(path="/echo", status=503, times=None)
    with pytest.raises(VendorUnavailable):
        make_client().request("POST", "/echo", json={"send": "once"}, retry=False)
    assert len(generic.requests("/echo")) == 1


def test_secrets_never_appear_in_errors_or_logs(
    make_client: MakeClient, generic: GenericEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"token {TOKEN} and key {API_KEY} are not accepted"
    generic.add_fault(path="/echo", status=503, body={"message": echo})
    generic.add_fault(path="/echo", status=400, body={"message": echo})
    client = make_client(auth=BearerAuth(TOKEN), secrets=[API_KEY])
    with pytest.raises(VendorValidationError) as caught:
        client.request("GET", "/echo", params={"api_key": API_KEY})
    texts = [str(caught.value), caught.value.message, caught.value.hint or "", caplog.text]
    assert any("***" in text for text in texts)
    for text in texts:
        assert TOKEN not in text
        assert API_KEY not in text
        assert httpx.QueryParams({"k": API_KEY}).get("k") not in text
    assert "generic: GET /echo" in caplog.text
    assert any(r.name == "partnerships.connectors.generic" for r in caplog.records)


def test_redact_replaces_secrets_and_their_url_encodings() -> None:
    redactor = Redactor([API_KEY])
    redactor.add_source(lambda: ["rotating-token"])
    text = f"{API_KEY} key%2Fwith%2Bspecial%26chars key%2Fwith%2Bspecial%26chars rotating-token"
    assert redactor.redact(text) == "*** *** *** ***"


class SlackLikePolicy(ResponsePolicy):
    """HTTP 200 ``{"ok": false, "error": "ratelimited"}`` is a rate limit, other errors fail."""

    def classify(self, response: httpx.Response) -> Verdict:
        verdict = super().classify(response)
        if verdict.action is not Action.OK or response.status_code != 200:
            return verdict
        body = response.json()
        if body.get("ok") is False and body.get("error") == "ratelimited":
            return Verdict.rate_limited("ratelimited", retry_after=self.retry_after(response))
        if body.get("ok") is False:
            return Verdict.fail(VendorValidationError, body["error"], code=body["error"])
        return verdict


class DailyQuotaPolicy(ResponsePolicy):
    """HubSpot-like: a 429 whose body names the DAILY policy means stop."""

    def classify(self, response: httpx.Response) -> Verdict:
        if response.status_code == 429 and response.json().get("policyName") == "DAILY":
            return Verdict.fail(QuotaExhausted, self.error_message(response), code="DAILY")
        return super().classify(response)


def test_a_vendor_policy_turns_200_ok_false_into_a_retried_rate_limit(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.add_fault(
        path="/echo",
        status=200,
        body={"ok": False, "error": "ratelimited"},
        headers={"Retry-After": "0"},
    )
    generic.add_fault(path="/echo", status=200, body={"ok": False, "error": "channel_not_found"})
    client = make_client(policy=SlackLikePolicy())
    with pytest.raises(VendorValidationError) as caught:
        client.request("POST", "/echo", json={"channel": "C1"})
    assert caught.value.code == "channel_not_found"
    assert client.stats.rate_limited == 1
    assert len(generic.requests("/echo")) == 2


def test_a_vendor_policy_stops_on_an_exhausted_daily_quota(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    body = {
        "status": "error",
        "message": "You have reached your daily limit.",
        "policyName": "DAILY",
    }
    generic.add_fault(path="/echo", status=429, body=body, times=None)
    with pytest.raises(QuotaExhausted) as caught:
        make_client(policy=DailyQuotaPolicy()).request("GET", "/echo")
    assert caught.value.retryable is False
    assert "daily limit" in str(caught.value)
    assert len(generic.requests("/echo")) == 1


def test_bulk_calls_at_the_vendor_ceiling_draw_no_429(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    generic.configure(limit=25, window=1.0, burst=2)
    paced = make_client(rate_limit=RateLimit(requests=25, per_seconds=1))
    for _ in range(30):
        paced.request("GET", "/limited")
    assert paced.stats.rate_limited == 0
    assert len(generic.requests("/limited")) == 30

    unpaced = make_client()
    with pytest.raises(RateLimitExceeded):
        for _ in range(30):
            unpaced.request("GET", "/limited", retry=False)


def test_remaining_quota_headers_hold_the_next_call_until_the_reset(
    make_client: MakeClient, generic: GenericEmulator
) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    generic.add_fault(path="/echo", status=200, body={"ok": True}, headers=headers)
    client = make_client()
    client.request("GET", "/echo")
    assert client.stats.wait_seconds == 0
    client.request("GET", "/echo")
    assert client.stats.wait_seconds >= 0.5
    assert client.stats.rate_limited == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-2", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(value, now=now) == seconds


def test_emulator_control_plane_over_http(generic: GenericEmulator) -> None:
    with httpx.Client(base_url=generic.base_url or "") as http:
        fault = {"path": "/echo", "status": 418, "body": {"message": "teapot"}}
        assert http.post("/__emulator/faults", json=fault).json() == {"pending": 1}
        assert http.get("/echo").status_code == 418
        assert http.get("/echo").status_code == 200
        journal = http.get("/__emulator/requests", params={"path": "/echo"}).json()["requests"]
        assert [r["path"] for r in journal] == ["/echo", "/echo"]
        before = time.time()
        now = http.post("/__emulator/clock", json={"advance": 3600}).json()["now"]
        assert now >= before + 3600
        http.post("/__emulator/reset")
        assert http.get("/__emulator/requests").json() == {"requests": []}
        assert generic.clock.now() < before + 3600
