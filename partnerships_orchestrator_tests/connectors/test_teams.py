"""TeamsChat against the Teams emulator: workflow and legacy webhooks (API_CONTRACTS §6)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message
from partnerships_orchestrator.connectors.errors import ConnectorTimeout, VendorUnavailable
from partnerships_orchestrator.connectors.teams import (
    CARD_CONTENT_TYPE,
    TeamsChat,
    adaptive_card,
    card_problems,
)
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator_tests.emulators.core import FaultAction
from partnerships_orchestrator_tests.emulators.teams import TeamsEmulator

MakeTeams = Callable[..., TeamsChat]


@pytest.fixture
def workflow(teams: TeamsEmulator) -> str:
    return teams.add_workflow("Partner Ops")


@pytest.fixture
def make_teams(workflow: str) -> Iterator[MakeTeams]:
    """TeamsChat resources with fast retries, posting to ``workflow`` unless told otherwise."""
    made: list[TeamsChat] = []

    def make(**fields: Any) -> TeamsChat:
        fields.setdefault("webhook_url", workflow)
        fields.setdefault("max_attempts", 3)
        fields.setdefault("backoff_seconds", 0.01)
        fields.setdefault("backoff_max_seconds", 0.05)
        fields.setdefault("timeout_seconds", 5.0)
        fields.setdefault("interval_seconds", 0)
        resource = TeamsChat(**fields)
        made.append(resource)
        return resource

    yield make
    for resource in made:
        resource.close()


def message(
    body: str = "Renewals are **up** this week.\n\n- Acme\n- Globex", **fields: Any
) -> Message:
    fields.setdefault("subject", "Weekly digest")
    fields.setdefault("to", "Partner Ops")
    return Message(channel="teams", body=body, run_id="run-1", step="notify", **fields)


def secret_parts(url: str) -> list[str]:
    """What of a webhook URL must never be printed: its path and its signature."""
    parts = urlsplit(url)
    return [parts.path, *parse_qs(parts.query).get("sig", [])]


# -- the card ---------------------------------------------------------------------------------


def test_the_card_is_a_titled_adaptive_card_of_wrapping_text_blocks() -> None:
    envelope = adaptive_card("Weekly digest", "# Numbers\n\nUp **3%**\n* Acme\n+ Globex")

    assert envelope["type"] == "message"
    [attachment] = envelope["attachments"]
    assert attachment["contentType"] == CARD_CONTENT_TYPE
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"] == [
        {
            "type": "TextBlock",
            "text": "Weekly digest",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
        },
        {"type": "TextBlock", "text": "**Numbers**", "wrap": True},
        {"type": "TextBlock", "text": "Up **3%**\n- Acme\n- Globex", "wrap": True},
    ]
    assert card_problems(envelope) == []


def _card(**changes: Any) -> dict[str, Any]:
    envelope = adaptive_card("Title", "Body")
    content = envelope["attachments"][0]["content"]
    for key, value in changes.items():
        target, _, name = key.rpartition("__")
        holder = {"": envelope, "attachment": envelope["attachments"][0], "card": content}[target]
        holder[name] = value
    return envelope


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        ([], "must be a JSON object"),
        (_card(type="card"), '`type` must be "message"'),
        (_card(attachments=[]), "`attachments` must be a non-empty list"),
        (_card(attachment__contentType="text/html"), "contentType must be"),
        (_card(attachment__content="hello"), "must be an Adaptive Card object"),
        (_card(card__type="HeroCard"), 'content.type must be "AdaptiveCard"'),
        (_card(card__version="2.0"), "version must be 1.0 to 1.5"),
        (_card(card__body=[]), "body must be a non-empty list"),
        (_card(card__body=[{"text": "x"}]), "body[0] needs a `type`"),
        (_card(card__body=[{"type": "TextBlock", "text": " "}]), "needs a non-empty `text`"),
        (_card(card__body=[{"type": "TextBlock", "text": "x", "wrap": "yes"}]), "wrap must be"),
        (adaptive_card("Big", "x" * 30_000), "Teams takes about 28 KB"),
    ],
)
def test_card_problems_name_each_malformed_part(envelope: Any, problem: str) -> None:
    assert any(problem in p for p in card_problems(envelope)), card_problems(envelope)


# -- delivery ---------------------------------------------------------------------------------


def test_a_workflow_accepts_the_card_with_202_and_posts_it(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    chat = make_teams()
    assert isinstance(chat, ChannelProvider)

    receipt = chat.send(message())

    [run] = teams.runs
    assert (receipt.status, receipt.message_id, receipt.to) == ("accepted", run.id, "Partner Ops")
    assert receipt.detail == {"http_status": 202}
    assert run.status == "Succeeded"
    [post] = teams.posts
    assert (post.channel, post.via) == ("Partner Ops", "workflow")
    assert [b["text"] for b in post.card["body"]] == [
        "Weekly digest",
        "Renewals are **up** this week.",
        "- Acme\n- Globex",
    ]
    [request] = teams.requests()
    assert request.headers["content-type"] == "application/json; charset=utf-8"


def test_the_vendor_takes_a_bad_card_with_202_and_fails_the_run_unseen(
    teams: TeamsEmulator, workflow: str
) -> None:
    """Why the connector validates: the real endpoint says 202 to anything."""
    answer = httpx.post(workflow, json={"type": "message", "attachments": [{"content": {}}]})

    assert answer.status_code == 202
    assert [r.status for r in teams.runs] == ["Failed"]
    assert teams.posts == []


@pytest.mark.parametrize(
    ("subject", "body", "problem"),
    [
        (None, " \n\n ", "body must be a non-empty list"),
        ("Huge", "A long line of partner notes. " * 1_000, "Teams takes about 28 KB"),
    ],
)
def test_an_invalid_card_is_refused_before_any_request(
    teams: TeamsEmulator, make_teams: MakeTeams, subject: str | None, body: str, problem: str
) -> None:
    with pytest.raises(DeliveryError, match="Adaptive Card is invalid") as refused:
        make_teams().send(message(body=body, subject=subject))

    assert problem in str(refused.value)
    assert refused.value.retryable is False
    assert teams.requests() == []


def test_a_legacy_webhook_answering_1_is_sent(teams: TeamsEmulator, make_teams: MakeTeams) -> None:
    receipt = make_teams(webhook_url=teams.add_legacy_webhook("Renewals")).send(message())

    assert (receipt.status, receipt.detail) == ("sent", {"http_status": 200})
    assert [(p.channel, p.via) for p in teams.posts] == [("Renewals", "legacy")]


def test_a_legacy_200_reporting_http_429_is_retried_as_throttling(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    chat = make_teams(webhook_url=teams.add_legacy_webhook())
    teams.fail_legacy(429)

    receipt = chat.send(message())

    assert receipt.status == "sent"
    assert [a.text[:40] for a in teams.answers] == [
        "Webhook message delivery failed with err",
        "1",
    ]
    assert chat.http().stats.rate_limited == 1


@pytest.mark.parametrize(
    ("statuses", "retryable"),
    [((400,), False), ((413,), False), ((502, 502, 502), True)],
)
def test_a_legacy_200_reporting_a_failure_is_a_delivery_error(
    teams: TeamsEmulator, make_teams: MakeTeams, statuses: tuple[int, ...], retryable: bool
) -> None:
    url = teams.add_legacy_webhook()
    teams.fail_legacy(*statuses)

    with pytest.raises(DeliveryError, match=f"HTTP error {statuses[0]}") as failed:
        make_teams(webhook_url=url).send(message())

    assert failed.value.retryable is retryable
    assert len(teams.requests()) == len(statuses)
    assert teams.posts == []


def test_a_429_is_retried_after_its_retry_after(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    chat = make_teams()
    teams.throttle(1)

    assert chat.send(message()).status == "accepted"

    assert [a.status for a in teams.answers] == [429, 202]
    assert chat.http().stats.rate_limited == 1


def test_throttled_on_every_attempt_is_a_retryable_delivery_error(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    teams.throttle(0, 0)

    with pytest.raises(DeliveryError, match="429") as throttled:
        make_teams(max_attempts=2).send(message())

    assert throttled.value.retryable is True
    assert teams.posts == []


def test_5xx_is_retried(teams: TeamsEmulator, make_teams: MakeTeams) -> None:
    teams.add_fault(path="/workflows/", status=502, body="Bad Gateway")

    assert make_teams().send(message()).status == "accepted"

    assert len(teams.requests()) == 2
    assert len(teams.posts) == 1


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        (lambda url: url.replace("sig=", "sig=x"), 401),
        (lambda url: url.replace("/workflows/", "/workflows/0"), 404),
    ],
)
def test_a_refused_webhook_is_permanent_and_its_secrets_stay_out_of_errors_and_logs(
    teams: TeamsEmulator,
    make_teams: MakeTeams,
    workflow: str,
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[str], str],
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = tamper(workflow)

    with pytest.raises(DeliveryError, match=f"HTTP {status}") as refused:
        make_teams(webhook_url=url).send(message())

    assert refused.value.retryable is False
    assert "webhook_url" in (refused.value.hint or "")
    assert [a.status for a in teams.answers] == [status]
    for secret in secret_parts(url):
        assert secret not in str(refused.value)
        assert secret not in caplog.text


def test_a_timeout_propagates_unretried_because_the_card_may_have_arrived(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    teams.add_fault(path="/workflows/", action=FaultAction.DELAY, delay_seconds=0.6)

    with pytest.raises(ConnectorTimeout) as timed_out:
        make_teams(timeout_seconds=0.2).send(message())

    assert timed_out.value.code == "outcome_unknown"
    assert len(teams.requests()) == 1
    assert teams.wait_for(lambda answers: len(answers) == 1)
    assert len(teams.posts) == 1


def test_a_dropped_connection_propagates_unretried(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    teams.add_fault(path="/workflows/", action=FaultAction.DROP_CONNECTION)

    with pytest.raises(VendorUnavailable) as dropped:
        make_teams().send(message())

    assert dropped.value.code == "outcome_unknown"
    assert len(teams.requests()) == 1


def test_the_webhook_url_may_be_a_secret_reference_resolved_at_first_use(
    teams: TeamsEmulator,
    make_teams: MakeTeams,
    workflow: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEAMS_TEST_WEBHOOK", workflow)
    chat = make_teams(webhook_url="${env:TEAMS_TEST_WEBHOOK}")
    teams.add_fault(path="/workflows/", status=503)  # a retry is logged

    chat.send(message())

    assert chat.webhook_url == "${env:TEAMS_TEST_WEBHOOK}"
    assert "retry 1/2" in caplog.text
    for secret in secret_parts(workflow):
        assert secret not in caplog.text
        assert secret not in json.dumps(chat.model_dump())


def test_the_powerplatform_workflow_url_shape_is_served(
    teams: TeamsEmulator, make_teams: MakeTeams
) -> None:
    url = teams.add_workflow("Renewals", direct=True)

    assert make_teams(webhook_url=url).send(message()).status == "accepted"
    assert teams.posts[0].channel == "Renewals"


def test_check_says_what_is_known_without_posting(
    teams: TeamsEmulator, make_teams: MakeTeams, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow_check = make_teams().check()
    assert workflow_check["ok"] is None and workflow_check["kind"] == "workflow"
    assert make_teams(webhook_url=teams.add_legacy_webhook()).check()["kind"] == "legacy"
    monkeypatch.delenv("TEAMS_MISSING_WEBHOOK", raising=False)
    missing = make_teams(webhook_url="${env:TEAMS_MISSING_WEBHOOK}").check()
    assert missing["ok"] is False and "TEAMS_MISSING_WEBHOOK" in missing["detail"]
    assert teams.requests() == []
