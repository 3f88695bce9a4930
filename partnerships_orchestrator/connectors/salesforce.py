"""Salesforce REST (SOQL, external-ID upsert, sObject collections) as a Dagster resource.

:class:`SalesforceCRM` obtains an access token from ``{login_url}/services/oauth2/token`` with
the ``refresh_token`` grant (or ``client_credentials`` when no refresh token is configured).
Salesforce sends no ``expires_in``: the token is kept until a call answers 401
``INVALID_SESSION_ID``, then refreshed once and the call retried. REST calls go to the
``instance_url`` of the current token, so a refresh that moves the org to another instance moves
the calls with it. :class:`SalesforcePolicy` reads Salesforce's signals: errors are JSON arrays
of ``{message, errorCode, fields}``; 403 ``REQUEST_LIMIT_EXCEEDED`` backs off and, if it
persists, ends in :class:`QuotaExhausted`; ``Sforce-Limit-Info: api-usage=N/M`` is recorded.

SOQL is built, never spliced: object and field names must be plain identifiers and every value
is rendered as an escaped SOQL literal.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field

from partnerships_orchestrator.connectors.crm import CRMResource, RateLimitConfig
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    QuotaExhausted,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import (
    HttpClient,
    ResponsePolicy,
    Verdict,
)
from partnerships_orchestrator.connectors.oauth import OAuthAuth, OAuthTokenProvider
from partnerships_orchestrator.connectors.ratelimit import RateLimiter
from partnerships_orchestrator.connectors.shared_ratelimit import limiter_for
from partnerships_orchestrator.errors import ConfigurationError, PartnershipsError

# REST calls are addressed to this placeholder; the auth swaps in the token's instance_url
INSTANCE_PLACEHOLDER = "https://salesforce-instance.invalid"
COLLECTION_SIZE = 200
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^v\d+\.\d$")
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_QUOTA_HINT = (
    "the org's API request allowance is used up (a rolling 24 h limit); retry later or raise "
    "the allowance"
)


class SalesforcePolicy(ResponsePolicy):
    """Salesforce's answers (API_CONTRACTS §2) and its ``Sforce-Limit-Info`` usage header."""

    def __init__(self) -> None:
        self.api_usage: tuple[int, int] | None = None  # (used, allowed) in the rolling 24 h

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status < 400:
            return Verdict.ok()
        message, code = self.error_message(response), self.error_code(response)
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            # throttled without Retry-After: back off; still refused at the end means quota gone
            return Verdict.rate_limited(message, code=code, error=QuotaExhausted, hint=_QUOTA_HINT)
        if status == 400 and code == "INVALID_QUERY_LOCATOR":
            hint = "the query cursor expired or was already used up; run the query again"
            return Verdict.fail(VendorValidationError, message, code=code, hint=hint)
        if status == 403:
            hint = "the connected app's user lacks access to this object or operation"
            return Verdict.fail(AuthenticationError, message, code=code, hint=hint)
        return super().classify(response)

    def error_message(self, response: httpx.Response) -> str:
        """Each ``{message, errorCode, fields}`` entry, fields named."""
        payload = _json(response)
        if not isinstance(payload, list) or not payload:
            return super().error_message(response)
        parts = []
        for entry in payload:
            if not isinstance(entry, dict):
                continue
            text = str(entry.get("message") or entry.get("errorCode") or "").strip()
            fields = entry.get("fields") or []
            if fields:
                text += f" (fields: {', '.join(map(str, fields))})"
            parts.append(text)
        return "; ".join(p for p in parts if p) or super().error_message(response)

    def update_limits(
        self, response: httpx.Response, limiter: RateLimiter, key: str | None = None
    ) -> None:
        """Record ``api-usage=N/M``. The allowance is a rolling 24 h one, so it is reported
        (``check()``, logs) rather than fed to the limiter, which would block a call for hours;
        the 403 that follows exhaustion ends the call instead."""
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.api_usage = (int(match[1]), int(match[2]))


class InstanceAuth(OAuthAuth):
    """Bearer token from the provider; calls addressed to the placeholder host go to the
    current token's ``instance_url``."""

    def __init__(self, provider: OAuthTokenProvider, connection: str) -> None:
        super().__init__(provider)
        self.connection = connection
        self.instance_url: str | None = None
        self._lock = threading.Lock()

    def apply(self, request: httpx.Request) -> None:
        token = self.provider.token()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        instance = self._instance(token.get("instance_url"))
        if request.url.host == httpx.URL(INSTANCE_PLACEHOLDER).host:
            request.url = request.url.copy_with(
                scheme=instance.scheme, host=instance.host, port=instance.port
            )
            request.headers["Host"] = instance.netloc.decode("ascii")

    def _instance(self, value: Any) -> httpx.URL:
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise AuthenticationError(
                f"{self.connection}: the token response has no usable instance_url",
                "check login_url: it must be login.salesforce.com, test.salesforce.com or the "
                "org's My Domain",
                vendor=self.connection,
            )
        with self._lock:
            if value != self.instance_url:
                self.instance_url = value
        return httpx.URL(value)


@dataclass(frozen=True)
class _Cursor:
    """Where an incremental read stands: the SystemModstamp second and the last Id there."""

    stamp: str  # SOQL dateTime literal, second precision
    last_id: str | None


class SalesforceCRM(CRMResource):
    """Salesforce records: SOQL reads, incremental sync, upsert and bulk create."""

    connection: str = "salesforce"
    login_url: str = Field(
        default="https://login.salesforce.com",
        description="login.salesforce.com, test.salesforce.com or the org's My Domain URL.",
    )
    client_id: str = Field(description="Connected app consumer key.")
    client_secret: str | None = Field(default=None, description="Consumer secret (reference).")
    refresh_token: str | None = Field(
        default=None,
        description="Refresh token (reference); without one the client_credentials grant is used.",
    )
    api_version: str = "v60.0"
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="Client-side pacing; Salesforce has no per-second limit."
    )
    query_batch_size: int | None = Field(
        default=None, ge=200, le=2000, description="Records per SOQL batch (Sforce-Query-Options)."
    )

    # ------------------------------------------------------------------ reads

    def soql(self, query: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """The records of a SOQL query, following ``nextRecordsUrl`` until ``done``;
        ``attributes`` removed. ``include_deleted`` reads through ``queryAll`` (deleted records,
        ``IsDeleted`` true, included)."""
        headers = self._query_headers()
        http = self.http()
        resource = "queryAll" if include_deleted else "query"
        payload = http.request_json(
            "GET", f"{self._data()}/{resource}", params={"q": query}, headers=headers
        )
        while True:
            for record in payload.get("records") or []:
                yield _strip(record)
            next_url = payload.get("nextRecordsUrl")
            if payload.get("done", True) or not next_url:
                return
            payload = http.request_json("GET", self._locator_path(next_url), headers=headers)

    def iter_modified_since(
        self,
        object_type: str,
        since: datetime,
        fields: Sequence[str] | None = None,
        *,
        after_id: str | None = None,
        chunk_size: int = 10_000,
        include_deleted: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records whose ``SystemModstamp`` is at or after ``since`` (to the second; when
        ``after_id`` is given, records of that very second with an Id up to it are skipped),
        oldest first, Id breaking ties, each once. Reads ``chunk_size`` records per query so no
        query cursor lives long. ``include_deleted`` adds deleted records (``IsDeleted``)."""
        extra = ["IsDeleted"] if include_deleted else []
        names = self._names([*(fields or []), "Id", "SystemModstamp", *extra])
        object_type = self._name(object_type)
        cursor = _Cursor(_soql_datetime(since), after_id)
        seen: set[str] = set()  # Ids already yielded in the cursor's second
        while True:
            read = 0
            query = _modified_query(object_type, names, cursor, chunk_size)
            for record in self.soql(query, include_deleted=include_deleted):
                read += 1
                stamp = _soql_datetime(_parse_datetime(record["SystemModstamp"]))
                if stamp != cursor.stamp:
                    seen = set()
                if record["Id"] in seen:
                    continue
                seen.add(record["Id"])
                cursor = _Cursor(stamp, record["Id"])
                yield record
            if read < chunk_size:
                return

    def query(
        self,
        object: str,  # the playbook's `object:` key
        filters: Mapping[str, Any] | None = None,
        properties: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows for a playbook ``query`` step: equality filters (a list means any of)."""
        conditions = []
        for name, value in (filters or {}).items():
            if isinstance(value, list | tuple | set) and not value:
                return []
            conditions.append(self._condition(self._name(name), value))
        selected = ", ".join(self._names(properties)) if properties else "FIELDS(STANDARD)"
        soql = f"SELECT {selected} FROM {self._name(object)}"  # nosec B608 # SOQL: names checked by _name, values quoted by soql_literal
        if conditions:
            soql += " WHERE " + " AND ".join(conditions)
        if limit is not None:
            soql += f" LIMIT {int(limit)}"
        return list(self.soql(soql))

    # ------------------------------------------------------------------ writes

    def upsert(
        self,
        object_type: str,
        external_id_field: str,
        value: str,
        record: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Create or update the record whose ``external_id_field`` is ``value``.

        Returns ``{"id", "created", "success", "errors"}`` (``id`` is None on a 204 answer);
        several matching records (300) raise VendorValidationError naming them.
        """
        field = self._name(external_id_field)
        body = {k: v for k, v in record.items() if k != field}
        if field in record and str(record[field]) != str(value):
            raise VendorValidationError(
                f"{self.connection}: the record's {field} differs from the upsert key {value!r}",
                vendor=self.connection,
            )
        path = f"{self._data()}/sobjects/{self._name(object_type)}/{field}/{quote(str(value), safe='')}"
        response = self.http().request("PATCH", path, json=_jsonable(body))
        if response.status_code == 300:
            raise self._ambiguous(object_type, field, value, response)
        if response.status_code == 204 or not response.content.strip():
            return {"id": None, "created": False, "success": True, "errors": []}
        result = response.json()
        created = response.status_code == 201 or bool(result.get("created"))
        return {**result, "created": created}

    def create_many(
        self, object_type: str, records: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Create ``records`` through sObject collections, 200 per call, ``allOrNone`` false:
        one ``{"id", "success", "errors"}`` per record, in order. Not retried after a failure
        that may have reached Salesforce, since a retry could create duplicates."""
        name = self._name(object_type)
        for index, record in enumerate(records):
            if any(k.lower() == "id" for k in record):
                raise VendorValidationError(
                    f"{self.connection}: record {index} carries an Id; create_many only creates",
                    "use upsert() to update existing records",
                    vendor=self.connection,
                )
        results: list[dict[str, Any]] = []
        for start in range(0, len(records), COLLECTION_SIZE):
            chunk = records[start : start + COLLECTION_SIZE]
            body = {
                "allOrNone": False,
                "records": [{"attributes": {"type": name}, **_jsonable(r)} for r in chunk],
            }
            answer = self.http().request_json(
                "POST", f"{self._data()}/composite/sobjects", json=body, retry=False
            )
            results.extend(answer or [])
        failed = sum(1 for r in results if not r.get("success"))
        if failed:
            self.http().log.warning(
                f"{self.connection}: create of {name}: {failed} of {len(records)} records refused"
            )
        return results

    # ------------------------------------------------------------------ health

    def check(self) -> dict[str, Any]:
        """Authenticate with one cheap call; never raises, never shows a secret."""
        report: dict[str, Any] = {
            "connection": self.connection,
            "login_url": self.login_url,
            "api_version": self.api_version,
            "grant": "refresh_token" if self.refresh_token else "client_credentials",
            "rate_limit": _describe(self.rate_limit),
        }
        try:
            http = self.http()
            http.request("GET", f"{self._data()}/")
        except PartnershipsError as exc:
            return self._failure_report(exc, **report)
        auth, policy = http.auth, http.policy
        instance = auth.instance_url if isinstance(auth, InstanceAuth) else None
        usage = policy.api_usage if isinstance(policy, SalesforcePolicy) else None
        return {
            "ok": True,
            "detail": f"authenticated to {instance}",
            **report,
            "instance_url": instance,
            "api_usage": f"{usage[0]}/{usage[1]}" if usage else None,
        }

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """The last ``Sforce-Limit-Info`` reading: (requests used, allowed) in the rolling 24 h."""
        client = self._client
        policy = client.policy if client is not None else None
        return policy.api_usage if isinstance(policy, SalesforcePolicy) else None

    # ------------------------------------------------------------------ internals

    def _build_client(self) -> HttpClient:
        if not _VERSION.match(self.api_version):
            raise ConfigurationError(
                f"{self.connection}: api_version {self.api_version!r} is not like v60.0"
            )
        grant = "refresh_token" if self.refresh_token else "client_credentials"
        if grant == "client_credentials" and not self.client_secret:
            raise ConfigurationError(
                f"{self.connection}: no refresh_token and no client_secret",
                "set refresh_token (refresh-token flow) or client_secret (client credentials)",
            )
        provider = self._oauth_provider(
            f"{self.login_url.rstrip('/')}/services/oauth2/token",
            grant,
            self.client_id,
            self.client_secret,
            self.refresh_token,
        )
        return HttpClient(
            self.connection,
            INSTANCE_PLACEHOLDER,
            auth=InstanceAuth(provider, self.connection),
            policy=SalesforcePolicy(),
            rate_limit=limiter_for(self.connection, self.rate_limit),
            timeouts=self._timeouts(),
            retry=self._retry(),
            headers={"Accept": "application/json"},
        )

    def _close_client(self, client: HttpClient) -> None:
        if isinstance(client.auth, OAuthAuth):
            client.auth.provider.close()
        client.close()

    def _data(self) -> str:
        return f"/services/data/{self.api_version}"

    def _query_headers(self) -> dict[str, str]:
        if self.query_batch_size is None:
            return {}
        return {"Sforce-Query-Options": f"batchSize={self.query_batch_size}"}

    def _locator_path(self, url: str) -> str:
        """``nextRecordsUrl`` must be a path on the instance: the token never leaves it."""
        if not url.startswith("/services/data/"):
            raise VendorValidationError(
                f"{self.connection}: unexpected nextRecordsUrl {url!r}", vendor=self.connection
            )
        return url

    def _name(self, name: str) -> str:
        """``name`` if it is a plain object or field name, else a refusal before any call."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise VendorValidationError(
                f"{self.connection}: {name!r} is not a valid Salesforce object or field name",
                "names are letters, digits and underscores, e.g. Account or Partner_Tier__c",
                vendor=self.connection,
            )
        return name

    def _names(self, names: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(self._name(n) for n in names))

    def _condition(self, name: str, value: Any) -> str:
        try:
            if isinstance(value, list | tuple | set):
                return f"{name} IN ({', '.join(soql_literal(v) for v in value)})"
            return f"{name} = {soql_literal(value)}"
        except ValueError as exc:
            raise VendorValidationError(
                f"{self.connection}: filter {name}: {exc}", vendor=self.connection
            ) from None

    def _ambiguous(
        self, object_type: str, field: str, value: str, response: httpx.Response
    ) -> VendorValidationError:
        try:
            matches = [str(u).rsplit("/", 1)[-1] for u in response.json()]
        except ValueError:
            matches = []
        return VendorValidationError(
            f"{self.connection}: {len(matches)} {object_type} records have {field} = {value!r}: "
            f"{', '.join(matches)}",
            f"make {field} unique, or upsert by Id",
            vendor=self.connection,
            status=300,
            code="MULTIPLE_CHOICES",
        )


def soql_literal(value: Any) -> str:
    """``value`` as a SOQL literal: quoted and escaped text, unquoted numbers and dateTimes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no SOQL literal")
        return repr(value)
    if isinstance(value, datetime):
        return _soql_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + "".join(_ESCAPES.get(c, c) for c in value) + "'"
    raise ValueError(f"a {type(value).__name__} value has no SOQL literal")


def _soql_datetime(moment: datetime) -> str:
    """A SOQL dateTime literal in UTC, to the second (SOQL compares dateTimes to the second)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_datetime(text: str) -> datetime:
    """Salesforce's ``2024-01-01T00:00:00.000+0000``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def _modified_query(object_type: str, names: list[str], cursor: _Cursor, chunk: int) -> str:
    where = f"SystemModstamp >= {cursor.stamp}"
    if cursor.last_id is not None:
        where += f" AND (SystemModstamp > {cursor.stamp} OR Id > {soql_literal(cursor.last_id)})"
    return (
        f"SELECT {', '.join(names)} FROM {object_type} WHERE {where} "  # nosec B608 # SOQL: names from describe, values quoted by soql_literal
        f"ORDER BY SystemModstamp ASC, Id ASC LIMIT {chunk}"
    )


def _strip(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without ``attributes``, at every level (parent relationships included)."""
    return {
        k: _strip(v) if isinstance(v, Mapping) else v
        for k, v in record.items()
        if k != "attributes"
    }


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as Salesforce takes them in JSON (dates and dateTimes as ISO text)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, datetime):
            out[key] = _soql_datetime(value)
        elif isinstance(value, date):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _describe(limit: RateLimitConfig | None) -> str:
    return f"{limit.requests} per {limit.per_seconds:g}s" if limit else "unpaced"
