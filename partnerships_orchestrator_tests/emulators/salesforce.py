"""A Salesforce emulator: OAuth token endpoint, SOQL query/queryMore, sObject create and upsert,
sObject collections, limits (API_CONTRACTS §2, §12).

One app serves the login host, My Domain and the instance: ``POST /services/oauth2/token``
(``refresh_token``, ``client_credentials`` in the body or HTTP Basic, and the JWT bearer grant
with its claims checked but not its signature) answers ``instance_url`` pointing back at the app
(or ``state.instance_url``) and **no** ``expires_in``. Sessions end after ``session_timeout`` s
of inactivity on the fake clock, when expired by a test, or when used on another instance host:
then ``401 [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]``.

REST under ``/services/data/vXX.X/``: ``query``/``queryAll`` (the SOQL subset of
:mod:`.soql`; batches of 2,000 or ``Sforce-Query-Options: batchSize=N``; ``nextRecordsUrl`` is a
path; locators expire after ``locator_ttl`` s or on demand → 400 ``INVALID_QUERY_LOCATOR``),
``sobjects/{type}/`` create, ``sobjects/{type}/{field}/{value}`` upsert (201 created, 200 with a
body from v46.0 or 204 before, 300 with the matching records' URLs, ``updateOnly``),
``composite/sobjects`` (≤200 records, ``allOrNone``, per-record results) and ``limits``. Every
REST answer but the versions list carries ``Sforce-Limit-Info: api-usage=N/M``; past the
allowance, or in ``request_limit_exceeded`` mode, calls get 403 ``REQUEST_LIMIT_EXCEEDED``.
Errors are JSON arrays of ``{message, errorCode, fields}``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator
from partnerships_orchestrator_tests.emulators.soql import Schema, SoqlError, comparable, parse

_counter = itertools.count(1)
DATA = "/services/data/{version}"
PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006"}
FIELDS: dict[str, dict[str, str]] = {
    "Account": {
        "Id": "id",
        "Name": "string",
        "Industry": "string",
        "Website": "string",
        "AnnualRevenue": "double",
        "IsDeleted": "boolean",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
        "SystemModstamp": "datetime",
        "Partner_Tier__c": "string",
        "External_Id__c": "string",
    },
    "Contact": {
        "Id": "id",
        "FirstName": "string",
        "LastName": "string",
        "Email": "email",
        "Title": "string",
        "AccountId": "reference",
        "IsDeleted": "boolean",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
        "SystemModstamp": "datetime",
        "External_Id__c": "string",
    },
    "Opportunity": {
        "Id": "id",
        "Name": "string",
        "AccountId": "reference",
        "Amount": "double",
        "StageName": "string",
        "CloseDate": "string",
        "Probability": "double",
        "Type": "string",
        "IsClosed": "boolean",
        "IsWon": "boolean",
        "IsDeleted": "boolean",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
        "SystemModstamp": "datetime",
    },
}
REQUIRED = {"Account": ("Name",), "Contact": ("LastName",), "Opportunity": ("Name", "StageName")}
EXTERNAL_IDS = {"Account": ("External_Id__c",), "Contact": ("External_Id__c",), "Opportunity": ()}
READ_ONLY = frozenset({"Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"})
SCHEMA = Schema(FIELDS)


def sf_datetime(epoch_ms: int) -> str:
    """Salesforce's dateTime format: ``2024-01-01T00:00:00.000+0000``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}+0000"


@dataclass
class Session:
    client_id: str
    instance_url: str
    last_used: float


@dataclass
class Locator:
    version: str
    records: list[dict[str, Any]]
    batch: int
    last_used: float


@dataclass
class SalesforceState:
    """Connected apps, sessions, the org's records and knobs (limits, batch sizes, TTLs)."""

    apps: dict[str, str] = field(default_factory=lambda: {"sf-client-1": "sf-client-secret-1"})
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> client id
    sessions: dict[str, Session] = field(default_factory=dict)
    session_timeout: float = 7200.0
    rotate_refresh_tokens: bool = False
    instance_url: str | None = None  # None: the app's own URL
    api_usage: int = 0
    api_limit: int = 15_000
    request_limit_exceeded: bool = False
    default_batch_size: int = 2000
    locator_ttl: float = 900.0
    locators: dict[str, Locator] = field(default_factory=dict)
    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in FIELDS}
    )
    next_number: int = 1


class SalesforceEmulator(Emulator[SalesforceState]):
    name = "salesforce"

    def __init__(self) -> None:
        super().__init__(SalesforceState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def issue_refresh_token(self, client_id: str = "sf-client-1") -> str:
        token = f"5Aep861{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"
        with self.lock:
            self.state.refresh_tokens[token] = client_id
        return token

    def issue_session(self, client_id: str = "sf-client-1") -> str:
        """An access token for the default instance, as a login would return."""
        with self.lock:
            return self._new_session(client_id)

    def expire_sessions(self) -> None:
        with self.lock:
            self.state.sessions.clear()

    def expire_locators(self) -> None:
        with self.lock:
            self.state.locators.clear()

    def seed(
        self,
        sobject: str,
        count: int,
        *,
        start_ms: int = 1_700_000_000_000,
        step_ms: int = 1000,
        tie_every: int = 0,
    ) -> list[str]:
        """``count`` records ``step_ms`` apart from ``start_ms``; with ``tie_every=k`` every k-th
        shares its predecessor's SystemModstamp. Returns their Ids in creation order."""
        ids, stamp = [], start_ms
        with self.lock:
            for index in range(count):
                if index and not (tie_every and index % tie_every == 0):
                    stamp += step_ms
                number = self.state.next_number
                ids.append(self._insert(sobject, _sample(sobject, number), stamp))
        return ids

    def add_record(
        self, sobject: str, fields: Mapping[str, Any], *, modstamp_ms: int | None = None
    ) -> str:
        with self.lock:
            stamp = modstamp_ms if modstamp_ms is not None else self._now_ms()
            return self._insert(sobject, dict(fields), stamp)

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.state.records[sobject].get(record_id)
            return dict(found) if found else None

    def count(self, sobject: str) -> int:
        with self.lock:
            return len(self.state.records[sobject])

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/services/oauth2/token", self._token, methods=["POST"]),
            Route("/services/data", self._versions, methods=["GET"]),
            Route("/services/data/", self._versions, methods=["GET"]),
            Route(f"{DATA}", self._resources, methods=["GET"]),
            Route(f"{DATA}/", self._resources, methods=["GET"]),
            Route(f"{DATA}/limits", self._limits, methods=["GET"]),
            Route(f"{DATA}/limits/", self._limits, methods=["GET"]),
            Route(f"{DATA}/query", self._query, methods=["GET"]),
            Route(f"{DATA}/query/", self._query, methods=["GET"]),
            Route(f"{DATA}/queryAll", self._query_all, methods=["GET"]),
            Route(f"{DATA}/queryAll/", self._query_all, methods=["GET"]),
            Route(f"{DATA}/query/{{locator}}", self._query_more, methods=["GET"]),
            Route(f"{DATA}/queryAll/{{locator}}", self._query_more, methods=["GET"]),
            Route(f"{DATA}/composite/sobjects", self._collection, methods=["POST"]),
            Route(f"{DATA}/sobjects/{{sobject}}", self._create, methods=["POST"]),
            Route(f"{DATA}/sobjects/{{sobject}}/", self._create, methods=["POST"]),
            Route(f"{DATA}/sobjects/{{sobject}}/{{record_id}}", self._get, methods=["GET"]),
            Route(
                f"{DATA}/sobjects/{{sobject}}/{{id_field}}/{{value:path}}",
                self._upsert,
                methods=["PATCH"],
            ),
        ]

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_credentials(request.headers.get("authorization", ""))
        if basic is not None:
            client_id, secret = basic
        grant = form.get("grant_type")
        with self.lock:
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                client_id = self._jwt_client(form.get("assertion", ""))
                if client_id is None:
                    return _oauth_error("invalid_grant", "invalid assertion")
                return JSONResponse(self._token_body(client_id, None))
            if grant not in ("refresh_token", "client_credentials"):
                return _oauth_error("unsupported_grant_type", "grant type not supported")
            if client_id not in self.state.apps:
                return _oauth_error("invalid_client_id", "client identifier invalid")
            checks_secret = grant == "client_credentials" or secret is not None
            if checks_secret and secret != self.state.apps[client_id]:
                return _oauth_error("invalid_client", "invalid client credentials")
            if grant == "client_credentials":
                return JSONResponse(self._token_body(client_id, None))
            refresh = form.get("refresh_token", "")
            if self.state.refresh_tokens.get(refresh) != client_id:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            rotated = None
            if self.state.rotate_refresh_tokens:
                del self.state.refresh_tokens[refresh]
                rotated = self.issue_refresh_token(client_id)
            return JSONResponse(self._token_body(client_id, rotated))

    async def _versions(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"},
                {"label": "Spring '26", "url": "/services/data/v66.0", "version": "66.0"},
            ]
        )

    async def _resources(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        base = f"/services/data/{request.path_params['version']}"
        names = ("limits", "query", "queryAll", "sobjects", "composite")
        return JSONResponse({n: f"{base}/{n}" for n in names}, headers=headers)

    async def _limits(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        state = self.state
        daily = {"Max": state.api_limit, "Remaining": max(0, state.api_limit - state.api_usage)}
        return JSONResponse({"DailyApiRequests": daily}, headers=headers)

    async def _query(self, request: Request) -> Response:
        return await self._run_query(request, deleted=False)

    async def _query_all(self, request: Request) -> Response:
        return await self._run_query(request, deleted=True)

    async def _run_query(self, request: Request, *, deleted: bool) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        version = request.path_params["version"]
        text = request.query_params.get("q")
        if not text:
            return _errors(400, "MALFORMED_QUERY", "A query string has to be specified", headers)
        try:
            query = parse(text, SCHEMA)
        except SoqlError as exc:
            return _errors(400, exc.code, exc.message, headers)
        batch = _batch_size(request.headers.get("sforce-query-options", ""), self.state)
        with self.lock:
            rows = [
                r
                for r in self.state.records[query.sobject].values()
                if (deleted or not r.get("IsDeleted")) and (query.where is None or query.where(r))
            ]
            for name, descending, nulls_last in reversed(query.order):
                kind = FIELDS[query.sobject][name]
                present = [r for r in rows if r.get(name) is not None]
                absent = [r for r in rows if r.get(name) is None]
                present.sort(key=lambda r: _sort_key(kind, r[name]), reverse=descending)
                rows = present + absent if nulls_last else absent + present
            end = None if query.limit is None else query.offset + query.limit
            rendered = [_render(query.sobject, r, query.fields, version) for r in rows]
            rendered = rendered[query.offset : end]
            return JSONResponse(self._page(rendered, batch, version, 0), headers=headers)

    async def _query_more(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        locator_id, _, offset_text = request.path_params["locator"].rpartition("-")
        with self.lock:
            locator = self.state.locators.get(locator_id)
            now = self.clock.now()
            if (
                locator is None
                or not offset_text.isdigit()
                or now - locator.last_used > self.state.locator_ttl
            ):
                return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator", headers)
            locator.last_used = now
            offset = int(offset_text)
            body = self._page(locator.records, locator.batch, locator.version, offset, locator_id)
            return JSONResponse(body, headers=headers)

    async def _get(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        sobject = _known(request.path_params["sobject"])
        with self.lock:
            found = self.state.records.get(sobject or "", {}).get(request.path_params["record_id"])
            if sobject is None or found is None:
                return _errors(404, "NOT_FOUND", "The requested resource does not exist", headers)
            version = request.path_params["version"]
            return JSONResponse(
                _render(sobject, found, list(FIELDS[sobject]), version), headers=headers
            )

    async def _create(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        sobject = _known(request.path_params["sobject"])
        if sobject is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist", headers)
        body = await _json_object(request)
        if body is None:
            return _errors(400, "JSON_PARSER_ERROR", "Unexpected body: expected an object", headers)
        with self.lock:
            problem = _field_problem(sobject, body, creating=True)
            if problem is not None:
                return JSONResponse([problem], status_code=400, headers=headers)
            record_id = self._insert(sobject, body, self._now_ms())
        return JSONResponse(
            {"id": record_id, "success": True, "errors": []}, status_code=201, headers=headers
        )

    async def _upsert(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        sobject = _known(request.path_params["sobject"])
        id_field, value = request.path_params["id_field"], request.path_params["value"]
        if sobject is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist", headers)
        if id_field != "Id" and id_field not in EXTERNAL_IDS[sobject]:
            message = f"Provided external ID field does not exist or is not accessible: {id_field}"
            return _errors(404, "NOT_FOUND", message, headers)
        body = await _json_object(request)
        if body is None:
            return _errors(400, "JSON_PARSER_ERROR", "Unexpected body: expected an object", headers)
        version = request.path_params["version"]
        with self.lock:
            matches = [
                r
                for r in self.state.records[sobject].values()
                if r.get(id_field) is not None and str(r[id_field]) == value
            ]
            if len(matches) > 1:
                urls = [f"/services/data/{version}/sobjects/{sobject}/{r['Id']}" for r in matches]
                return JSONResponse(urls, status_code=300, headers=headers)
            creating = not matches
            if creating and request.query_params.get("updateOnly") == "true":
                return _errors(
                    404, "NOT_FOUND", "Provided external ID field value not found", headers
                )
            problem = _field_problem(sobject, body, creating=creating)
            if problem is None and id_field in body:
                problem = _problem(
                    "INVALID_FIELD",
                    f"The external ID field {id_field} must not be set in the request body",
                    [id_field],
                )
            if problem is not None:
                return JSONResponse([problem], status_code=400, headers=headers)
            if creating:
                record_id = self._insert(sobject, {**body, id_field: value}, self._now_ms())
                body_out = {"id": record_id, "success": True, "errors": [], "created": True}
                return JSONResponse(body_out, status_code=201, headers=headers)
            record = matches[0]
            record.update(body)
            self._touch(record, self._now_ms())
        if _version_number(version) < 46.0:
            return Response(status_code=204, headers=headers)
        body_out = {"id": record["Id"], "success": True, "errors": [], "created": False}
        return JSONResponse(body_out, headers=headers)

    async def _collection(self, request: Request) -> Response:
        refused, headers = self._gate(request)
        if refused is not None:
            return refused
        body = await _json_object(request)
        records = body.get("records") if body else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return _errors(400, "JSON_PARSER_ERROR", "records must be a list of sObjects", headers)
        if len(records) > 200:
            return _errors(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
                headers,
            )
        types = {str((r.get("attributes") or {}).get("type")) for r in records}
        if len(types) > 10:
            return _errors(400, "INVALID_BATCH_REQUEST", "too many sObject types (max 10)", headers)
        all_or_none = bool(body.get("allOrNone", False)) if body else False
        with self.lock:
            problems = [self._collection_problem(r) for r in records]
            failed = any(problems)
            results: list[dict[str, Any]] = []
            for record, problem in zip(records, problems, strict=True):
                if problem is not None:
                    results.append({"success": False, "errors": [_collection_error(problem)]})
                elif failed and all_or_none:
                    results.append({"id": None, "success": False, "errors": [_rolled_back()]})
                else:
                    sobject = _known(record["attributes"]["type"]) or ""
                    fields = {k: v for k, v in record.items() if k != "attributes"}
                    record_id = self._insert(sobject, fields, self._now_ms())
                    results.append({"id": record_id, "success": True, "errors": []})
        return JSONResponse(results, headers=headers)

    # -- internals (callers hold the lock where state is touched) ----------------------------

    def _gate(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        """The session, then the org's API allowance; headers for the answer."""
        if not _version_number(request.path_params.get("version", "v60.0")):
            return _errors(404, "NOT_FOUND", "The requested resource does not exist", {}), {}
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self.lock:
            state = self.state
            session = state.sessions.get(token)
            now = self.clock.now()
            host = request.headers.get("host", "")
            if session is not None and (
                now - session.last_used > state.session_timeout
                or urlsplit(session.instance_url).netloc != host
            ):
                session = None
            if session is None:
                return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid", {}), {}
            session.last_used = now
            if state.request_limit_exceeded or state.api_usage >= state.api_limit:
                headers = {"Sforce-Limit-Info": f"api-usage={state.api_usage}/{state.api_limit}"}
                return _errors(
                    403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", headers
                ), headers
            state.api_usage += 1
            return None, {"Sforce-Limit-Info": f"api-usage={state.api_usage}/{state.api_limit}"}

    def _instance_url(self) -> str:
        return self.state.instance_url or self.base_url or "http://127.0.0.1"

    def _new_session(self, client_id: str) -> str:
        token = f"00D000000000001!AR{uuid.uuid4().hex}{uuid.uuid4().hex[:20]}"
        self.state.sessions[token] = Session(client_id, self._instance_url(), self.clock.now())
        return token

    def _token_body(self, client_id: str, refresh_token: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self._new_session(client_id),
            "signature": base64.b64encode(uuid.uuid4().bytes).decode(),
            "scope": "api refresh_token",
            "instance_url": self._instance_url(),
            "id": "https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA",
            "token_type": "Bearer",
            "issued_at": str(int(self.clock.now() * 1000)),
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body

    def _jwt_client(self, assertion: str) -> str | None:
        """The consumer key of a well-formed, unexpired JWT assertion (signature not checked)."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return None
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            claims = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(claims, dict) or claims.get("iss") not in self.state.apps:
            return None
        if float(claims.get("exp", 0)) < self.clock.now() or not claims.get("sub"):
            return None
        return str(claims["iss"])

    def _page(
        self,
        rows: list[dict[str, Any]],
        batch: int,
        version: str,
        offset: int,
        locator_id: str | None = None,
    ) -> dict[str, Any]:
        """One batch of a result, with a locator for the rest if any."""
        page = rows[offset : offset + batch]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + batch >= len(rows)}
        if not body["done"]:
            if locator_id is None:
                locator_id = f"01gEM{next(_counter):010d}"
                self.state.locators[locator_id] = Locator(version, rows, batch, self.clock.now())
            path = f"/services/data/{version}/query/{locator_id}-{offset + batch}"
            body["nextRecordsUrl"] = path
        body["records"] = page
        return body

    def _collection_problem(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        sobject = _known(str((record.get("attributes") or {}).get("type", "")))
        if sobject is None:
            return _problem("INVALID_TYPE", "sObject type is missing or not supported", [])
        if any(k.lower() == "id" for k in record):
            return _problem(
                "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
            )
        fields = {k: v for k, v in record.items() if k != "attributes"}
        return _field_problem(sobject, fields, creating=True)

    def _insert(self, sobject: str, fields: Mapping[str, Any], stamp: int) -> str:
        number = self.state.next_number
        self.state.next_number += 1
        record_id = f"{PREFIXES[sobject]}{number:012d}AAA"
        record: dict[str, Any] = {name: None for name in FIELDS[sobject]}
        record.update({_canonical(sobject, k): v for k, v in fields.items()})
        record.update({"Id": record_id, "IsDeleted": False, "CreatedDate": stamp})
        self._touch(record, stamp)
        self.state.records[sobject][record_id] = record
        return record_id

    def _touch(self, record: dict[str, Any], stamp: int) -> None:
        record["LastModifiedDate"] = record["SystemModstamp"] = stamp

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)


def _sample(sobject: str, number: int) -> dict[str, Any]:
    if sobject == "Account":
        return {
            "Name": f"Partner {number}",
            "Industry": ("Technology", "Retail", "Finance")[number % 3],
            "Website": f"https://partner{number}.example.com",
            "Partner_Tier__c": ("Gold", "Silver", "Bronze")[number % 3],
        }
    if sobject == "Opportunity":
        return {
            "Name": f"Deal {number}",
            "Amount": 1000.0 + number % 50 * 250,
            "StageName": ("Prospecting", "Negotiation/Review", "Closed Won")[number % 3],
            "CloseDate": "2026-12-31",
            "IsClosed": number % 3 == 2,
            "IsWon": number % 3 == 2,
        }
    return {
        "FirstName": f"First{number}",
        "LastName": f"Last{number}",
        "Email": f"contact{number}@partner.example.com",
        "Title": ("CEO", "CTO", "Partner Manager")[number % 3],
    }


def _known(name: str) -> str | None:
    for candidate in FIELDS:
        if candidate.lower() == name.lower():
            return candidate
    return None


def _canonical(sobject: str, name: str) -> str:
    for candidate in FIELDS[sobject]:
        if candidate.lower() == name.lower():
            return candidate
    return name


def _field_problem(
    sobject: str, fields: Mapping[str, Any], *, creating: bool
) -> dict[str, Any] | None:
    """The first error Salesforce would report for writing ``fields``, if any."""
    for name in fields:
        canonical = _canonical(sobject, name)
        if canonical not in FIELDS[sobject]:
            return _problem(
                "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name]
            )
        if canonical in READ_ONLY:
            return _problem(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {canonical}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                [canonical],
            )
    values = {_canonical(sobject, k): v for k, v in fields.items()}
    if creating:
        missing = [n for n in REQUIRED[sobject] if values.get(n) in (None, "")]
        if missing:
            return _problem(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
    email = values.get("Email")
    if email is not None and "@" not in str(email):
        return _problem(
            "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"]
        )
    return None


def _problem(code: str, message: str, fields: list[str]) -> dict[str, Any]:
    return {"message": message, "errorCode": code, "fields": fields}


def _collection_error(problem: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": problem["errorCode"],
        "message": problem["message"],
        "fields": problem["fields"],
    }


def _rolled_back() -> dict[str, Any]:
    return {
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was "
        "using AllOrNone header",
        "fields": [],
    }


def _render(
    sobject: str, record: Mapping[str, Any], fields: list[str], version: str
) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "attributes": {
            "type": sobject,
            "url": f"/services/data/{version}/sobjects/{sobject}/{record['Id']}",
        }
    }
    for name in fields:
        value = record.get(name)
        if FIELDS[sobject][name] == "datetime" and value is not None:
            value = sf_datetime(int(value))
        rendered[name] = value
    return rendered


def _sort_key(kind: str, value: Any) -> Any:
    return comparable(kind, value) if kind != "datetime" else int(value)


def _batch_size(header: str, state: SalesforceState) -> int:
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip() == "batchSize" and value.strip().isdigit():
            return max(200, min(2000, int(value)))
    return state.default_batch_size


def _version_number(version: str) -> float:
    try:
        return float(version.removeprefix("v")) if version.startswith("v") else 0.0
    except ValueError:
        return 0.0


def _basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, binascii.Error):
        return None
    return user, password


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        payload = json.loads(await request.body())
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _errors(status: int, code: str, message: str, headers: Mapping[str, str]) -> Response:
    body = [{"message": message, "errorCode": code, "fields": []}]
    return JSONResponse(body, status_code=status, headers=dict(headers))


def _oauth_error(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)
