"""HubSpot CRM (objects, search, batch) as a Dagster resource.

:class:`HubSpotCRM` reads and writes CRM objects over HubSpot's v3 API (API_CONTRACTS §1) with a
private-app / service-key token or OAuth (refresh-token grant on ``POST /oauth/v1/token``, access
tokens refreshed ``expires_in`` minus a minute after issue and on an ``EXPIRED_AUTHENTICATION``
401). :class:`HubSpotPolicy` reads HubSpot's signals: the policy named in a 429 body (``DAILY``
stops, ``TEN_SECONDLY_ROLLING`` waits out the interval, the search "secondly" limit waits a
second), the ``X-HubSpot-RateLimit-*`` headers, 423 (wait 2 s), 477 (``Retry-After``) and
502/503/504/524 (retried).

Search returns at most 10,000 results per query: :meth:`HubSpotCRM.search` stops there, and
:meth:`HubSpotCRM.iter_modified_since` restarts its query from the last timestamp it read before
the cap (paging by object id when more than the cap share one millisecond), so an incremental
sync of any size loses and repeats nothing.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from pydantic import Field

from partnerships_orchestrator.connectors.crm import CRMResource, RateLimitConfig
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    QuotaExhausted,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import (
    Auth,
    BearerAuth,
    HttpClient,
    ResponsePolicy,
    Verdict,
)
from partnerships_orchestrator.connectors.oauth import OAuthAuth
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter
from partnerships_orchestrator.connectors.shared_ratelimit import limiter_for
from partnerships_orchestrator.errors import ConfigurationError, PartnershipsError

DEFAULT_RATE_LIMIT = RateLimit(requests=100, per_seconds=10)
DEFAULT_SEARCH_RATE_LIMIT = RateLimit(requests=5, per_seconds=1)
LIST_PAGE_SIZE = 100
SEARCH_PAGE_SIZE = 200
SEARCH_CAP = 10_000
BATCH_SIZE = 100
LOCKED_WAIT_SECONDS = 2.0
SEARCH_KEY = "search"
NO_ASSOCIATIONS = "NO_ASSOCIATIONS_FOUND"  # v4 batch-read error of an id without associations
_OBJECT = re.compile(r"^[A-Za-z0-9_-]+$")
_RETRY_STATUSES = frozenset({408, 425, 502, 503, 504, 524})


def modified_property(object_type: str) -> str:
    """The property incremental syncs follow: ``lastmodifieddate`` on contacts."""
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """A HubSpot object as one row: ``id`` plus its properties."""
    return {**(record.get("properties") or {}), "id": str(record["id"])}


class HubSpotPolicy(ResponsePolicy):
    """HubSpot's answers (API_CONTRACTS §1): 429 policies, 401 categories, 423, 477, 5xx."""

    def __init__(self, *, rolling_wait: float = 10.0, secondly_wait: float = 1.0) -> None:
        self.rolling_wait = rolling_wait
        self.secondly_wait = secondly_wait
        self._answered: deque[float] = deque()  # when recent answers arrived (rolling window)

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status < 400:
            return Verdict.ok()
        message, code = self.error_message(response), self.error_code(response)
        if status == 429:
            return self._rate_limited(response, message, code)
        if status == 401:
            if code == "EXPIRED_AUTHENTICATION":
                return Verdict.reauth(message, code=code)
            hint = "check the connection's token (private app / service key) or OAuth app"
            return Verdict.fail(AuthenticationError, message, code=code, hint=hint)
        if status == 423:
            wait = max(LOCKED_WAIT_SECONDS, self.retry_after(response) or 0.0)
            return Verdict.retry(message, retry_after=wait, code=code)
        if status == 477:
            return Verdict.retry(message, retry_after=self.retry_after(response), code=code)
        if status in _RETRY_STATUSES or status >= 500:
            return Verdict.retry(message, retry_after=self.retry_after(response), code=code)
        return super().classify(response)

    def _rate_limited(self, response: httpx.Response, message: str, code: str | None) -> Verdict:
        policy = _policy_name(response)
        if policy == "DAILY":
            hint = "HubSpot's daily API allowance is used up; it resets at midnight (account time)"
            return Verdict.fail(QuotaExhausted, message, code="DAILY", hint=hint)
        if policy != "TEN_SECONDLY_ROLLING" and (
            response.request.url.path.endswith("/search") or "secondly limit" in message
        ):
            wait = self.retry_after(response) or self.secondly_wait
            return Verdict.rate_limited(message, retry_after=wait, code=code, key_scoped=True)
        wait = self.retry_after(response) or _interval_seconds(response) or self.rolling_wait
        return Verdict.rate_limited(message, retry_after=wait, code=code)

    def error_message(self, response: httpx.Response) -> str:
        """The vendor's message plus the per-field messages of ``errors[]``."""
        message = super().error_message(response)
        payload = _json(response)
        details = payload.get("errors") if isinstance(payload, dict) else None
        if isinstance(details, list):
            extra = [str(d["message"]) for d in details if isinstance(d, dict) and d.get("message")]
            extra = [e for e in extra if e not in message]
            if extra:
                message = f"{message} ({'; '.join(extra)})"
        return message

    def error_code(self, response: httpx.Response) -> str | None:
        payload = _json(response)
        if isinstance(payload, dict):
            for key in ("policyName", "category", "errorType", "status"):
                value = payload.get(key)
                if isinstance(value, str) and value and value != "error":
                    return value
        return super().error_code(response)

    def update_limits(
        self, response: httpx.Response, limiter: RateLimiter, key: str | None = None
    ) -> None:
        """``X-HubSpot-RateLimit-Remaining`` calls are left in the rolling interval.

        The headers give the window's length, not when it resets. In a rolling window of `max`
        calls the next call frees up when the oldest of the last `max` ages out, so an exhausted
        quota holds the connection until then (the answers seen stand in for the calls made),
        not for a whole interval.
        """
        remaining = response.headers.get("X-HubSpot-RateLimit-Remaining")
        most = response.headers.get("X-HubSpot-RateLimit-Max")
        interval = _interval_seconds(response)
        if remaining is None or interval is None:
            return
        try:
            left, size = int(remaining), int(most) if most else 0
        except ValueError:
            return
        now = time.monotonic()
        self._answered.append(now)
        while len(self._answered) > max(size, 1):
            self._answered.popleft()
        if left > 0:
            limiter.observe_quota(left, interval)
        elif size and len(self._answered) >= size:
            limiter.observe_quota(0, max(0.0, self._answered[0] + interval - now))
        else:
            limiter.observe_quota(0, interval)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _policy_name(response: httpx.Response) -> str | None:
    payload = _json(response)
    return payload.get("policyName") if isinstance(payload, dict) else None


def _interval_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    try:
        return float(value) / 1000 if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class UpsertError:
    """One record HubSpot refused in a batch upsert."""

    message: str
    category: str | None = None
    index: int | None = None  # position in the records given to batch_upsert
    id: str | None = None  # the record's id_property value


@dataclass
class UpsertResult:
    """What a batch upsert did: HubSpot's results and the records it refused."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[UpsertError] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(1 for r in self.results if r.get("new"))

    @property
    def updated(self) -> int:
        return len(self.results) - self.created

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Search:
    """One search query's paging state; ``truncated`` once it stopped at the 10k cap."""

    object_type: str
    body: dict[str, Any]
    truncated: bool = False


class HubSpotCRM(CRMResource):
    """HubSpot CRM objects: list, search, incremental sync, batch read and upsert."""

    connection: str = "hubspot"
    token: str | None = Field(
        default=None,
        description="Private-app / service-key token, or a reference like ${env:HUBSPOT_TOKEN}.",
    )
    client_id: str | None = Field(default=None, description="OAuth app client id.")
    client_secret: str | None = Field(default=None, description="OAuth client secret (reference).")
    refresh_token: str | None = Field(default=None, description="OAuth refresh token (reference).")
    base_url: str = "https://api.hubapi.com"
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="Client-side pacing; HubSpot's documented 100 per 10 s if unset."
    )
    search_rate_limit: RateLimitConfig | None = Field(
        default=None, description="Pacing of search calls; HubSpot's 5 per second if unset."
    )

    # ------------------------------------------------------------------ reads

    def list_objects(
        self,
        object_type: str,
        properties: Sequence[str] | None = None,
        limit: int | None = None,
        *,
        archived: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every object of ``object_type`` (or the first ``limit``), following ``after``; with
        ``archived`` the archived ones instead (search never returns those)."""
        path = self._objects_path(object_type)
        after: str | None = None
        returned = 0
        while limit is None or returned < limit:
            params: dict[str, Any] = {"limit": _page(LIST_PAGE_SIZE, limit, returned)}
            if properties:
                params["properties"] = ",".join(properties)
            if archived:
                params["archived"] = "true"
            if after is not None:
                params["after"] = after
            payload = self.http().request_json("GET", path, params=params)
            for record in payload.get("results") or []:
                if limit is not None and returned >= limit:
                    return
                returned += 1
                yield record
            after = _next_after(payload)
            if after is None:
                return

    def search(
        self,
        object_type: str,
        filters: Sequence[Mapping[str, Any]] | None = None,
        *,
        filter_groups: Sequence[Mapping[str, Any]] | None = None,
        properties: Sequence[str] | None = None,
        sorts: Sequence[Mapping[str, Any]] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Objects matching ``filters`` (AND) or ``filter_groups`` (OR of ANDs).

        Stops cleanly at HubSpot's 10,000-result cap (logged); narrow the filters, or use
        :meth:`iter_modified_since` for syncs.
        """
        groups = list(filter_groups or ([{"filters": list(filters)}] if filters else []))
        body = _search_body(groups, properties, sorts)
        run = _Search(object_type, body)
        yield from self._search(run, limit)
        if run.truncated:
            self.http().log.warning(
                f"{self.connection}: search on {object_type} stopped at HubSpot's "
                f"{SEARCH_CAP:,}-result cap; narrow the filters to read the rest"
            )

    def iter_modified_since(
        self,
        object_type: str,
        since: datetime,
        properties: Sequence[str] | None = None,
        *,
        until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Objects modified at or after ``since`` (and before ``until``, default now), oldest
        first, each once, however many there are."""
        prop = modified_property(object_type)
        wanted = sorted({*(properties or ()), prop}) if properties else None
        lower, upper = _epoch_ms(since), _epoch_ms(until or datetime.now(UTC))
        seen_at_lower: set[str] = set()
        while lower < upper:
            run = _Search(
                object_type,
                _search_body(
                    [{"filters": [_filter(prop, "GTE", lower), _filter(prop, "LT", upper)]}],
                    wanted,
                    [{"propertyName": prop, "direction": "ASCENDING"}],
                ),
            )
            last, ids_at_last = lower, set(seen_at_lower)
            for record in self._search(run, None):
                stamp = _record_ms(record, prop)
                if stamp == lower and str(record["id"]) in seen_at_lower:
                    continue
                if stamp != last:
                    last, ids_at_last = stamp, set()
                ids_at_last.add(str(record["id"]))
                yield record
            if not run.truncated:
                return
            if last == lower:  # a whole capped query at one instant: page it by id
                yield from self._same_instant(object_type, prop, lower, wanted, ids_at_last)
                lower, seen_at_lower = lower + 1, set()
            else:
                lower, seen_at_lower = last, ids_at_last

    def batch_read(
        self,
        object_type: str,
        ids: Iterable[str],
        properties: Sequence[str] | None = None,
        *,
        id_property: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects with these ids (or ``id_property`` values), 100 per call; ids HubSpot
        does not know are left out and logged."""
        path = f"{self._objects_path(object_type)}/batch/read"
        found: list[dict[str, Any]] = []
        for chunk in _chunks([str(i) for i in ids], BATCH_SIZE):
            body: dict[str, Any] = {
                "properties": list(properties or []),
                "propertiesWithHistory": [],
                "inputs": [{"id": i} for i in chunk],
            }
            if id_property:
                body["idProperty"] = id_property
            payload = self.http().request_json("POST", path, json=body)
            found.extend(payload.get("results") or [])
            if payload.get("numErrors"):
                self.http().log.warning(
                    f"{self.connection}: batch read of {object_type}: "
                    f"{payload['numErrors']} of {len(chunk)} ids not found"
                )
        return found

    def associated_ids(
        self, from_type: str, to_type: str, ids: Iterable[str]
    ) -> dict[str, list[str]]:
        """id -> ids of its associated ``to_type`` objects, primary first, then ascending
        (``POST /crm/v4/associations/{from}/{to}/batch/read``, 100 ids per call; search returns
        no associations). Ids without any are left out (HubSpot answers 207 with
        ``NO_ASSOCIATIONS_FOUND`` errors for them)."""
        path = (
            f"/crm/v4/associations/{self._object_name(from_type)}/"
            f"{self._object_name(to_type)}/batch/read"
        )
        found: dict[str, list[tuple[bool, str]]] = {}
        for chunk in _chunks([str(i) for i in ids], BATCH_SIZE):
            payload = self.http().request_json(
                "POST", path, json={"inputs": [{"id": i} for i in chunk]}
            )
            for result in payload.get("results") or []:
                source = str((result.get("from") or {}).get("id"))
                found.setdefault(source, []).extend(_associated(result.get("to") or []))
            unexpected = [
                e for e in payload.get("errors") or [] if e.get("category") != NO_ASSOCIATIONS
            ]
            if unexpected:
                self.http().log.warning(
                    f"{self.connection}: association read {from_type} -> {to_type}: "
                    f"{unexpected[0].get('message')}"
                )
        return {k: _primary_first(v) for k, v in found.items()}

    def query(
        self,
        object: str,  # the playbook's `object:` key
        filters: Mapping[str, Any] | None = None,
        properties: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows for a playbook ``query`` step: ``id`` plus properties; equality filters."""
        if not filters:
            return [flatten(r) for r in self.list_objects(object, properties, limit)]
        conditions = [_equality(name, value) for name, value in filters.items()]
        body = _search_body([{"filters": conditions}], properties, None)
        run = _Search(object, body)
        rows = [flatten(r) for r in self._search(run, limit)]
        if run.truncated:
            raise VendorValidationError(
                f"{self.connection}: the query on {object} matches more than HubSpot's "
                f"{SEARCH_CAP:,}-result search cap",
                "add filters or a limit, or read the synced table from the warehouse",
                vendor=self.connection,
            )
        return rows

    # ------------------------------------------------------------------ writes

    def batch_upsert(
        self,
        object_type: str,
        records: Sequence[Mapping[str, Any]],
        id_property: str,
    ) -> UpsertResult:
        """Create or update ``records`` keyed on the unique ``id_property``, 100 per call.

        Records HubSpot refuses (207) are reported in ``errors``, not raised.
        """
        path = f"{self._objects_path(object_type)}/batch/upsert"
        result = UpsertResult()
        indexed = list(enumerate(records))
        for chunk in _chunks(indexed, BATCH_SIZE):
            inputs = [self._upsert_input(i, record, id_property) for i, record in chunk]
            payload = self.http().request_json("POST", path, json={"inputs": inputs})
            result.results.extend(payload.get("results") or [])
            keys = {str(i): str(record.get(id_property)) for i, record in chunk}
            result.errors.extend(_upsert_errors(payload.get("errors") or [], keys))
        if result.errors:
            self.http().log.warning(
                f"{self.connection}: batch upsert of {object_type}: "
                f"{len(result.errors)} of {len(records)} records refused"
            )
        return result

    # ------------------------------------------------------------------ health

    def check(self) -> dict[str, Any]:
        """Authenticate with one cheap call; never raises, never shows a secret."""
        limits = self._limits()
        report = {
            "connection": self.connection,
            "base_url": self.base_url,
            "auth": "oauth" if self._uses_oauth() else "private_app",
            "rate_limit": _describe(limits[0]),
            "search_rate_limit": _describe(limits[1]),
        }
        try:
            response = self.http().request(
                "GET", self._objects_path("contacts"), params={"limit": 1}
            )
        except PartnershipsError as exc:
            return self._failure_report(exc, **report)
        headers = response.headers
        return {
            "ok": True,
            "detail": f"authenticated to {self.base_url}",
            **report,
            "remaining_in_interval": headers.get("X-HubSpot-RateLimit-Remaining"),
            "daily_remaining": headers.get("X-HubSpot-RateLimit-Daily-Remaining"),
        }

    # ------------------------------------------------------------------ internals

    def _build_client(self) -> HttpClient:
        limit, search_limit = self._limits()
        return HttpClient(
            self.connection,
            self.base_url.rstrip("/"),
            auth=self._auth(),
            policy=HubSpotPolicy(
                rolling_wait=limit.per_seconds, secondly_wait=search_limit.per_seconds
            ),
            rate_limit=limiter_for(self.connection, limit, per_key=search_limit),
            timeouts=self._timeouts(),
            retry=self._retry(),
            headers={"Accept": "application/json"},
        )

    def _close_client(self, client: HttpClient) -> None:
        if isinstance(client.auth, OAuthAuth):
            client.auth.provider.close()
        client.close()

    def _limits(self) -> tuple[RateLimit, RateLimit]:
        return (
            self.rate_limit or DEFAULT_RATE_LIMIT,
            self.search_rate_limit or DEFAULT_SEARCH_RATE_LIMIT,
        )

    def _uses_oauth(self) -> bool:
        return self.token is None and self.refresh_token is not None

    def _auth(self) -> Auth:
        if self.token is not None:
            token = self._secret(self.token)
            if not token:
                raise ConfigurationError(f"{self.connection}: the token is empty")
            return BearerAuth(token)
        if not (self.client_id and self.client_secret and self.refresh_token):
            raise ConfigurationError(
                f"{self.connection}: no credentials configured",
                "set `token` (private app / service key) or `client_id`, `client_secret` "
                "and `refresh_token` (OAuth)",
            )
        provider = self._oauth_provider(
            f"{self.base_url.rstrip('/')}/oauth/v1/token",
            "refresh_token",
            self.client_id,
            self.client_secret,
            self.refresh_token,
        )
        return OAuthAuth(provider)

    def _objects_path(self, object_type: str) -> str:
        return f"/crm/v3/objects/{self._object_name(object_type)}"

    def _object_name(self, object_type: str) -> str:
        if not _OBJECT.match(object_type):
            raise VendorValidationError(
                f"{self.connection}: {object_type!r} is not a HubSpot object type",
                "use e.g. contacts, companies, deals or a custom object's id",
                vendor=self.connection,
            )
        return object_type

    def _search(self, run: _Search, limit: int | None) -> Iterator[dict[str, Any]]:
        """The pages of one search query, up to ``limit`` or the cap."""
        path = f"{self._objects_path(run.object_type)}/search"
        offset = returned = 0
        while limit is None or returned < limit:
            size = min(_page(SEARCH_PAGE_SIZE, limit, returned), SEARCH_CAP - offset)
            body = {**run.body, "limit": size, "after": str(offset)}
            payload = self.http().request_json("POST", path, json=body, limit_key=SEARCH_KEY)
            results = payload.get("results") or []
            for record in results:
                returned += 1
                yield record
            after = _next_after(payload)
            if after is None or not results:
                return
            offset = int(after) if after.isdigit() else offset + len(results)
            if offset >= SEARCH_CAP:
                run.truncated = True
                return

    def _upsert_input(
        self, index: int, record: Mapping[str, Any], id_property: str
    ) -> dict[str, Any]:
        key = record.get(id_property)
        if key in (None, ""):
            raise VendorValidationError(
                f"{self.connection}: record {index} has no value for the id property "
                f"{id_property!r}",
                "every record of a batch upsert needs its unique id property",
                vendor=self.connection,
            )
        properties = {k: _property_value(v) for k, v in record.items() if k != id_property}
        return {
            "idProperty": id_property,
            "id": str(key),
            "properties": properties,
            "objectWriteTraceId": str(index),
        }

    def _same_instant(
        self,
        object_type: str,
        prop: str,
        instant: int,
        properties: Sequence[str] | None,
        skip: set[str],
    ) -> Iterator[dict[str, Any]]:
        """Every object modified at exactly ``instant`` (ms), paged by ascending object id."""
        last_id = 0
        while True:
            filters = [_filter(prop, "EQ", instant), _filter("hs_object_id", "GT", last_id)]
            sorts = [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
            run = _Search(object_type, _search_body([{"filters": filters}], properties, sorts))
            for record in self._search(run, None):
                last_id = max(last_id, int(record["id"]))
                if str(record["id"]) not in skip:
                    yield record
            if not run.truncated:
                return


def _page(size: int, limit: int | None, returned: int) -> int:
    return size if limit is None else max(1, min(size, limit - returned))


def _next_after(payload: Mapping[str, Any]) -> str | None:
    after = ((payload.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def _search_body(
    groups: Sequence[Mapping[str, Any]],
    properties: Sequence[str] | None,
    sorts: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"filterGroups": [dict(g) for g in groups]}
    if properties:
        body["properties"] = list(properties)
    if sorts:
        body["sorts"] = [dict(s) for s in sorts]
    return body


def _filter(prop: str, operator: str, value: Any) -> dict[str, Any]:
    return {"propertyName": prop, "operator": operator, "value": _filter_value(value)}


def _equality(prop: str, value: Any) -> dict[str, Any]:
    """A ``query`` filter: a list means any of, None means unset, else equal."""
    if value is None:
        return {"propertyName": prop, "operator": "NOT_HAS_PROPERTY"}
    if isinstance(value, list | tuple | set):
        return {"propertyName": prop, "operator": "IN", "values": [_filter_value(v) for v in value]}
    return _filter(prop, "EQ", value)


def _filter_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return str(_epoch_ms(value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _record_ms(record: Mapping[str, Any], prop: str) -> int:
    """The record's ``prop`` timestamp in epoch ms (HubSpot sends ISO-8601 or epoch ms)."""
    value = (record.get("properties") or {}).get(prop) or record.get("updatedAt")
    text = str(value)
    if text.isdigit():
        return int(text)
    return _epoch_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _associated(targets: Iterable[Mapping[str, Any]]) -> list[tuple[bool, str]]:
    """(is primary, id) of each associated object of one v4 batch-read result."""
    return [
        (
            any(
                (t.get("label") or "").lower() == "primary"
                for t in target.get("associationTypes") or []
            ),
            str(target["toObjectId"]),
        )
        for target in targets
        if target.get("toObjectId") is not None
    ]


def _primary_first(targets: list[tuple[bool, str]]) -> list[str]:
    ordered = sorted(
        set(targets), key=lambda t: (not t[0], int(t[1]) if t[1].isdigit() else 0, t[1])
    )
    ids: list[str] = []
    for _, target in ordered:
        if target not in ids:
            ids.append(target)
    return ids


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _property_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime | date | bool):
        return _filter_value(value)
    return str(value)


def _upsert_errors(
    errors: Iterable[Mapping[str, Any]], keys: Mapping[str, str]
) -> list[UpsertError]:
    """HubSpot's 207 ``errors[]`` mapped back to the records via ``objectWriteTraceId``."""
    found: list[UpsertError] = []
    for error in errors:
        context = error.get("context") or {}
        traces = [str(t) for t in context.get("objectWriteTraceId") or []]
        message = str(error.get("message") or "refused")
        category = error.get("category")
        if not traces:
            found.append(UpsertError(message, category))
        for trace in traces:
            index = int(trace) if trace.isdigit() else None
            found.append(UpsertError(message, category, index, keys.get(trace)))
    return found


def _describe(limit: RateLimit) -> str:
    return f"{limit.requests} per {limit.per_seconds:g}s"
