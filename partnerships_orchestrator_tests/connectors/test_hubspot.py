"""HubSpotCRM against the loopback HubSpot emulator, and the emulator against HubSpot's own SDK."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.contacts import ApiException, Filter, FilterGroup, PublicObjectSearchRequest

from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ConnectorTimeout,
    QuotaExhausted,
    VendorUnavailable,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.hubspot import HubSpotCRM
from partnerships_orchestrator.errors import SecretError
from partnerships_orchestrator_tests.emulators.core import ManualClock
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator, to_ms

MakeCRM = Callable[..., HubSpotCRM]
START_MS = 1_700_000_000_000
CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"
FAST = {"requests": 10_000, "per_seconds": 1}
BULK = {"search_limit": 10_000, "ten_secondly_limit": 100_000}  # vendor limits out of the way


@pytest.fixture
def make_crm(hubspot: HubSpotEmulator) -> Iterator[MakeCRM]:
    """HubSpotCRM resources pointed at the emulator, with short backoffs; closed afterwards."""
    made: list[HubSpotCRM] = []

    def make(**fields: Any) -> HubSpotCRM:
        fields.setdefault("base_url", hubspot.base_url)
        fields.setdefault("rate_limit", FAST)
        fields.setdefault("search_rate_limit", FAST)
        fields.setdefault("backoff_seconds", 0.01)
        fields.setdefault("backoff_max_seconds", 0.05)
        fields.setdefault("timeout_seconds", 5.0)
        if "token" not in fields and "refresh_token" not in fields:
            fields["token"] = hubspot.issue_private_token()
        crm = HubSpotCRM(**fields)
        made.append(crm)
        return crm

    yield make
    for crm in made:
        crm.close()


def oauth_fields(hubspot: HubSpotEmulator) -> dict[str, str]:
    return {
        "client_id": "hs-client-1",
        "client_secret": "hs-client-secret-1",
        "refresh_token": hubspot.issue_refresh_token(),
    }


def since(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# ---------------------------------------------------------------- reads


def test_listing_follows_after_to_the_end_without_losing_or_repeating_a_record(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    seeded = hubspot.seed("contacts", 1234)
    records = list(make_crm().list_objects("contacts", ["email"]))
    assert [r["id"] for r in records] == seeded
    assert all(set(r["properties"]) == {"email"} for r in records)
    pages = hubspot.requests(CONTACTS, "GET")
    assert len(pages) == 13
    assert "limit=100" in pages[0].query and "after=" not in pages[0].query


def test_a_list_limit_stops_paging_early(hubspot: HubSpotEmulator, make_crm: MakeCRM) -> None:
    hubspot.seed("companies", 300)
    assert len(list(make_crm().list_objects("companies", limit=150))) == 150
    queries = [r.query for r in hubspot.requests("/crm/v3/objects/companies")]
    assert len(queries) == 2 and "limit=50" in queries[1]


def test_query_without_filters_lists_and_flattens_properties_with_the_id(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    ids = hubspot.seed("contacts", 5)
    rows = make_crm().query(object="contacts", filters={}, properties=["email"], limit=3)
    assert rows == [
        {"id": ids[i], "email": hubspot.record("contacts", ids[i]).properties["email"]}  # type: ignore[union-attr]
        for i in range(3)
    ]
    assert not hubspot.requests(SEARCH)


def test_query_with_filters_sends_eq_and_in_search_filters(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 30)
    rows = make_crm().query(
        object="contacts",
        filters={
            "partner_tier": "gold",
            "lastname": ["Last1001", "Last1002", "Last1005", "Last1008"],
        },
        properties=["lastname", "partner_tier"],
        limit=None,
    )
    assert {r["lastname"] for r in rows} == {"Last1002", "Last1005", "Last1008"}
    assert all(r["partner_tier"] == "gold" and r["id"] for r in rows)
    body = hubspot.requests(SEARCH)[0].json()
    operators = [f["operator"] for f in body["filterGroups"][0]["filters"]]
    assert operators == ["EQ", "IN"]


def test_search_pages_by_200_and_stops_cleanly_at_the_10k_cap(
    hubspot: HubSpotEmulator, make_crm: MakeCRM, caplog: pytest.LogCaptureFixture
) -> None:
    hubspot.configure(**BULK)
    hubspot.seed("contacts", 10_050)
    found = list(make_crm().search("contacts", properties=["email"]))
    assert len(found) == 10_000
    assert len({r["id"] for r in found}) == 10_000
    bodies = [r.json() for r in hubspot.requests(SEARCH)]
    assert len(bodies) == 50
    assert {b["limit"] for b in bodies} == {200}
    assert max(int(b["after"]) for b in bodies) == 9_800
    assert "10,000-result cap" in caplog.text


def test_a_query_past_the_search_cap_is_refused_rather_than_truncated(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.configure(**BULK)
    hubspot.seed("contacts", 10_050)
    with pytest.raises(VendorValidationError, match="10,000-result search cap"):
        make_crm().query(
            object="contacts",
            filters={"partner_tier": ["gold", "silver", "bronze"]},
            properties=None,
            limit=None,
        )


def test_incremental_sync_splits_the_window_before_the_cap_and_yields_each_record_once(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.configure(**BULK)
    seeded = hubspot.seed("contacts", 12_345, start_ms=START_MS, tie_every=3)
    crm = make_crm()
    records = list(crm.iter_modified_since("contacts", since(START_MS), ["email"]))
    assert [r["id"] for r in records] == seeded
    stamps = [to_ms(r["properties"]["lastmodifieddate"]) or 0 for r in records]
    assert stamps == sorted(stamps)
    bodies = [r.json() for r in hubspot.requests(SEARCH)]
    assert all(int(b["after"]) < 10_000 for b in bodies)
    lower_bounds = {b["filterGroups"][0]["filters"][0]["value"] for b in bodies}
    assert len(lower_bounds) == 2  # the window was split once, at the last timestamp read


def test_incremental_sync_starts_at_since_inclusive(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    seeded = hubspot.seed("deals", 50, start_ms=START_MS, step_ms=1000)
    records = list(make_crm().iter_modified_since("deals", since(START_MS + 20_000), ["dealname"]))
    assert [r["id"] for r in records] == seeded[20:]
    assert (
        hubspot.requests("/crm/v3/objects/deals/search")[0].json()["filterGroups"][0]["filters"][0][
            "propertyName"
        ]
        == "hs_lastmodifieddate"
    )


def test_more_records_than_the_cap_at_one_instant_are_paged_by_id(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.configure(**BULK)
    same = hubspot.seed("companies", 10_030, start_ms=START_MS, step_ms=0)
    later = hubspot.seed("companies", 20, start_ms=START_MS + 5_000)
    records = list(make_crm().iter_modified_since("companies", since(START_MS), ["name"]))
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 10_050
    assert ids == same + later


def test_batch_read_returns_the_objects_found_in_chunks_of_100(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    ids = hubspot.seed("contacts", 150)
    found = make_crm().batch_read("contacts", [*ids, "999999"], ["email"])
    assert sorted(r["id"] for r in found) == sorted(ids)
    assert [len(r.json()["inputs"]) for r in hubspot.requests(f"{CONTACTS}/batch/read")] == [
        100,
        51,
    ]


def test_associated_ids_read_v4_batches_primary_first_and_skip_records_without_any(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    deals = hubspot.seed("deals", 150)
    companies = hubspot.seed("companies", 3)
    for n, deal in enumerate(deals[:140]):
        hubspot.associate("deals", deal, "companies", companies[n % 2])
    hubspot.associate("deals", deals[0], "companies", companies[2], primary=True)
    found = make_crm().associated_ids("deals", "companies", deals)
    assert set(found) == set(deals[:140])  # the last 10 have none: left out, no error
    assert found[deals[0]] == [companies[2], companies[0]]  # primary first
    assert found[deals[1]] == [companies[1]]
    calls = hubspot.requests("/crm/v4/associations/deals/companies/batch/read")
    assert [len(r.json()["inputs"]) for r in calls] == [100, 50]
    # the emulator answers in HubSpot's shape: the official SDK reads it, and list / get
    # return the v3 `associations` the SDK knows too
    client = HubSpot(access_token=hubspot.issue_private_token(), host=hubspot.base_url)
    page = client.crm.associations.v4.batch_api.get_page(
        "deals",
        "companies",
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": deals[0]}]),
    )
    (result,) = page.results
    assert result._from.id == deals[0]
    assert [str(t.to_object_id) for t in result.to] == [companies[0], companies[2]]
    assert {a.label for a in result.to[1].association_types} == {"Primary", None}
    deal = client.crm.deals.basic_api.get_by_id(deals[1], associations=["companies"])
    assert [a.id for a in deal.associations["companies"].results] == [companies[1]]
    listed = client.crm.deals.basic_api.get_page(limit=2, associations=["companies"])
    assert [[a.id for a in r.associations["companies"].results] for r in listed.results] == [
        [companies[0], companies[2]],
        [companies[1]],
    ]


# ---------------------------------------------------------------- writes


def test_batch_upsert_reports_refused_records_without_raising(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    records: list[dict[str, Any]] = [
        {"email": f"p{i}@partner.example.com", "firstname": f"P{i}"} for i in range(250)
    ]
    records[7]["email"] = "not-an-email"
    records[130]["shoe_size"] = "44"
    crm = make_crm()
    result = crm.batch_upsert("contacts", records, "email")
    assert [(e.index, e.id) for e in result.errors] == [
        (7, "not-an-email"),
        (130, records[130]["email"]),
    ]
    assert "INVALID_EMAIL" in result.errors[0].message
    assert 'Property "shoe_size" does not exist' in result.errors[1].message
    assert result.created == 248 and not result.ok
    assert [len(r.json()["inputs"]) for r in hubspot.requests(f"{CONTACTS}/batch/upsert")] == [
        100,
        100,
        50,
    ]
    again = crm.batch_upsert("contacts", records[:3], "email")
    assert again.ok and again.updated == 3 and again.created == 0
    assert hubspot.count("contacts") == 248


def test_a_request_the_vendor_refuses_surfaces_its_message(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    with pytest.raises(VendorValidationError) as caught:
        list(
            make_crm().search("contacts", [{"propertyName": "nope", "operator": "EQ", "value": 1}])
        )
    assert 'Property "nope" does not exist' in str(caught.value)
    assert caught.value.code == "VALIDATION_ERROR" and caught.value.status == 400
    assert len(hubspot.requests(SEARCH)) == 1


# ---------------------------------------------------------------- limits and failures


def test_ten_secondly_429_waits_the_interval_then_succeeds(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 3)
    hubspot.add_fault(
        path=CONTACTS,
        status=429,
        body={
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "TEN_SECONDLY_ROLLING",
        },
        headers={
            "X-HubSpot-RateLimit-Interval-Milliseconds": "50",
            "X-HubSpot-RateLimit-Remaining": "0",
        },
    )
    crm = make_crm()
    assert len(list(crm.list_objects("contacts"))) == 3
    assert crm.http().stats.rate_limited == 1
    assert len(hubspot.requests(CONTACTS)) == 2


def test_rate_limit_headers_pace_bulk_reads_under_the_vendor_window(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 500)
    hubspot.configure(ten_secondly_limit=2, window_seconds=0.1)
    crm = make_crm()
    assert len(list(crm.list_objects("contacts"))) == 500
    assert crm.http().stats.rate_limited == 0
    assert crm.http().limiter.waited_seconds > 0


def test_daily_limit_raises_quota_exhausted_and_stops_calling(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 500)
    hubspot.configure(daily_limit=2)
    crm = make_crm()
    with pytest.raises(QuotaExhausted) as caught:
        list(crm.list_objects("contacts"))
    assert caught.value.code == "DAILY" and not caught.value.retryable
    assert "daily limit" in str(caught.value)
    assert len(hubspot.requests(CONTACTS)) == 3
    with pytest.raises(QuotaExhausted):
        crm.query(object="contacts", filters={}, properties=None, limit=1)
    assert len(hubspot.requests(CONTACTS)) == 4


def test_search_secondly_429_without_headers_backs_off_and_retries(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 10)
    hubspot.configure(search_limit=1, search_window=0.05)
    crm = make_crm(search_rate_limit={"requests": 100, "per_seconds": 0.05})
    for _ in range(3):
        assert len(list(crm.search("contacts", limit=5))) == 5
    assert crm.http().stats.rate_limited >= 1
    assert crm.http().stats.failures == 0


@pytest.mark.parametrize(
    ("status", "headers"),
    [(502, {}), (503, {}), (504, {}), (524, {}), (477, {"Retry-After": "0"}), (423, {})],
)
def test_transient_statuses_are_retried(
    hubspot: HubSpotEmulator, make_crm: MakeCRM, status: int, headers: dict[str, str]
) -> None:
    hubspot.seed("contacts", 2)
    hubspot.add_fault(path=CONTACTS, status=status, headers=headers, body={"message": "busy"})
    assert len(list(make_crm().list_objects("contacts"))) == 2
    assert len(hubspot.requests(CONTACTS)) == 2


def test_persistent_5xx_raises_vendor_unavailable_naming_the_connection(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.add_fault(path=CONTACTS, status=500, times=None)
    with pytest.raises(VendorUnavailable, match=r"^hubspot: GET /crm/v3/objects/contacts failed"):
        list(make_crm(max_attempts=3).list_objects("contacts"))
    assert len(hubspot.requests(CONTACTS)) == 3


def test_dropped_connections_and_malformed_json_are_retried(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 4)
    hubspot.add_fault(path=CONTACTS, action="drop_connection")
    hubspot.add_fault(path=CONTACTS, action="malformed_json")
    assert len(list(make_crm().list_objects("contacts"))) == 4
    assert len(hubspot.requests(CONTACTS)) == 3


def test_a_slow_vendor_raises_connector_timeout(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.add_fault(path=CONTACTS, action="delay", delay_seconds=1.0, times=None)
    with pytest.raises(ConnectorTimeout, match="hubspot"):
        list(make_crm(timeout_seconds=0.2, max_attempts=2).list_objects("contacts"))
    assert len(hubspot.requests(CONTACTS)) == 2


# ---------------------------------------------------------------- authentication


def test_oauth_refreshes_the_token_when_expires_in_has_passed(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 1)
    crm = make_crm(**oauth_fields(hubspot))
    crm._clock = clock = ManualClock()
    list(crm.list_objects("contacts"))
    clock.now += 1800
    hubspot.clock.advance(1800)
    list(crm.list_objects("contacts"))
    paths = [r.path for r in hubspot.requests()]
    assert paths == ["/oauth/v1/token", CONTACTS, "/oauth/v1/token", CONTACTS]
    form = hubspot.requests("/oauth/v1/token")[0].form()
    assert form["grant_type"] == ["refresh_token"] and form["client_id"] == ["hs-client-1"]
    assert crm.http().stats.auth_refreshes == 0


def test_oauth_refreshes_once_on_an_expired_authentication_401(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    hubspot.seed("contacts", 1)
    crm = make_crm(**oauth_fields(hubspot))
    list(crm.list_objects("contacts"))
    hubspot.expire_access_tokens()
    assert len(list(crm.list_objects("contacts"))) == 1
    paths = [r.path for r in hubspot.requests()]
    assert paths == ["/oauth/v1/token", CONTACTS, CONTACTS, "/oauth/v1/token", CONTACTS]
    assert crm.http().stats.auth_refreshes == 1


def test_an_invalid_token_raises_authentication_error_naming_the_connection_not_the_secret(
    hubspot: HubSpotEmulator, make_crm: MakeCRM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "pat-na1-00000000-wrong-secret"
    with pytest.raises(AuthenticationError) as caught:
        list(make_crm(token=secret).list_objects("contacts"))
    text = str(caught.value)
    assert text.startswith("hubspot:") and "INVALID_AUTHENTICATION" in text
    assert secret not in text and secret not in caplog.text
    assert len(hubspot.requests(CONTACTS)) == 1


def test_a_revoked_refresh_token_raises_authentication_error_without_the_secrets(
    hubspot: HubSpotEmulator, make_crm: MakeCRM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fields = {**oauth_fields(hubspot), "refresh_token": "na1-revoked-refresh-token"}
    with pytest.raises(AuthenticationError) as caught:
        list(make_crm(**fields).list_objects("contacts"))
    text = str(caught.value)
    assert text.startswith("hubspot:") and "refresh token is invalid" in text
    for secret in ("na1-revoked-refresh-token", "hs-client-secret-1"):
        assert secret not in text and secret not in caplog.text
    assert not hubspot.requests(CONTACTS)


def test_a_secret_reference_is_resolved_at_first_use_and_never_logged(
    hubspot: HubSpotEmulator,
    make_crm: MakeCRM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = hubspot.issue_private_token()
    crm = make_crm(token="${env:HS_TEST_TOKEN}")
    monkeypatch.setenv("HS_TEST_TOKEN", token)
    hubspot.add_fault(path=CONTACTS, status=400, body={"message": f"token {token} is not allowed"})
    with pytest.raises(VendorValidationError) as caught:
        list(crm.list_objects("contacts"))
    assert crm.token == "${env:HS_TEST_TOKEN}"
    assert hubspot.requests(CONTACTS)[0].headers["authorization"] == f"Bearer {token}"
    assert "***" in str(caught.value)
    assert token not in str(caught.value) and token not in caplog.text


def test_an_unresolvable_secret_reference_names_the_reference(
    make_crm: MakeCRM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HS_MISSING_TOKEN", raising=False)
    with pytest.raises(SecretError, match=r"hubspot: .*\$\{env:HS_MISSING_TOKEN\}"):
        list(make_crm(token="${env:HS_MISSING_TOKEN}").list_objects("contacts"))


def test_check_reports_health_and_limits_without_secrets(
    hubspot: HubSpotEmulator, make_crm: MakeCRM
) -> None:
    token = hubspot.issue_private_token()
    report = make_crm(token=token, rate_limit=None, search_rate_limit=None).check()
    assert report["ok"] is True and report["auth"] == "private_app"
    assert report["rate_limit"] == "100 per 10s" and report["search_rate_limit"] == "5 per 1s"
    assert report["daily_remaining"] is not None
    assert token not in repr(report)
    failed = make_crm(token="pat-na1-bad-token-value").check()
    assert failed["ok"] is False and "INVALID_AUTHENTICATION" in failed["detail"]
    assert "pat-na1-bad-token-value" not in repr(failed)


def test_the_resource_runs_in_a_dagster_job_with_a_secret_reference_in_config(
    hubspot: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = hubspot.issue_private_token()
    monkeypatch.setenv("HS_JOB_TOKEN", token)
    hubspot.seed("companies", 3)

    @dg.op
    def read(hubspot: HubSpotCRM) -> int:
        return len(hubspot.query(object="companies", filters={}, properties=["name"], limit=None))

    @dg.job(resource_defs={"hubspot": HubSpotCRM.configure_at_launch()})
    def job() -> None:
        read()

    config = {"token": "${env:HS_JOB_TOKEN}", "base_url": hubspot.base_url}
    result = job.execute_in_process(run_config={"resources": {"hubspot": {"config": config}}})
    assert result.output_for_node("read") == 3
    stored = str(result.dagster_run.run_config)
    assert "${env:HS_JOB_TOKEN}" in stored and token not in stored


# ---------------------------------------------------------------- the emulator speaks HubSpot


def test_emulator_clamps_page_sizes_and_refuses_paging_past_10k(
    hubspot: HubSpotEmulator,
) -> None:
    hubspot.seed("contacts", 250)
    headers = {"Authorization": f"Bearer {hubspot.issue_private_token()}"}
    pages: list[dict[str, Any]] = []
    with httpx.Client(base_url=hubspot.base_url or "", headers=headers) as http:
        listed = http.get(CONTACTS, params={"limit": 500})
        params: dict[str, Any] = {"limit": 500}
        while True:
            pages.append(http.get(CONTACTS, params=params).json())
            if "paging" not in pages[-1]:
                break
            params["after"] = pages[-1]["paging"]["next"]["after"]
        searched = http.post(SEARCH, json={"limit": 500})
        past = http.post(SEARCH, json={"limit": 10, "after": "10000"})
    assert [len(p["results"]) for p in pages] == [100, 100, 50]
    assert listed.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert listed.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert searched.json()["total"] == 250 and len(searched.json()["results"]) == 200
    assert "X-HubSpot-RateLimit-Remaining" not in searched.headers
    assert past.status_code == 400 and past.json()["category"] == "VALIDATION_ERROR"


def test_hubspot_sdk_lists_searches_and_refreshes_against_the_emulator(
    hubspot: HubSpotEmulator,
) -> None:
    seeded = hubspot.seed("contacts", 123)
    client = HubSpot(access_token=hubspot.issue_private_token(), host=hubspot.base_url)
    page = client.crm.contacts.basic_api.get_page(limit=10, properties=["email", "firstname"])
    assert [c.id for c in page.results] == seeded[:10]
    assert page.paging.next.after == seeded[10]
    assert [c.id for c in client.crm.contacts.get_all()] == seeded
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name="partner_tier", operator="EQ", value="gold")])
        ],
        sorts=["-createdate"],
        properties=["partner_tier"],
        limit=5,
    )
    found = client.crm.contacts.search_api.do_search(public_object_search_request=request)
    assert found.total == 41 and len(found.results) == 5
    assert found.results[0].id == "1122" and found.results[0].properties["partner_tier"] == "gold"


def test_hubspot_sdk_sees_hubspot_errors_and_oauth_tokens(hubspot: HubSpotEmulator) -> None:
    bad = HubSpot(access_token="not-a-token", host=hubspot.base_url)
    with pytest.raises(ApiException) as caught:
        bad.crm.contacts.basic_api.get_page(limit=1)
    assert caught.value.status == 401 and "INVALID_AUTHENTICATION" in caught.value.body
    oauth = HubSpot(host=hubspot.base_url).oauth.tokens_api
    token = oauth.create(
        grant_type="refresh_token",
        client_id="hs-client-1",
        client_secret="hs-client-secret-1",
        refresh_token=hubspot.issue_refresh_token(),
    )
    assert token.expires_in == 1800 and token.token_type == "bearer"
    listed = HubSpot(access_token=token.access_token, host=hubspot.base_url)
    assert listed.crm.contacts.basic_api.get_page(limit=1).results == []


def test_emulator_serves_the_dated_paths_like_the_legacy_ones(hubspot: HubSpotEmulator) -> None:
    hubspot.seed("deals", 3)
    form = {
        "grant_type": "refresh_token",
        "client_id": "hs-client-1",
        "client_secret": "hs-client-secret-1",
        "refresh_token": hubspot.issue_refresh_token(),
    }
    with httpx.Client(base_url=hubspot.base_url or "") as http:
        token = http.post("/oauth/2026-03/token", data=form).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        dated = http.get("/crm/objects/2026-03/deals", headers=headers)
        hubspot.clock.advance(1801)
        expired = http.get("/crm/objects/2026-03/deals", headers=headers)
    assert token["expires_in"] == 1800 and len(dated.json()["results"]) == 3
    assert "X-HubSpot-RateLimit-Daily" not in dated.headers  # OAuth calls get no daily headers
    assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
