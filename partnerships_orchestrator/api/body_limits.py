"""Request bodies before any route sees them: a size cap, accepted content types, strict JSON.

Pure ASGI so that an oversized body is refused while it streams in, never buffered whole.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from partnerships_orchestrator.api.problems import MEDIA_TYPE, problem_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class StrictJSONError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def strict_json(raw: bytes) -> Any:
    """Parse JSON refusing duplicate keys and NaN/Infinity (UTF-8 only)."""
    try:
        return json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except UnicodeDecodeError as exc:
        raise StrictJSONError("the body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc


class BodyLimits:
    """Refuse bodies over ``limit_for(path)`` bytes (413), of a content type the path does not
    take (415), or JSON that is not strict (400)."""

    def __init__(
        self, app: ASGIApp, *, default_limit: int, webhook_limit: int, prefix: str
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.webhook_limit = webhook_limit
        self.prefix = prefix

    def limit_for(self, path: str) -> int:
        return (
            self.webhook_limit
            if path.startswith(f"{self.prefix}/webhooks/")
            else self.default_limit
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.limit_for(path)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(
                send, path, 413, "payload-too-large", f"the body may be at most {limit} bytes"
            )
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(
                    send, path, 413, "payload-too-large", f"the body may be at most {limit} bytes"
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._check(path, headers.get("content-type", ""), body)
        if refusal:
            await _refuse(send, path, *refusal)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _check(self, path: str, content_type: str, body: bytes) -> tuple[int, str, str] | None:
        if not body or path.startswith(f"{self.prefix}/webhooks/"):
            return None  # a webhook's bytes are checked against its signature, as sent
        media = content_type.split(";")[0].strip().lower()
        playbook_document = path.rstrip("/").startswith(
            f"{self.prefix}/playbooks"
        ) and not path.endswith("/execute")
        accepted = JSON_TYPES + (YAML_TYPES if playbook_document else ())
        if media not in accepted:
            return (
                415,
                "unsupported-media-type",
                f"content type {media or '(none)'!r} is not accepted here; send {' or '.join(accepted)}",
            )
        if media in JSON_TYPES:
            try:
                strict_json(body)
            except StrictJSONError as exc:
                return 400, "malformed-json", str(exc)
        return None


async def _refuse(send: Send, path: str, status: int, kind: str, detail: str) -> None:
    payload = json.dumps(problem_body(status, kind, detail, path)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
