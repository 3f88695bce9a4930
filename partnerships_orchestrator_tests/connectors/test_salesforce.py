"""SalesforceCRM against the loopback Salesforce emulator, and the emulator against
simple-salesforce."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceMoreThanOneRecord

from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ConnectorTimeout,
    QuotaExhausted,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.salesforce import SalesforceCRM, soql_literal
from partnerships_orchestrator_tests.emulators.core import ManualClock
from partnerships_orchestrator_tests.emulators.salesforce import SalesforceEmulator

MakeCRM = Callable[..., SalesforceCRM]
START_MS = 1_700_000_000_000
TOKEN = "/services/oauth2/token"
QUERY = "/services/data/v60.0/query"
SECRET = "sf-client-secret-1"


@pytest.fixture
def make_crm(salesforce: SalesforceEmulator) -> Iterator[MakeCRM]:
    """SalesforceCRM resources logging in at the emulator, with short backoffs."""
    made: list[SalesforceCRM] = []

    def make(**fields: Any) -> SalesforceCRM:
        fields.setdefault("login_url", salesforce.base_url)
        fields.setdefault("client_id", "sf-client-1")
        fields.setdefault("client_secret", SECRET)
        if "refresh_token" not in fields:
            fields["refresh_token"] = salesforce.issue_refresh_token()
        fields.setdefault("backoff_seconds", 0.01)
        fields.setdefault("backoff_max_seconds", 0.05)
        fields.setdefault("timeout_seconds", 5.0)
        crm = SalesforceCRM(**fields)
        made.append(crm)
        return crm

    yield make
    for crm in made:
        crm.close()


def soql_sent(salesforce: SalesforceEmulator) -> list[str]:
    return [parse_qs(r.query)["q"][0] for r in salesforce.requests(QUERY) if r.query]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# ---------------------------------------------------------------- reads


def test_soql_follows_next_records_url_to_done_without_losing_or_repeating_a_record(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    seeded = salesforce.seed("Account", 1234)
    records = list(make_crm(query_batch_size=500).soql("SELECT Id, Name FROM Account ORDER BY Id"))
    assert [r["Id"] for r in records] == seeded
    assert all(set(r) == {"Id", "Name"} for r in records)
    calls = salesforce.requests(QUERY)
    assert [urlsplit(r.path).path.rsplit("-", 1)[-1] for r in calls[1:]] == ["500", "1000"]
    assert calls[0].headers["sforce-query-options"] == "batchSize=500"
    assert [r.path for r in salesforce.requests(TOKEN)] == [TOKEN]


def test_the_refresh_token_grant_is_used_and_the_token_kept_without_expires_in(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 3)
    crm = make_crm()
    crm._clock = clock = ManualClock()
    list(crm.soql("SELECT Id FROM Account"))
    clock.now += 30 * 86400
    list(crm.soql("SELECT Id FROM Account"))
    (token_call,) = salesforce.requests(TOKEN)
    form = token_call.form()
    assert form["grant_type"] == ["refresh_token"] and form["client_id"] == ["sf-client-1"]


def test_without_a_refresh_token_the_client_credentials_grant_is_used(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Contact", 2)
    assert len(make_crm(refresh_token=None).query("Contact", {}, ["Id"], None)) == 2
    assert salesforce.requests(TOKEN)[0].form()["grant_type"] == ["client_credentials"]


def test_an_expired_session_is_refreshed_once_and_the_call_retried(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 2)
    crm = make_crm()
    list(crm.soql("SELECT Id FROM Account"))
    salesforce.expire_sessions()
    assert len(list(crm.soql("SELECT Id FROM Account"))) == 2
    assert [r.path for r in salesforce.requests()] == [TOKEN, QUERY, QUERY, TOKEN, QUERY]
    assert crm.http().stats.auth_refreshes == 1


def test_rest_calls_follow_the_instance_url_of_the_refreshed_token(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 2)
    crm = make_crm()
    list(crm.soql("SELECT Id FROM Account"))
    port = urlsplit(salesforce.base_url).port
    salesforce.configure(instance_url=f"http://localhost:{port}")
    salesforce.expire_sessions()
    assert len(list(crm.soql("SELECT Id FROM Account"))) == 2
    hosts = [r.headers["host"] for r in salesforce.requests(QUERY)]
    assert hosts == [f"127.0.0.1:{port}", f"127.0.0.1:{port}", f"localhost:{port}"]
    assert crm.check()["instance_url"] == f"http://localhost:{port}"


def test_a_rejected_refresh_token_raises_authentication_error_naming_the_connection(
    salesforce: SalesforceEmulator, make_crm: MakeCRM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = "5Aep861revokedRefreshToken0000"
    with pytest.raises(AuthenticationError) as caught:
        list(make_crm(refresh_token=revoked).soql("SELECT Id FROM Account"))
    text = str(caught.value)
    assert text.startswith("salesforce:") and "invalid_grant" in text
    assert "expired access/refresh token" in text
    for secret in (revoked, SECRET):
        assert secret not in text and secret not in caplog.text
    assert not salesforce.requests(QUERY)


def test_a_refresh_refused_after_a_401_ends_the_call_without_looping(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    crm = make_crm()
    list(crm.soql("SELECT Id FROM Account"))
    salesforce.expire_sessions()
    salesforce.configure(refresh_tokens={})
    with pytest.raises(AuthenticationError, match="invalid_grant"):
        list(crm.soql("SELECT Id FROM Account"))
    assert [r.path for r in salesforce.requests()] == [TOKEN, QUERY, QUERY, TOKEN]


def test_a_malformed_query_surfaces_salesforces_message_without_retrying(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    with pytest.raises(VendorValidationError) as caught:
        list(make_crm().soql("SELECT Id FORM Account"))
    assert caught.value.code == "MALFORMED_QUERY" and "unexpected token: 'FORM'" in str(
        caught.value
    )
    assert len(salesforce.requests(QUERY)) == 1


def test_an_expired_query_locator_is_a_clear_error(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 450)
    records = make_crm(query_batch_size=200).soql("SELECT Id FROM Account")
    first = [next(records) for _ in range(200)]
    salesforce.expire_locators()
    with pytest.raises(VendorValidationError) as caught:
        list(records)
    assert len(first) == 200 and caught.value.code == "INVALID_QUERY_LOCATOR"
    assert "run the query again" in str(caught.value)


# ---------------------------------------------------------------- incremental


def test_incremental_sync_handles_systemmodstamp_ties_across_chunks(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    seeded = salesforce.seed("Account", 2_500, start_ms=START_MS, tie_every=3)
    crm = make_crm()
    records = list(crm.iter_modified_since("Account", at(START_MS), ["Name"], chunk_size=301))
    assert [r["Id"] for r in records] == seeded
    stamps = [r["SystemModstamp"] for r in records]
    assert stamps == sorted(stamps)
    sent = soql_sent(salesforce)
    assert len(sent) == 9
    assert all("ORDER BY SystemModstamp ASC, Id ASC" in q and ">=" in q for q in sent)
    assert "Id > '" in sent[1]


def test_incremental_sync_moves_past_more_ties_than_a_chunk_holds(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    same = salesforce.seed("Contact", 700, start_ms=START_MS, step_ms=0)
    later = salesforce.seed("Contact", 5, start_ms=START_MS + 60_000)
    crm = make_crm()
    ids = [r["Id"] for r in crm.iter_modified_since("Contact", at(START_MS), chunk_size=250)]
    assert ids == same + later


def test_incremental_sync_resumes_inside_a_second_from_the_last_id(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    seeded = salesforce.seed("Account", 30, start_ms=START_MS, tie_every=2)
    crm = make_crm()
    everything = list(crm.iter_modified_since("Account", at(START_MS), ["Name"]))
    cursor = everything[10]
    stamp = datetime.strptime(cursor["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    resumed = list(crm.iter_modified_since("Account", stamp, ["Name"], after_id=cursor["Id"]))
    assert [r["Id"] for r in resumed] == seeded[11:]


# ---------------------------------------------------------------- query building


def test_query_builds_escaped_soql_from_equality_filters(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    awkward = "O'Brien \\ Partners\nLtd"
    target = salesforce.add_record("Account", {"Name": awkward, "Industry": "Retail"})
    salesforce.seed("Account", 10)
    crm = make_crm()
    rows = crm.query(
        "Account", {"Name": awkward, "Industry": ["Retail", "Tech"]}, ["Id", "Name"], 5
    )
    assert rows == [{"Id": target, "Name": awkward}]
    assert soql_sent(salesforce)[0] == (
        "SELECT Id, Name FROM Account WHERE Name = 'O\\'Brien \\\\ Partners\\nLtd' "
        "AND Industry IN ('Retail', 'Tech') LIMIT 5"
    )
    injected = crm.query("Account", {"Name": "x' OR Name != '"}, ["Id"], None)
    assert injected == []


def test_query_without_properties_reads_standard_fields(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 3)
    rows = make_crm().query("Account", {"Website": None}, None, None)
    assert rows == []
    rows = make_crm().query("Account", {}, None, 2)
    assert len(rows) == 2 and "Name" in rows[0] and "Partner_Tier__c" not in rows[0]


@pytest.mark.parametrize(
    ("object_name", "filters", "properties"),
    [
        ("Account; DELETE", {}, None),
        ("Account", {"Name = 'x' OR Id": "y"}, None),
        ("Account", {}, ["Id, (SELECT Id FROM Contacts)"]),
        ("Account", {"Name": {"nested": 1}}, None),
    ],
)
def test_query_refuses_unsafe_names_and_values_before_calling(
    salesforce: SalesforceEmulator,
    make_crm: MakeCRM,
    object_name: str,
    filters: dict[str, Any],
    properties: list[str] | None,
) -> None:
    with pytest.raises(VendorValidationError, match="^salesforce: "):
        make_crm().query(object_name, filters, properties, None)
    assert not salesforce.requests(QUERY)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "null"),
        (True, "true"),
        (42, "42"),
        (2.5, "2.5"),
        ("it's", "'it\\'s'"),
        ("a\\b", "'a\\\\b'"),
        ("tab\there", "'tab\\there'"),
        (datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC), "2024-01-02T03:04:05Z"),
    ],
)
def test_soql_literals(value: Any, literal: str) -> None:
    assert soql_literal(value) == literal


# ---------------------------------------------------------------- writes


def test_upsert_by_external_id_creates_then_updates(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    crm = make_crm()
    created = crm.upsert("Account", "External_Id__c", "P/42 #a?", {"Name": "Partner 42"})
    assert created["created"] is True and created["success"] is True
    updated = crm.upsert("Account", "External_Id__c", "P/42 #a?", {"Industry": "Retail"})
    assert updated == {"id": created["id"], "success": True, "errors": [], "created": False}
    record = salesforce.record("Account", created["id"])
    assert record is not None and record["Industry"] == "Retail" and record["Name"] == "Partner 42"
    assert record["External_Id__c"] == "P/42 #a?"


def test_upsert_on_an_old_api_version_handles_204(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    crm = make_crm(api_version="v45.0")
    crm.upsert("Contact", "External_Id__c", "c-1", {"LastName": "Ng"})
    assert crm.upsert("Contact", "External_Id__c", "c-1", {"Title": "CTO"}) == {
        "id": None,
        "created": False,
        "success": True,
        "errors": [],
    }


def test_upsert_matching_several_records_names_them(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    first = salesforce.add_record("Account", {"Name": "A", "External_Id__c": "dup"})
    second = salesforce.add_record("Account", {"Name": "B", "External_Id__c": "dup"})
    with pytest.raises(VendorValidationError) as caught:
        make_crm().upsert("Account", "External_Id__c", "dup", {"Name": "C"})
    assert caught.value.status == 300 and first in str(caught.value) and second in str(caught.value)


def test_upsert_surfaces_field_errors(salesforce: SalesforceEmulator, make_crm: MakeCRM) -> None:
    with pytest.raises(VendorValidationError) as caught:
        make_crm().upsert("Contact", "External_Id__c", "c-2", {"FirstName": "No last name"})
    assert caught.value.code == "REQUIRED_FIELD_MISSING"
    assert "Required fields are missing: [LastName] (fields: LastName)" in str(caught.value)


def test_create_many_sends_collections_of_200_and_returns_per_record_results(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    records: list[dict[str, Any]] = [
        {"LastName": f"L{i}", "Email": f"l{i}@x.com"} for i in range(450)
    ]
    records[3] = {"FirstName": "no last name"}
    records[420]["Email"] = "broken"
    results = make_crm().create_many("Contact", records)
    assert len(results) == 450
    assert [i for i, r in enumerate(results) if not r["success"]] == [3, 420]
    assert results[3]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert results[420]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    bodies = [r.json() for r in salesforce.requests("/services/data/v60.0/composite/sobjects")]
    assert [len(b["records"]) for b in bodies] == [200, 200, 50]
    assert all(b["allOrNone"] is False for b in bodies)
    assert bodies[0]["records"][0]["attributes"] == {"type": "Contact"}
    assert salesforce.count("Contact") == 448


def test_create_many_refuses_records_with_an_id(make_crm: MakeCRM) -> None:
    with pytest.raises(VendorValidationError, match="carries an Id"):
        make_crm().create_many("Contact", [{"LastName": "x", "Id": "003000000000001AAA"}])


# ---------------------------------------------------------------- limits and failures


def test_request_limit_exceeded_backs_off_then_succeeds(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.seed("Account", 2)
    limited = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    salesforce.add_fault(path=QUERY, status=403, body=limited, times=2)
    crm = make_crm()
    assert len(list(crm.soql("SELECT Id FROM Account"))) == 2
    assert crm.http().stats.rate_limited == 2
    assert len(salesforce.requests(QUERY)) == 3


def test_a_persisting_request_limit_raises_quota_exhausted(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    crm = make_crm(max_attempts=3)
    list(crm.soql("SELECT Id FROM Account"))
    salesforce.configure(request_limit_exceeded=True)
    with pytest.raises(QuotaExhausted) as caught:
        list(crm.soql("SELECT Id FROM Account"))
    assert caught.value.code == "REQUEST_LIMIT_EXCEEDED" and not caught.value.retryable
    assert len(salesforce.requests(QUERY)) == 1 + 3


def test_sforce_limit_info_is_read_into_the_usage(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.configure(api_usage=41, api_limit=5000)
    crm = make_crm()
    list(crm.soql("SELECT Id FROM Account"))
    assert crm.api_usage == (42, 5000)
    report = crm.check()
    assert report["ok"] is True and report["api_usage"] == "43/5000"


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "body": [{"message": "busy", "errorCode": "SERVER_UNAVAILABLE"}]},
        {"status": 500, "body": [{"message": "oops", "errorCode": "UNKNOWN_EXCEPTION"}]},
        {"action": "drop_connection"},
        {"action": "malformed_json"},
    ],
)
def test_transient_failures_are_retried(
    salesforce: SalesforceEmulator, make_crm: MakeCRM, fault: dict[str, Any]
) -> None:
    salesforce.seed("Account", 2)
    salesforce.add_fault(path=QUERY, **fault)
    assert len(list(make_crm().soql("SELECT Id FROM Account"))) == 2
    assert len(salesforce.requests(QUERY)) == 2


def test_persistent_5xx_raises_vendor_unavailable(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.add_fault(path=QUERY, status=503, times=None)
    with pytest.raises(VendorUnavailable, match="^salesforce: GET /services/data/v60.0/query"):
        list(make_crm(max_attempts=2).soql("SELECT Id FROM Account"))


def test_a_slow_instance_raises_connector_timeout(
    salesforce: SalesforceEmulator, make_crm: MakeCRM
) -> None:
    salesforce.add_fault(path=QUERY, action="delay", delay_seconds=1.0, times=None)
    with pytest.raises(ConnectorTimeout, match="salesforce"):
        list(make_crm(timeout_seconds=0.2, max_attempts=2).soql("SELECT Id FROM Account"))
    assert len(salesforce.requests(QUERY)) == 2


def test_secret_references_are_resolved_late_and_never_logged(
    salesforce: SalesforceEmulator,
    make_crm: MakeCRM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    refresh = salesforce.issue_refresh_token()
    crm = make_crm(client_secret="${env:SF_TEST_SECRET}", refresh_token="${env:SF_TEST_REFRESH}")
    monkeypatch.setenv("SF_TEST_SECRET", SECRET)
    monkeypatch.setenv("SF_TEST_REFRESH", refresh)
    list(crm.soql("SELECT Id FROM Account"))
    access = salesforce.requests(QUERY)[0].headers["authorization"].removeprefix("Bearer ")
    echo = [{"message": f"bad session {access} / {refresh}", "errorCode": "INVALID_FIELD"}]
    salesforce.add_fault(path=QUERY, status=400, body=echo)
    with pytest.raises(VendorValidationError) as caught:
        list(crm.soql("SELECT Id FROM Account"))
    assert crm.client_secret == "${env:SF_TEST_SECRET}"
    for secret in (SECRET, refresh, access):
        assert secret not in str(caught.value) and secret not in caplog.text
    assert "***" in str(caught.value)


def test_check_reports_failure_without_raising_or_leaking(make_crm: MakeCRM) -> None:
    report = make_crm(client_secret="wrong-secret-value").check()
    assert report["ok"] is False and report["connection"] == "salesforce"
    assert "invalid_client" in report["detail"] and "wrong-secret-value" not in repr(report)


# ---------------------------------------------------------------- the emulator speaks Salesforce


class LoopbackAdapter(HTTPAdapter):
    """simple-salesforce builds https:// URLs on Salesforce hosts: send them to the emulator."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.netloc = urlsplit(base_url).netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        request.url = urlunsplit(("http", self.netloc, parts.path, parts.query, ""))
        request.headers["Host"] = self.netloc
        return super().send(request, **kwargs)


@pytest.fixture
def sdk_session(salesforce: SalesforceEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount("https://", LoopbackAdapter(salesforce.base_url or ""))
    yield session
    session.close()


def test_simple_salesforce_queries_creates_and_upserts_against_the_emulator(
    salesforce: SalesforceEmulator, sdk_session: requests.Session
) -> None:
    seeded = salesforce.seed("Account", 2_345)
    sf = Salesforce(
        instance_url=salesforce.base_url,
        session_id=salesforce.issue_session(),
        session=sdk_session,
        version="60.0",
    )
    result = sf.query_all("SELECT Id, Name FROM Account ORDER BY Id")
    assert result["totalSize"] == 2_345 and [r["Id"] for r in result["records"]] == seeded
    assert result["records"][0]["attributes"]["type"] == "Account"
    contact: Any = sf.Contact  # typed by the SDK as a union with its bulk handlers
    created = contact.create({"LastName": "Lovelace", "External_Id__c": "ada"})
    assert created["success"] is True and created["id"].startswith("003")
    assert contact.upsert("External_Id__c/grace", {"LastName": "Hopper"}) == 201
    assert contact.upsert("External_Id__c/grace", {"Title": "Admiral"}) == 200
    assert contact.get(created["id"])["LastName"] == "Lovelace"
    salesforce.add_record("Contact", {"LastName": "Twin", "External_Id__c": "twin"})
    salesforce.add_record("Contact", {"LastName": "Twin", "External_Id__c": "twin"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        contact.upsert("External_Id__c/twin", {"Title": "x"})
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FORM Account")
    content: Any = caught.value.content
    assert content[0]["errorCode"] == "MALFORMED_QUERY"
    assert sf.api_usage["api-usage"].total == 15_000


def test_simple_salesforce_logs_in_with_client_credentials_and_relogs_after_expiry(
    salesforce: SalesforceEmulator, sdk_session: requests.Session
) -> None:
    salesforce.seed("Account", 3)
    sf = Salesforce(
        consumer_key="sf-client-1",
        consumer_secret=SECRET,
        domain="acme.my",
        session=sdk_session,
        version="60.0",
    )
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 3
    salesforce.expire_sessions()
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 3
    token_calls = salesforce.requests(TOKEN)
    assert len(token_calls) == 2
    assert token_calls[0].headers["authorization"].startswith("Basic ")


def test_emulator_answers_401_as_a_json_array_and_omits_limit_info_on_versions(
    salesforce: SalesforceEmulator,
) -> None:
    with httpx.Client(base_url=salesforce.base_url or "") as http:
        refused = http.get(QUERY, params={"q": "SELECT Id FROM Account"})
        versions = http.get("/services/data/")
    assert refused.status_code == 401
    assert refused.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]
    assert versions.status_code == 200 and "Sforce-Limit-Info" not in versions.headers
