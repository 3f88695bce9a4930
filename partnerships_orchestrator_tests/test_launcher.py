"""How `partnerships up` reads the webserver's answer about the code location."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from partnerships_orchestrator.launcher import LOCATION_NAME, ApiOptions, location_status

# What dagster-webserver 1.13 answered when its PostgreSQL storage failed while it described the
# location's schedules (trimmed): the location loaded, the GraphQL answer holds no location.
STORAGE_FAILED = {
    "data": {
        "workspaceOrError": {
            "__typename": "Workspace",
            "locationEntries": [
                {"name": LOCATION_NAME, "loadStatus": "LOADED", "locationOrLoadError": None}
            ],
        }
    },
    "errors": [
        {
            "message": "(psycopg.OperationalError) the connection is closed",
            "path": [
                "workspaceOrError",
                "locationEntries",
                0,
                "locationOrLoadError",
                "repositories",
                0,
                "schedules",
            ],
        }
    ],
}


@pytest.fixture
def webserver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback endpoint answering `/graphql` with the next queued answer."""
    answers: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps(answers.pop(0)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()


def test_a_location_the_webserver_cannot_describe_is_reported_with_its_graphql_error(webserver):
    url, answers = webserver
    answers.append(STORAGE_FAILED)

    status = location_status(url)

    assert status is not None and not status.loaded
    assert status.error is not None
    assert "the connection is closed" in status.error
    assert "locationOrLoadError.repositories.0.schedules" in status.error


def test_the_api_command_follows_its_options():
    plain = ApiOptions(port=8123).command("127.0.0.1")
    assert plain[plain.index("--port") + 1] == "8123"
    assert "--no-access-log" in plain and "--workers" not in plain and "--ssl-certfile" not in plain
    more = ApiOptions(workers=3, access_log=True, tls_cert="c.pem", tls_key="k.pem")
    args = more.command("0.0.0.0")  # nosec B104 # an argument, nothing binds here
    assert args[args.index("--workers") + 1] == "3" and "--no-access-log" not in args
    assert args[args.index("--ssl-keyfile") + 1] == "k.pem"
    assert more.url("example.org") == "https://example.org:8080"
