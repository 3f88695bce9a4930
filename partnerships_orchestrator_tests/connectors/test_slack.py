"""SlackChat against the Slack emulator (API_CONTRACTS §5), and the emulator against slack_sdk."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pytest
from pydantic import ValidationError
from slack_sdk import WebClient, WebhookClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from partnerships_orchestrator.connectors.channel import ChannelProvider, Message, Receipt
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ConnectorTimeout,
    VendorUnavailable,
)
from partnerships_orchestrator.connectors.slack import (
    SECTION_LIMIT,
    SlackChat,
    message_payload,
    split_sections,
    to_mrkdwn,
)
from partnerships_orchestrator.errors import DeliveryError
from partnerships_orchestrator_tests.emulators.core import FaultAction
from partnerships_orchestrator_tests.emulators.slack import SlackEmulator

MakeSlack = Callable[..., SlackChat]
POST = "/api/chat.postMessage"


@pytest.fixture
def token(slack: SlackEmulator) -> str:
    return slack.issue_token()


@pytest.fixture
def make_slack(slack: SlackEmulator, token: str) -> Iterator[MakeSlack]:
    """SlackChat resources with fast retries and pacing; the test token unless told otherwise."""
    made: list[SlackChat] = []

    def make(**fields: Any) -> SlackChat:
        if "webhook_url" not in fields:
            fields.setdefault("token", token)
            fields.setdefault("base_url", slack.base_url)
        fields.setdefault("max_attempts", 3)
        fields.setdefault("backoff_seconds", 0.01)
        fields.setdefault("backoff_max_seconds", 0.05)
        fields.setdefault("timeout_seconds", 5.0)
        fields.setdefault("workspace_messages_per_minute", 0)
        fields.setdefault("per_channel_interval_seconds", 0.01)  # retries re-enter the lane
        resource = SlackChat(**fields)
        made.append(resource)
        return resource

    yield make
    for resource in made:
        resource.close()


def message(to: str = "#partner-ops", body: str = "Hello **partners**", **fields: Any) -> Message:
    fields.setdefault("subject", "Weekly digest")
    return Message(channel="slack", to=to, body=body, run_id="run-1", step="notify", **fields)


def posted_channels(slack: SlackEmulator) -> list[str]:
    """The ``channel`` of every chat.postMessage the emulator received, in order."""
    return [r.json()["channel"] for r in slack.requests(POST)]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        (
            "see [the report](https://x.org/r?a=1&b=2)",
            "see <https://x.org/r?a=1&amp;b=2|the report>",
        ),
        ("<https://x.org>", "<https://x.org>"),
        ("- one\n* two\n  + nested", "• one\n• two\n  • nested"),
        ("## Pipeline", "*Pipeline*"),
        ("> quoted", ">quoted"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("`**not bold**`", "`**not bold**`"),
        ("```\n**code** <x>\n```", "```\n**code** &lt;x&gt;\n```"),
        ("2 * 3 * 4", "2 * 3 * 4"),
    ],
)
def test_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_sections_are_cut_at_paragraphs_then_lines_then_words() -> None:
    paragraphs = ["a" * 1200, "b" * 1200, "c" * 1200]
    assert split_sections("\n\n".join(paragraphs)) == [
        f"{paragraphs[0]}\n\n{paragraphs[1]}",
        paragraphs[2],
    ]
    lines = "\n".join(["x" * 999] * 5)
    assert [len(s) for s in split_sections(lines)] == [2999, 1999]
    words = " ".join(["word"] * 1000)  # 4,999 characters on one line
    chunks = split_sections(words)
    assert all(len(c) <= SECTION_LIMIT for c in chunks)
    assert " ".join(chunks) == words


def test_a_body_needing_more_than_fifty_blocks_is_refused_before_sending() -> None:
    body = "\n\n".join(["y" * 2999] * 50)
    with pytest.raises(DeliveryError, match="51 blocks") as refused:
        message_payload(message(body=body))
    assert refused.value.retryable is False


# -- delivery ---------------------------------------------------------------------------------


def test_message_arrives_with_header_mrkdwn_sections_and_no_unfurling(
    slack: SlackEmulator, make_slack: MakeSlack, token: str
) -> None:
    chat = make_slack()
    assert isinstance(chat, ChannelProvider)
    body = "Hi **team**,\n\n- [Acme](https://acme.example) renewed\n- Globex churned"

    receipt = chat.send(message(body=body))

    [posted] = slack.messages
    assert receipt == Receipt(
        "slack",
        "slack",
        "#partner-ops",
        message_id=posted.ts,
        detail={"channel_id": "C0PARTNER"},
    )
    assert posted.channel_name == "partner-ops"
    assert posted.blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "Weekly digest"}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Hi *team*,\n\n• <https://acme.example|Acme> renewed\n• Globex churned",
            },
        },
    ]
    assert posted.payload["unfurl_links"] is False
    assert posted.text is not None and posted.text.startswith("Weekly digest\nHi *team*")
    [request] = slack.requests(POST)
    assert request.headers["authorization"] == f"Bearer {token}"
    assert "charset=utf-8" in request.headers["content-type"]


def test_a_long_body_arrives_as_sections_slack_accepts(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    paragraphs = [f"Partner {n}: " + "renewal notes " * 60 for n in range(12)]  # ~10,000 chars

    make_slack().send(message(body="\n\n".join(paragraphs)))

    [posted] = slack.messages
    sections = [b["text"]["text"] for b in posted.blocks or [] if b["type"] == "section"]
    assert len(sections) > 3
    assert all(len(s) <= SECTION_LIMIT for s in sections)
    assert "\n\n".join(sections) == "\n\n".join(p.rstrip() for p in paragraphs)


def test_an_empty_message_is_refused_without_a_request(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    with pytest.raises(DeliveryError, match="empty") as refused:
        make_slack().send(message(body="  \n", subject=None))
    assert refused.value.retryable is False
    assert slack.requests() == []


@pytest.mark.parametrize(
    ("to", "setup", "code"),
    [
        ("#no-such-channel", None, "channel_not_found"),
        ("#private", {"bot_is_member": False}, "not_in_channel"),
        ("#old", {"archived": True}, "is_archived"),
    ],
)
def test_ok_false_is_a_permanent_delivery_error_with_slacks_code(
    slack: SlackEmulator,
    make_slack: MakeSlack,
    to: str,
    setup: dict[str, bool] | None,
    code: str,
) -> None:
    if setup is not None:
        slack.add_channel(to.removeprefix("#"), **setup)

    with pytest.raises(DeliveryError) as refused:
        make_slack().send(message(to=to))

    assert code in str(refused.value)
    assert refused.value.retryable is False
    assert refused.value.hint
    assert [a.error for a in slack.answers] == [code]  # answered 200 ok:false, never retried
    assert slack.answers[0].status == 200


def test_a_refused_token_is_a_clear_error_without_the_token(
    slack: SlackEmulator, make_slack: MakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "xoxb-0000-not-a-real-token-d1e2"

    with pytest.raises(DeliveryError, match="invalid_auth") as refused:
        make_slack(token=bad).send(message())

    assert refused.value.retryable is False
    assert isinstance(refused.value.__cause__, AuthenticationError)
    assert "token" in (refused.value.hint or "")
    assert bad not in str(refused.value)
    assert bad not in caplog.text
    assert len(slack.requests(POST)) == 1


def test_an_expired_token_says_token_expired_and_that_rotation_is_not_automatic(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    expiring = slack.issue_token(ttl=43_200)
    slack.clock.advance(43_201)

    with pytest.raises(DeliveryError, match="token_expired") as refused:
        make_slack(token=expiring).send(message())

    assert refused.value.retryable is False
    assert "rotation" in (refused.value.hint or "")
    assert expiring not in str(refused.value)


def test_ratelimited_channel_waits_its_retry_after_while_another_channel_keeps_posting(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.configure(per_channel_limit=100, per_channel_burst=100)  # only the forced 429 limits
    slack.throttle("partner-ops", 1)
    chat = make_slack(per_channel_interval_seconds=0)
    outcome: dict[str, Receipt | BaseException] = {}

    def post_throttled() -> None:
        try:
            outcome["throttled"] = chat.send(message(to="#partner-ops"))
        except BaseException as exc:  # handed to the test thread
            outcome["throttled"] = exc

    worker = threading.Thread(target=post_throttled)
    worker.start()
    assert slack.wait_for(lambda answers: any(a.status == 429 for a in answers))
    for n in range(3):
        chat.send(message(to="#general", body=f"update {n}"))
    worker.join(10)

    assert isinstance(outcome["throttled"], Receipt)
    assert posted_channels(slack) == [
        "#partner-ops",  # 429, Retry-After: 1
        "#general",
        "#general",
        "#general",
        "#partner-ops",  # only after its channel's wait
    ]
    assert [(a.channel, a.status, a.error) for a in slack.answers][0] == (
        "partner-ops",
        429,
        "ratelimited",
    )
    assert chat.http().stats.rate_limited == 1


def test_paced_messages_to_one_channel_never_draw_a_429(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.configure(per_channel_window=0.1)  # one per 0.1 s per channel, as 1/s is for Slack
    chat = make_slack(per_channel_interval_seconds=0.1)

    for n in range(6):
        chat.send(message(body=f"update {n}"))

    assert [a.status for a in slack.answers] == [200] * 6
    assert len(slack.messages) == 6


def test_unpaced_messages_draw_the_emulators_429_as_a_retryable_delivery_error(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.configure(per_channel_window=0.1)
    chat = make_slack(per_channel_interval_seconds=0, max_attempts=1)

    with pytest.raises(DeliveryError, match="ratelimited") as throttled:
        for n in range(6):
            chat.send(message(body=f"update {n}"))

    assert throttled.value.retryable is True
    assert 429 in [a.status for a in slack.answers]
    assert slack.requests(POST)[-1].json()["channel"] == "#partner-ops"


def test_5xx_is_retried_and_the_message_delivered_once(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.add_fault(path=POST, status=503, body={"ok": False, "error": "service_unavailable"})
    slack.add_fault(path=POST, status=500, body="Internal Server Error")

    receipt = make_slack().send(message())

    assert len(slack.requests(POST)) == 3
    assert [m.ts for m in slack.messages] == [receipt.message_id]


def test_5xx_on_every_attempt_is_a_retryable_delivery_error(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.add_fault(path=POST, status=502, times=None)

    with pytest.raises(DeliveryError, match="502") as failed:
        make_slack(max_attempts=3).send(message())

    assert failed.value.retryable is True
    assert len(slack.requests(POST)) == 3


def test_a_timeout_propagates_unretried_because_the_message_may_have_arrived(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.add_fault(path=POST, action=FaultAction.DELAY, delay_seconds=0.6)

    with pytest.raises(ConnectorTimeout) as timed_out:
        make_slack(timeout_seconds=0.2).send(message())

    assert timed_out.value.code == "outcome_unknown"
    assert len(slack.requests(POST)) == 1
    assert slack.wait_for(lambda answers: len(answers) == 1)
    assert len(slack.messages) == 1  # it did arrive: a retry would have posted it twice


def test_a_dropped_connection_propagates_unretried(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    slack.add_fault(path=POST, action=FaultAction.DROP_CONNECTION)

    with pytest.raises(VendorUnavailable) as dropped:
        make_slack().send(message())

    assert not isinstance(dropped.value, DeliveryError)
    assert dropped.value.code == "outcome_unknown"
    assert len(slack.requests(POST)) == 1


def test_a_refused_connection_is_retried_then_a_retryable_delivery_error(
    make_slack: MakeSlack,
) -> None:
    with pytest.raises(DeliveryError) as failed:
        make_slack(base_url=closed_port_url()).send(message())
    assert failed.value.retryable is True
    assert "ConnectError" in str(failed.value)


# -- incoming webhooks ------------------------------------------------------------------------


def test_webhook_posts_and_reads_the_plain_text_ok(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    url = slack.add_webhook("partner-ops")

    receipt = make_slack(webhook_url=url).send(message(to="#partner-ops"))

    [posted] = slack.messages
    assert (posted.via, posted.channel_name) == ("webhook", "partner-ops")
    assert posted.blocks and posted.blocks[0]["type"] == "header"
    assert "channel" not in posted.payload
    assert (receipt.status, receipt.message_id) == ("sent", None)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("channel_is_archived", 410),
        ("channel_not_found", 404),
        ("no_service", 404),
        ("invalid_token", 403),
        ("posting_to_general_channel_denied", 403),
    ],
)
def test_webhook_error_strings_are_permanent_and_never_show_the_url(
    slack: SlackEmulator,
    make_slack: MakeSlack,
    caplog: pytest.LogCaptureFixture,
    error: str,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = slack.add_webhook("partner-ops", error=error)
    secret_path = url.removeprefix(slack.base_url or "")

    with pytest.raises(DeliveryError, match=error) as refused:
        make_slack(webhook_url=url).send(message())

    assert refused.value.retryable is False
    assert [(a.status, a.error) for a in slack.answers] == [(status, error)]
    for text in (str(refused.value), caplog.text):
        assert secret_path not in text
        assert secret_path.rsplit("/", 1)[1] not in text


def test_an_archived_channel_refuses_the_web_api_and_its_webhook_alike(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    url = slack.add_webhook("partner-ops")  # created while the channel was live
    slack.archive("partner-ops")

    with pytest.raises(DeliveryError, match="is_archived") as by_api:
        make_slack().send(message(to="#partner-ops"))
    with pytest.raises(DeliveryError, match="channel_is_archived") as by_webhook:
        make_slack(webhook_url=url).send(message(to="#partner-ops"))

    assert (by_api.value.retryable, by_webhook.value.retryable) == (False, False)
    assert by_webhook.value.hint and "unarchive" in by_webhook.value.hint
    assert [(a.via, a.status, a.error) for a in slack.answers] == [
        ("api", 200, "is_archived"),
        ("webhook", 410, "channel_is_archived"),
    ]
    assert slack.messages == []


def test_webhook_429_is_retried_after_its_retry_after(
    slack: SlackEmulator, make_slack: MakeSlack
) -> None:
    url = slack.add_webhook("partner-ops")
    slack.throttle("partner-ops", 0)

    make_slack(webhook_url=url).send(message())

    assert [a.status for a in slack.answers] == [429, 200]
    assert len(slack.messages) == 1


# -- secrets, configuration, health -----------------------------------------------------------


def test_a_token_reference_is_resolved_at_first_use_and_never_enters_config(
    slack: SlackEmulator, make_slack: MakeSlack, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_TEST_BOT_TOKEN", token)
    chat = make_slack(token="${env:SLACK_TEST_BOT_TOKEN}")

    chat.send(message())

    assert chat.token == "${env:SLACK_TEST_BOT_TOKEN}"
    assert token not in repr(chat) and token not in str(chat.model_dump())
    assert len(slack.messages) == 1


def test_an_unresolvable_reference_is_a_delivery_error_naming_it_and_nothing_is_sent(
    slack: SlackEmulator, make_slack: MakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_MISSING_TOKEN", raising=False)

    with pytest.raises(DeliveryError, match=r"\$\{env:SLACK_MISSING_TOKEN\}") as refused:
        make_slack(token="${env:SLACK_MISSING_TOKEN}").send(message())

    assert refused.value.retryable is False
    assert slack.requests() == []


def test_retried_failures_log_without_the_token(
    slack: SlackEmulator, make_slack: MakeSlack, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.add_fault(path=POST, status=503, times=2)

    with pytest.raises(DeliveryError) as refused:
        make_slack(max_attempts=2).send(message())

    assert "retry 1/1" in caplog.text
    assert token not in caplog.text and token not in str(refused.value)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"token": "xoxb-secret-1", "webhook_url": "https://hooks.slack.com/services/T/B/secret-2"},
    ],
)
def test_exactly_one_credential_is_required_and_the_error_does_not_echo_it(
    fields: dict[str, str],
) -> None:
    with pytest.raises(ValidationError, match="exactly one of") as refused:
        SlackChat(**fields)
    assert "secret" not in str(refused.value)


def test_check_reports_the_workspace_or_the_refusal_without_secrets(
    slack: SlackEmulator, make_slack: MakeSlack, token: str
) -> None:
    assert make_slack().check() == {
        "ok": True,
        "provider": "slack",
        "mode": "token",
        "team": "Emulated Workspace",
        "team_id": "T0EMULATED",
        "user": "partnerships-bot",
        "user_id": "U0BOT",
        "bot_id": "B0BOT",
        "url": "https://emulated.slack.com/",
    }
    refused = make_slack(token="xoxb-wrong-7f3a").check()
    assert refused["ok"] is False and "invalid_auth" in refused["detail"]
    assert "xoxb-wrong-7f3a" not in str(refused)
    webhook = make_slack(webhook_url=slack.add_webhook()).check()
    assert webhook["ok"] is None and "without posting" in webhook["detail"]


def test_slack_chat_runs_as_a_dagster_resource_with_only_the_reference_in_config(
    slack: SlackEmulator, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_DAGSTER_TOKEN", token)

    @dg.op
    def announce(slack_chat: SlackChat) -> str | None:
        return slack_chat.send(message()).message_id

    @dg.job
    def announcement() -> None:
        announce()

    resource = SlackChat(token="${env:SLACK_DAGSTER_TOKEN}", base_url=slack.base_url or "")
    result = announcement.execute_in_process(resources={"slack_chat": resource})

    assert result.success
    assert result.output_for_node("announce") == slack.messages[0].ts
    events = " ".join(str(e) for e in result.all_events)
    assert token not in events and token not in str(result.dagster_run.run_config)


# -- the emulator speaks Slack: driven by the official slack_sdk -------------------------------


def test_slack_sdk_web_client_posts_and_reads_errors(slack: SlackEmulator, token: str) -> None:
    client = WebClient(token=token, base_url=f"{slack.base_url}/api/")

    answer = client.chat_postMessage(
        channel="#partner-ops",
        text="fallback",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}],
    )
    assert answer["ok"] is True and answer["channel"] == "C0PARTNER"
    assert answer["ts"] == slack.messages[0].ts
    assert "warning" not in answer.data  # the SDK declares its charset
    assert client.auth_test()["team_id"] == "T0EMULATED"

    with pytest.raises(SlackApiError) as missing:
        client.chat_postMessage(channel="#nowhere", text="x")
    assert missing.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as refused:
        WebClient(token="xoxb-bad", base_url=f"{slack.base_url}/api/").auth_test()
    assert refused.value.response["error"] == "invalid_auth"


def test_slack_sdk_reads_the_429_and_its_retry_handler_honours_retry_after(
    slack: SlackEmulator, token: str
) -> None:
    client = WebClient(token=token, base_url=f"{slack.base_url}/api/")
    slack.throttle("partner-ops", 0)
    with pytest.raises(SlackApiError) as throttled:
        client.chat_postMessage(channel="#partner-ops", text="x")
    assert throttled.value.response.status_code == 429
    assert throttled.value.response["error"] == "ratelimited"
    assert int(throttled.value.response.headers["Retry-After"]) == 0

    slack.throttle("partner-ops", 0)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    assert client.chat_postMessage(channel="#partner-ops", text="y")["ok"] is True
    assert [a.status for a in slack.answers] == [429, 429, 200]


def test_slack_sdk_webhook_client_reads_plain_text_answers(slack: SlackEmulator) -> None:
    ok = WebhookClient(url=slack.add_webhook("partner-ops")).send(text="hello")
    assert (ok.status_code, ok.body) == (200, "ok")

    archived = WebhookClient(url=slack.add_webhook(error="channel_is_archived")).send(text="x")
    assert (archived.status_code, archived.body) == (410, "channel_is_archived")
    empty = WebhookClient(url=slack.add_webhook()).send(text="")
    assert (empty.status_code, empty.body) == (400, "no_text")


def test_slack_sdk_rotates_a_token_with_oauth_v2_access(slack: SlackEmulator) -> None:
    refresh = slack.issue_refresh_token()
    client = WebClient(base_url=f"{slack.base_url}/api/")

    rotated = client.oauth_v2_access(
        client_id="1111.2222",
        client_secret="slack-client-secret",
        grant_type="refresh_token",
        refresh_token=refresh,
    )

    assert rotated["expires_in"] == 43_200 and rotated["refresh_token"] != refresh
    fresh = WebClient(token=rotated["access_token"], base_url=f"{slack.base_url}/api/")
    assert fresh.auth_test()["ok"] is True
    with pytest.raises(SlackApiError) as reused:  # the old refresh token was revoked
        client.oauth_v2_access(
            client_id="1111.2222",
            client_secret="slack-client-secret",
            grant_type="refresh_token",
            refresh_token=refresh,
        )
    assert reused.value.response["error"] == "invalid_refresh_token"
