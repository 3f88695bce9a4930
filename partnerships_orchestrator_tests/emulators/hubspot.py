"""A HubSpot CRM emulator: v3 objects, search, batch read/upsert, OAuth v1 tokens, rate limits.

Follows API_CONTRACTS §1 closely enough for ``hubspot-api-client`` (§12):

- ``GET /crm/v3/objects/{type}`` (and ``/crm/objects/2026-03/{type}``): ``limit`` (default 10,
  clamped to 100), ``after`` cursor, ``properties`` (comma-separated or repeated), ``archived``;
  the last page has no ``paging``.
- ``POST .../{type}/search``: filter groups (≤5 groups, ≤10 filters each, ≤25 in all), one sort,
  ``limit`` clamped to 200, ``after`` offsets; 400 at or past the 10,000th result.
- ``POST .../{type}/batch/read`` and ``.../batch/upsert`` (≤100 inputs; 207 with ``errors[]`` and
  ``numErrors`` when some inputs fail: unknown properties, invalid emails, non-unique idProperty).
- ``POST /crm/v4/associations/{from}/{to}/batch/read`` (``{"inputs":[{"id"}]}``, ≤1,000 inputs):
  per input with associations ``{"from":{"id"},"to":[{"toObjectId":<int>,"associationTypes":
  [{"category":"HUBSPOT_DEFINED","typeId","label"}]}]}``; inputs without any get a
  ``NO_ASSOCIATIONS_FOUND`` error (207). List and get take ``associations=companies`` and return
  ``associations.companies.results[].id`` (search never returns associations).
- ``POST /oauth/v1/token`` and ``/oauth/2026-03/token``: ``authorization_code`` and
  ``refresh_token`` grants, form-encoded, ``expires_in`` 1,800 s on the fake clock.

Every CRM call needs ``Authorization: Bearer`` with a private-app token or a live OAuth access
token (401 ``INVALID_AUTHENTICATION`` / ``EXPIRED_AUTHENTICATION`` otherwise). Calls count against
a ten-secondly window and a daily allowance (429 bodies naming ``TEN_SECONDLY_ROLLING`` or
``DAILY``, ``X-HubSpot-RateLimit-*`` headers, daily ones for private apps only); search has its
own per-second limit and answers without rate-limit headers.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

_counter = itertools.count(1)
OBJECT_PREFIXES = ("/crm/v3/objects", "/crm/objects/2026-03")
DATETIME_PROPERTIES = frozenset(
    {"createdate", "lastmodifieddate", "hs_lastmodifieddate", "closedate"}
)
DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": (
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
}
EXTRA_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("company", "phone", "jobtitle", "lifecyclestage", "partner_tier"),
    "companies": ("industry", "city", "partner_key", "partner_tier"),
    "deals": ("partner_key",),
}
OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)
_SEARCH_KEYS = frozenset({"filterGroups", "sorts", "properties", "limit", "after", "query"})


def iso_ms(epoch_ms: int) -> str:
    """HubSpot's timestamp format: ``2024-01-01T00:00:00.000Z``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def to_ms(value: Any) -> int | None:
    """Epoch ms from HubSpot's ISO timestamps or epoch-ms strings."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(round(moment.timestamp() * 1000))


@dataclass
class HsRecord:
    """One CRM object; datetime properties are kept as ISO strings like HubSpot's."""

    id: int
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived: bool = False
    associations: dict[str, dict[int, bool]] = field(default_factory=dict)  # type -> id: primary


@dataclass
class HubSpotState:
    """Accounts, tokens, objects and knobs (limits, page sizes, caps)."""

    private_tokens: set[str] = field(default_factory=set)
    apps: dict[str, str] = field(default_factory=lambda: {"hs-client-1": "hs-client-secret-1"})
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> client id
    auth_codes: dict[str, str] = field(default_factory=dict)  # code -> client id
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at
    token_ttl: int = 1800
    rotate_refresh_tokens: bool = False
    ten_secondly_limit: int = 100
    window_seconds: float = 10.0
    daily_limit: int = 250_000
    daily_used: int = 0
    search_limit: int = 5
    search_window: float = 1.0
    list_max: int = 100
    search_max: int = 200
    search_cap: int = 10_000
    batch_max: int = 100
    objects: dict[str, dict[int, HsRecord]] = field(
        default_factory=lambda: {name: {} for name in DEFAULT_PROPERTIES}
    )
    properties: dict[str, set[str]] = field(
        default_factory=lambda: {
            name: {*DEFAULT_PROPERTIES[name], *EXTRA_PROPERTIES[name]}
            for name in DEFAULT_PROPERTIES
        }
    )
    unique_properties: dict[str, set[str]] = field(
        default_factory=lambda: {
            "contacts": {"email", "hs_object_id"},
            "companies": {"hs_object_id", "partner_key"},
            "deals": {"hs_object_id", "partner_key"},
        }
    )
    next_id: int = 1001
    version: int = 0  # bumped by every write; keys the search cache
    limiter: RateLimiter | None = None
    search_limiter: RateLimiter | None = None
    search_cache: dict[str, list[int]] = field(default_factory=dict)


class HubSpotEmulator(Emulator[HubSpotState]):
    name = "hubspot"

    def __init__(self) -> None:
        super().__init__(HubSpotState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def issue_private_token(self) -> str:
        """A new private-app token (static, never expires)."""
        token = f"pat-na1-{uuid.uuid4()}"
        with self.lock:
            self.state.private_tokens.add(token)
        return token

    def issue_refresh_token(self, client_id: str = "hs-client-1") -> str:
        """A refresh token of the OAuth app ``client_id``."""
        token = f"na1-{uuid.uuid4().hex[:4]}-{uuid.uuid4()}"
        with self.lock:
            self.state.refresh_tokens[token] = client_id
        return token

    def issue_auth_code(self, client_id: str = "hs-client-1") -> str:
        code = f"code-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        with self.lock:
            self.state.auth_codes[code] = client_id
        return code

    def expire_access_tokens(self) -> None:
        """Make every OAuth access token expired now."""
        with self.lock:
            now = self.clock.now()
            for token in self.state.access_tokens:
                self.state.access_tokens[token] = now - 1

    def seed(
        self,
        object_type: str,
        count: int,
        *,
        start_ms: int = 1_700_000_000_000,
        step_ms: int = 1000,
        tie_every: int = 0,
    ) -> list[str]:
        """``count`` objects modified ``step_ms`` apart from ``start_ms``; with ``tie_every=k``
        every k-th object shares its predecessor's timestamp. Returns their ids."""
        ids: list[str] = []
        stamp = start_ms
        with self.lock:
            for index in range(count):
                if index and not (tie_every and index % tie_every == 0):
                    stamp += step_ms
                ids.append(
                    self._create(object_type, _sample(object_type, self.state.next_id), stamp)
                )
        return ids

    def add_record(
        self, object_type: str, properties: Mapping[str, Any], *, modified_ms: int | None = None
    ) -> str:
        with self.lock:
            stamp = modified_ms if modified_ms is not None else int(self.clock.now() * 1000)
            return self._create(object_type, dict(properties), stamp)

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, *, primary: bool = False
    ) -> None:
        """Associate two records (both directions, like HubSpot); the records' modified times
        do not move."""
        with self.lock:
            source = self.state.objects[from_type][int(from_id)]
            target = self.state.objects[to_type][int(to_id)]
            source.associations.setdefault(to_type, {})[target.id] = primary
            target.associations.setdefault(from_type, {})[source.id] = primary
            self.state.version += 1

    def record(self, object_type: str, object_id: str) -> HsRecord | None:
        with self.lock:
            return self.state.objects[object_type].get(int(object_id))

    def count(self, object_type: str) -> int:
        with self.lock:
            return len(self.state.objects[object_type])

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/oauth/2026-03/token", self._token, methods=["POST"]),
        ]
        routes.append(
            Route(
                "/crm/v4/associations/{from_type}/{to_type}/batch/read",
                self._associations_read,
                methods=["POST"],
            )
        )
        for prefix in OBJECT_PREFIXES:
            routes += [
                Route(f"{prefix}/{{object_type}}", self._list, methods=["GET"]),
                Route(f"{prefix}/{{object_type}}/search", self._search, methods=["POST"]),
                Route(f"{prefix}/{{object_type}}/batch/read", self._batch_read, methods=["POST"]),
                Route(
                    f"{prefix}/{{object_type}}/batch/upsert", self._batch_upsert, methods=["POST"]
                ),
                Route(f"{prefix}/{{object_type}}/{{object_id}}", self._get, methods=["GET"]),
            ]
        return routes

    async def _token(self, request: Request) -> Response:
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return _oauth_error("BAD_REQUEST", "invalid_request", "body must be form-encoded")
        form = {k: str(v) for k, v in (await request.form()).items()}
        grant = form.get("grant_type")
        if grant not in ("authorization_code", "refresh_token"):
            return _oauth_error(
                "BAD_GRANT_TYPE", "unsupported_grant_type", "grant_type is not supported"
            )
        with self.lock:
            state = self.state
            client_id = form.get("client_id", "")
            if client_id not in state.apps:
                return _oauth_error(
                    "BAD_CLIENT_ID", "invalid_client", "missing or unknown client id"
                )
            if form.get("client_secret") != state.apps[client_id]:
                return _oauth_error(
                    "BAD_CLIENT_SECRET", "invalid_client", "missing or invalid client secret"
                )
            if grant == "refresh_token":
                refresh = form.get("refresh_token", "")
                if state.refresh_tokens.get(refresh) != client_id:
                    return _oauth_error(
                        "BAD_REFRESH_TOKEN",
                        "invalid_grant",
                        "refresh token is invalid, expired or revoked",
                    )
                if state.rotate_refresh_tokens:
                    del state.refresh_tokens[refresh]
                    refresh = self.issue_refresh_token(client_id)
            else:
                code = form.get("code", "")
                if not form.get("redirect_uri"):
                    return _oauth_error(
                        "BAD_REDIRECT_URI", "invalid_request", "missing redirect_uri"
                    )
                if state.auth_codes.pop(code, None) != client_id:
                    return _oauth_error(
                        "BAD_AUTH_CODE", "invalid_grant", "missing or unknown auth code"
                    )
                refresh = self.issue_refresh_token(client_id)
            access = f"COXx{uuid.uuid4().hex}{uuid.uuid4().hex}"
            state.access_tokens[access] = self.clock.now() + state.token_ttl
            return JSONResponse(
                {
                    "token_type": "bearer",
                    "refresh_token": refresh,
                    "access_token": access,
                    "expires_in": state.token_ttl,
                }
            )

    async def _list(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        refused, headers = self._authorize(request)
        if refused is not None:
            return refused
        if object_type not in self.state.objects:
            return _error(400, f"Unable to infer object type from: {object_type}", headers=headers)
        params = request.query_params
        try:
            limit = max(1, min(int(params.get("limit", "10")), self.state.list_max))
        except ValueError:
            return _error(400, "limit must be an integer", headers=headers)
        after = params.get("after", "0") or "0"
        if not after.isdigit():
            return _error(400, f"Invalid after cursor: {after}", headers=headers)
        archived = params.get("archived", "false").lower() == "true"
        wanted = _requested(params.getlist("properties"))
        linked = _requested(params.getlist("associations")) or []
        with self.lock:
            records = self.state.objects[object_type]
            ids = [i for i in sorted(records) if i >= int(after)]
            ids = [i for i in ids if records[i].archived == archived]
            page = ids[:limit]
            body: dict[str, Any] = {
                "results": [self._render(object_type, records[i], wanted, linked) for i in page]
            }
        if len(ids) > limit:
            cursor = str(ids[limit])
            link = f"{request.url.path}?after={cursor}"
            body["paging"] = {"next": {"after": cursor, "link": link}}
        return JSONResponse(body, headers=headers)

    async def _get(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        refused, headers = self._authorize(request)
        if refused is not None:
            return refused
        object_id = request.path_params["object_id"]
        with self.lock:
            records = self.state.objects.get(object_type)
            record = records.get(int(object_id)) if records and object_id.isdigit() else None
            if record is None:
                return _error(
                    404,
                    "Object not found.  objectId are usually numeric.",
                    category="OBJECT_NOT_FOUND",
                    headers=headers,
                )
            wanted = _requested(request.query_params.getlist("properties"))
            linked = _requested(request.query_params.getlist("associations")) or []
            return JSONResponse(self._render(object_type, record, wanted, linked), headers=headers)

    async def _search(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        refused, _ = self._authorize(request, search=True)
        if refused is not None:
            return refused
        if object_type not in self.state.objects:
            return _error(400, f"Unable to infer object type from: {object_type}")
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _error(400, "Invalid input JSON on line 1: expected an object")
        with self.lock:
            problem = self._check_search(object_type, body)
            if problem is not None:
                return _error(400, problem)
            limit = max(1, min(int(body.get("limit", 10)), self.state.search_max))
            offset = int(str(body.get("after", "0") or "0"))
            cap = self.state.search_cap
            if offset >= cap:
                return _error(
                    400,
                    f"Paging past {cap} results is not supported (after={offset}); "
                    "use a narrower filter",
                )
            ids = self._matches(object_type, body)
            page = ids[offset : min(offset + limit, cap)]
            records = self.state.objects[object_type]
            wanted = [str(p) for p in body.get("properties") or []] or None
            result: dict[str, Any] = {
                "total": len(ids),
                "results": [self._render(object_type, records[i], wanted) for i in page],
            }
        end = offset + len(page)
        if end < len(ids):
            result["paging"] = {"next": {"after": str(end), "link": f"?after={end}"}}
        return JSONResponse(result)

    async def _batch_read(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        refused, headers = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        problem = self._check_batch(object_type, body, ("id",))
        if problem is not None:
            return _error(400, problem, headers=headers)
        started = iso_ms(int(self.clock.now() * 1000))
        id_property = body.get("idProperty") or "hs_object_id"
        with self.lock:
            if id_property not in self.state.unique_properties[object_type]:
                return _error(
                    400, f"Property {id_property} is not a unique identifier", headers=headers
                )
            wanted = [str(p) for p in body.get("properties") or []] or None
            results, missing = [], []
            for item in body["inputs"]:
                record = self._find(object_type, id_property, str(item["id"]))
                if record is None:
                    missing.append(str(item["id"]))
                else:
                    results.append(self._render(object_type, record, wanted))
        payload: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso_ms(int(self.clock.now() * 1000)),
        }
        if missing:
            payload["numErrors"] = 1
            payload["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {object_type.upper()} objects, they may be "
                    "deleted or not exist. Check that ids are valid.",
                    "context": {"ids": missing},
                }
            ]
        return JSONResponse(payload, status_code=207 if missing else 200, headers=headers)

    async def _associations_read(self, request: Request) -> Response:
        from_type, to_type = request.path_params["from_type"], request.path_params["to_type"]
        refused, headers = self._authorize(request)
        if refused is not None:
            return refused
        for name in (from_type, to_type):
            if name not in self.state.objects:
                return _error(400, f"Unable to infer object type from: {name}", headers=headers)
        body = await _json_body(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "Invalid input JSON : inputs must not be empty", headers=headers)
        if len(inputs) > ASSOCIATION_BATCH_MAX:
            return _error(
                400,
                f"Batch input limit exceeded: {len(inputs)} inputs, the maximum is "
                f"{ASSOCIATION_BATCH_MAX}",
                headers=headers,
            )
        started = iso_ms(int(self.clock.now() * 1000))
        results, errors = [], []
        with self.lock:
            records = self.state.objects[from_type]
            for item in inputs:
                key = str(item.get("id")) if isinstance(item, dict) else ""
                record = records.get(int(key)) if key.isdigit() else None
                linked = record.associations.get(to_type) if record else None
                if not linked:
                    errors.append(_no_associations(from_type, to_type, key))
                    continue
                results.append(
                    {
                        "from": {"id": key},
                        "to": [
                            {
                                "toObjectId": target,
                                "associationTypes": _association_types(from_type, to_type, primary),
                            }
                            for target, primary in sorted(linked.items())
                        ],
                    }
                )
        payload: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso_ms(int(self.clock.now() * 1000)),
        }
        if errors:
            payload["numErrors"] = len(errors)
            payload["errors"] = errors
        return JSONResponse(payload, status_code=207 if errors else 200, headers=headers)

    async def _batch_upsert(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        refused, headers = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        problem = self._check_batch(object_type, body, ("idProperty", "id", "properties"))
        if problem is not None:
            return _error(400, problem, headers=headers)
        started = iso_ms(int(self.clock.now() * 1000))
        results, errors = [], []
        with self.lock:
            for item in body["inputs"]:
                refusal = self._upsert_refusal(object_type, item)
                if refusal is not None:
                    errors.append(refusal)
                    continue
                results.append(self._upsert(object_type, item))
        payload: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso_ms(int(self.clock.now() * 1000)),
        }
        if errors:
            payload["numErrors"] = len(errors)
            payload["errors"] = errors
        return JSONResponse(payload, status_code=207 if errors else 200, headers=headers)

    # -- internals (callers hold the lock where state is touched) ----------------------------

    def _authorize(
        self, request: Request, *, search: bool = False
    ) -> tuple[Response | None, dict[str, str]]:
        """Authentication, then the daily and ten-secondly (or search) limits."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self.lock:
            state = self.state
            now = self.clock.now()
            private = token in state.private_tokens
            if not private and token not in state.access_tokens:
                return _auth_error(
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                ), {}
            if not private and now >= state.access_tokens[token]:
                ago = int(now - state.access_tokens[token])
                return _auth_error(
                    "EXPIRED_AUTHENTICATION",
                    f"The OAuth token used to make this call expired {ago} second(s) ago.",
                ), {}
            if state.daily_used >= state.daily_limit:
                return _rate_limited("DAILY", "You have reached your daily limit.", {}), {}
            if search:
                return self._search_gate(), {}
            if state.limiter is None:
                state.limiter = RateLimiter(
                    state.ten_secondly_limit, state.window_seconds, self.clock
                )
            decision = state.limiter.hit("portal")
            headers = {
                "X-HubSpot-RateLimit-Max": str(decision.limit),
                "X-HubSpot-RateLimit-Remaining": str(decision.remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(state.window_seconds * 1000)),
            }
            if decision.allowed:
                state.daily_used += 1
            if private:
                headers["X-HubSpot-RateLimit-Daily"] = str(state.daily_limit)
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                    max(0, state.daily_limit - state.daily_used)
                )
            if not decision.allowed:
                message = "You have reached your ten_secondly_rolling limit."
                return _rate_limited("TEN_SECONDLY_ROLLING", message, headers), headers
            return None, headers

    def _search_gate(self) -> Response | None:
        state = self.state
        if state.search_limiter is None:
            state.search_limiter = RateLimiter(state.search_limit, state.search_window, self.clock)
        if not state.search_limiter.hit("portal").allowed:
            body = {
                "status": "error",
                "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
            }
            return JSONResponse(body, status_code=429)
        state.daily_used += 1
        return None

    def _check_search(self, object_type: str, body: Mapping[str, Any]) -> str | None:
        """The vendor's complaint about a search body, if any."""
        unknown = sorted(set(body) - _SEARCH_KEYS)
        if unknown:
            return f"Invalid input JSON: unrecognized field(s) {unknown}"
        groups = body.get("filterGroups", [])
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            return "Invalid input JSON: filterGroups must be a list of objects"
        if len(groups) > 5:
            return f"Too many filter groups ({len(groups)}); the maximum is 5"
        total = 0
        for group in groups:
            filters = group.get("filters")
            if not isinstance(filters, list):
                return "Invalid input JSON: each filter group needs a filters list"
            if len(filters) > 10:
                return f"Too many filters in a group ({len(filters)}); the maximum is 10"
            total += len(filters)
            for item in filters:
                problem = self._check_filter(object_type, item)
                if problem:
                    return problem
        if total > 25:
            return f"Too many filters ({total}); the maximum is 25 across all groups"
        sorts = body.get("sorts", [])
        if not isinstance(sorts, list) or len(sorts) > 1:
            return "Invalid input JSON: sorts takes at most one sort"
        for sort in map(_sort_rule, sorts):
            if sort is None:
                return "Invalid input JSON: a sort needs propertyName and direction"
            if sort["propertyName"] not in self.state.properties[object_type]:
                return f'Property "{sort["propertyName"]}" does not exist'
        limit, after = body.get("limit", 10), str(body.get("after", "0") or "0")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            return "Invalid input JSON: limit must be a non-negative integer"
        if not after.isdigit():
            return f"Invalid input JSON: after must be numeric, not {after!r}"
        return None

    def _check_filter(self, object_type: str, item: Any) -> str | None:
        if not isinstance(item, dict) or "propertyName" not in item or "operator" not in item:
            return "Invalid input JSON: a filter needs propertyName and operator"
        if item["operator"] not in OPERATORS:
            return f"Invalid filter operator {item['operator']!r}"
        if item["propertyName"] not in self.state.properties[object_type]:
            return f'Property "{item["propertyName"]}" does not exist'
        operator = item["operator"]
        if operator in ("IN", "NOT_IN") and not isinstance(item.get("values"), list):
            return f"Operator {operator} needs a values list"
        if operator == "BETWEEN" and ("value" not in item or "highValue" not in item):
            return "Operator BETWEEN needs value and highValue"
        needs_value = operator not in ("IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
        if needs_value and item.get("value") is None:
            return f"Operator {operator} needs a value"
        return None

    def _matches(self, object_type: str, body: Mapping[str, Any]) -> list[int]:
        """Ids matching the search, sorted (cached per query and data version)."""
        state = self.state
        key = json.dumps(
            [
                object_type,
                state.version,
                body.get("filterGroups"),
                body.get("sorts"),
                body.get("query"),
            ],
            sort_keys=True,
        )
        cached = state.search_cache.get(key)
        if cached is not None:
            return cached
        records = state.objects[object_type]
        groups = body.get("filterGroups") or []
        text = str(body.get("query") or "").casefold()
        ids = [
            i
            for i, r in records.items()
            if not r.archived
            and (not groups or any(_group_matches(g, r) for g in groups))
            and (not text or any(text in str(v or "").casefold() for v in r.properties.values()))
        ]
        ids.sort()
        for sort in [_sort_rule(s) for s in body.get("sorts") or []]:
            assert sort is not None
            prop = sort["propertyName"]
            present = [i for i in ids if records[i].properties.get(prop) not in (None, "")]
            absent = [i for i in ids if records[i].properties.get(prop) in (None, "")]
            present.sort(
                key=lambda i: _comparable(prop, records[i].properties.get(prop)),
                reverse=sort["direction"] == "DESCENDING",
            )
            ids = present + absent
        if len(state.search_cache) > 32:
            state.search_cache.clear()
        state.search_cache[key] = ids
        return ids

    def _check_batch(self, object_type: str, body: Any, required: Iterable[str]) -> str | None:
        if object_type not in self.state.objects:
            return f"Unable to infer object type from: {object_type}"
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            return (
                "Invalid input JSON : Cannot build BatchInput, some of required attributes are "
                "not set [inputs]"
            )
        inputs = body["inputs"]
        if not inputs:
            return "Invalid input JSON : inputs must not be empty"
        if len(inputs) > self.state.batch_max:
            return f"Batch input limit exceeded: {len(inputs)} inputs, the maximum is {self.state.batch_max}"
        for item in inputs:
            missing = [name for name in required if not isinstance(item, dict) or name not in item]
            if missing:
                return (
                    "Invalid input JSON : Cannot build input, some of required attributes are "
                    f"not set {missing}"
                )
            if "properties" in required and not isinstance(item["properties"], dict):
                return "Invalid input JSON : properties must be an object"
        ids = [str(item["id"]).casefold() for item in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique"
        return None

    def _upsert_refusal(self, object_type: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """The per-input error of an upsert, HubSpot style, if the input is refused."""
        known = self.state.properties[object_type]
        message, category = None, "VALIDATION_ERROR"
        if item["idProperty"] not in self.state.unique_properties[object_type]:
            message = f"Property {item['idProperty']} is not a unique identifier"
        else:
            unknown = sorted(set(item["properties"]) - known)
            if unknown:
                message = f'Property "{unknown[0]}" does not exist'
        values = {**item["properties"], item["idProperty"]: item["id"]}
        email = values.get("email")
        if message is None and email is not None and "@" not in str(email):
            message = (
                'Property values were not valid: [{"isValid":false,"message":"Email address '
                f'{email} is invalid","error":"INVALID_EMAIL","name":"email"}}]'
            )
        if message is None:
            return None
        context: dict[str, list[str]] = {"id": [str(item["id"])]}
        if item.get("objectWriteTraceId") is not None:
            context["objectWriteTraceId"] = [str(item["objectWriteTraceId"])]
        return {"status": "error", "category": category, "message": message, "context": context}

    def _upsert(self, object_type: str, item: Mapping[str, Any]) -> dict[str, Any]:
        now = int(self.clock.now() * 1000)
        properties = {k: None if v is None else str(v) for k, v in item["properties"].items()}
        record = self._find(object_type, item["idProperty"], str(item["id"]))
        if record is None:
            if item["idProperty"] != "hs_object_id":
                properties[item["idProperty"]] = str(item["id"])
            created = self._create(object_type, properties, now)
            record = self.state.objects[object_type][int(created)]
            new = True
        else:
            record.properties.update(properties)
            self._touch(object_type, record, now)
            new = False
        return {**self._render(object_type, record, sorted(record.properties)), "new": new}

    def _find(self, object_type: str, id_property: str, value: str) -> HsRecord | None:
        records = self.state.objects[object_type]
        if id_property == "hs_object_id":
            return records.get(int(value)) if value.isdigit() else None
        wanted = value.casefold()
        for record in records.values():
            if str(record.properties.get(id_property) or "").casefold() == wanted:
                return record
        return None

    def _create(self, object_type: str, properties: dict[str, Any], stamp: int) -> str:
        state = self.state
        object_id = state.next_id
        state.next_id += 1
        record = HsRecord(object_id, dict(properties), stamp, stamp)
        record.properties["createdate"] = iso_ms(stamp)
        record.properties["hs_object_id"] = str(object_id)
        state.objects[object_type][object_id] = record
        self._touch(object_type, record, stamp)
        return str(object_id)

    def _touch(self, object_type: str, record: HsRecord, stamp: int) -> None:
        record.updated_ms = stamp
        record.properties[_modified(object_type)] = iso_ms(stamp)
        self.state.version += 1

    def _render(
        self,
        object_type: str,
        record: HsRecord,
        wanted: list[str] | None,
        linked: list[str] | None = None,
    ) -> dict[str, Any]:
        names = wanted if wanted is not None else list(DEFAULT_PROPERTIES[object_type])
        known = self.state.properties[object_type]
        rendered: dict[str, Any] = {
            "id": str(record.id),
            "properties": {n: record.properties.get(n) for n in names if n in known},
            "createdAt": iso_ms(record.created_ms),
            "updatedAt": iso_ms(record.updated_ms),
            "archived": record.archived,
        }
        if record.archived:
            rendered["archivedAt"] = iso_ms(record.updated_ms)
        associations = {
            to_type: {
                "results": [
                    {"id": str(target), "type": f"{_singular(object_type)}_to_{_singular(to_type)}"}
                    for target in sorted(record.associations[to_type])
                ]
            }
            for to_type in linked or []
            if record.associations.get(to_type)
        }
        if associations:
            rendered["associations"] = associations
        return rendered


ASSOCIATION_BATCH_MAX = 1000
# HubSpot-defined association type ids: (from, to) -> (unlabeled, primary)
ASSOCIATION_TYPE_IDS: dict[tuple[str, str], tuple[int, int]] = {
    ("deals", "companies"): (341, 5),
    ("companies", "deals"): (342, 6),
    ("contacts", "companies"): (279, 1),
    ("companies", "contacts"): (280, 2),
    ("deals", "contacts"): (3, 3),
    ("contacts", "deals"): (4, 4),
}


def _singular(object_type: str) -> str:
    return {"companies": "company"}.get(object_type, object_type.removesuffix("s"))


def _association_types(from_type: str, to_type: str, primary: bool) -> list[dict[str, Any]]:
    unlabeled, primary_id = ASSOCIATION_TYPE_IDS.get((from_type, to_type), (1, 1))
    types: list[dict[str, Any]] = [
        {"category": "HUBSPOT_DEFINED", "typeId": unlabeled, "label": None}
    ]
    if primary:
        types.insert(0, {"category": "HUBSPOT_DEFINED", "typeId": primary_id, "label": "Primary"})
    return types


def _no_associations(from_type: str, to_type: str, object_id: str) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "NO_ASSOCIATIONS_FOUND",
        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
        "message": f"No {_singular(to_type)} is associated with {_singular(from_type)} "
        f"{object_id}.",
        "context": {"fromObjectId": [object_id]},
    }


def _modified(object_type: str) -> str:
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def _sample(object_type: str, object_id: int) -> dict[str, Any]:
    """Plausible properties for a seeded object."""
    if object_type == "contacts":
        return {
            "email": f"contact{object_id}@partner{object_id % 37}.example.com",
            "firstname": f"First{object_id}",
            "lastname": f"Last{object_id}",
            "partner_tier": ("gold", "silver", "bronze")[object_id % 3],
        }
    if object_type == "companies":
        return {
            "name": f"Partner {object_id}",
            "domain": f"partner{object_id}.example.com",
            "partner_tier": ("gold", "silver", "bronze")[object_id % 3],
        }
    return {
        "dealname": f"Deal {object_id}",
        "amount": str(1000 + object_id % 50 * 250),
        "dealstage": ("appointmentscheduled", "qualifiedtobuy", "closedwon")[object_id % 3],
        "pipeline": "default",
    }


def _sort_rule(sort: Any) -> dict[str, str] | None:
    """A sort as ``{propertyName, direction}``; HubSpot also takes ``"prop"``/``"-prop"``."""
    if isinstance(sort, str) and sort.strip("-"):
        descending = sort.startswith("-")
        return {
            "propertyName": sort.lstrip("-"),
            "direction": "DESCENDING" if descending else "ASCENDING",
        }
    if (
        isinstance(sort, dict)
        and isinstance(sort.get("propertyName"), str)
        and sort.get("direction", "ASCENDING") in ("ASCENDING", "DESCENDING")
    ):
        return {
            "propertyName": sort["propertyName"],
            "direction": sort.get("direction", "ASCENDING"),
        }
    return None


def _requested(values: list[str]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _comparable(prop: str, value: Any) -> Any:
    """A value ordered the way HubSpot orders ``prop``: time, number, else folded text."""
    if value is None:
        return ""
    if prop in DATETIME_PROPERTIES:
        return to_ms(value) or 0
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value).casefold()


def _group_matches(group: Mapping[str, Any], record: HsRecord) -> bool:
    return all(_filter_matches(f, record) for f in group.get("filters") or [])


def _filter_matches(item: Mapping[str, Any], record: HsRecord) -> bool:
    prop, operator = item["propertyName"], item["operator"]
    raw = record.properties.get(prop)
    if operator == "HAS_PROPERTY":
        return raw not in (None, "")
    if operator == "NOT_HAS_PROPERTY":
        return raw in (None, "")
    if operator in ("IN", "NOT_IN"):
        inside = any(_equal(prop, raw, v) for v in item["values"])
        return inside if operator == "IN" else not inside
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(item["value"]).casefold()
        tokens = str(raw or "").casefold().split()
        found = (
            any(fnmatch.fnmatchcase(t, pattern) for t in tokens)
            or pattern in str(raw or "").casefold()
        )
        return found if operator == "CONTAINS_TOKEN" else not found
    if operator == "NEQ":
        return not _equal(prop, raw, item["value"])
    if raw in (None, ""):
        return False
    if operator == "EQ":
        return _equal(prop, raw, item["value"])
    left, right = _comparable(prop, raw), _comparable(prop, item["value"])
    if type(left) is not type(right):
        left, right = str(left), str(right)
    if operator == "BETWEEN":
        high = _comparable(prop, item["highValue"])
        return right <= left <= high
    return {"LT": left < right, "LTE": left <= right, "GT": left > right, "GTE": left >= right}[
        operator
    ]


def _equal(prop: str, raw: Any, value: Any) -> bool:
    if raw in (None, ""):
        return False
    return _comparable(prop, raw) == _comparable(prop, value)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def _error(
    status: int,
    message: str,
    *,
    category: str = "VALIDATION_ERROR",
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _auth_error(category: str, message: str) -> Response:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if category == "EXPIRED_AUTHENTICATION":
        body["context"] = {"expire time": [datetime.now(UTC).isoformat()]}
    return JSONResponse(body, status_code=401)


def _rate_limited(policy: str, message: str, headers: Mapping[str, str]) -> Response:
    body = {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
    }
    return JSONResponse(body, status_code=429, headers=dict(headers))


def _oauth_error(status: str, error: str, description: str) -> Response:
    body = {
        "status": status,
        "message": description,
        "correlationId": str(uuid.uuid4()),
        "error": error,
        "error_description": description,
    }
    return JSONResponse(body, status_code=400)
