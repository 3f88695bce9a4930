"""The webhook step against a real loopback receiver: SSRF guard, signing, status checks."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from partnerships_orchestrator.errors import (
    ConfigurationError,
    StepError,
    StepTimeout,
    WebhookBlocked,
)
from partnerships_orchestrator.spec.models import WebhookStep
from partnerships_orchestrator.steps import webhook
from partnerships_orchestrator_tests.steps.conftest import MakeContext, Receiver

LOOPBACK = ("127.0.0.1",)


def make_step(**fields: Any) -> WebhookStep:
    return WebhookStep.model_validate({"id": "notify", "type": "webhook", **fields})


def call(make_ctx: MakeContext, step: WebhookStep, **ctx: Any) -> dict[str, Any]:
    return webhook.run(step, make_ctx(step, **ctx))


@pytest.mark.parametrize(
    ("url", "host", "address", "reason"),
    [
        ("http://127.0.0.1:{port}/echo", "127.0.0.1", "127.0.0.1", "loopback"),
        ("http://localhost:{port}/echo", "localhost", "127.0.0.1", "loopback"),
        ("http://10.1.2.3/hook", "10.1.2.3", "10.1.2.3", "private"),
        (
            "http://169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "169.254.169.254",
            "link-local",
        ),
        ("http://[::1]:{port}/echo", "::1", "::1", "loopback"),
        ("http://[fd00::1]/hook", "fd00::1", "fd00::1", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1", "::ffff:7f00:1", "loopback"),
        ("http://0.0.0.0:{port}/echo", "0.0.0.0", "0.0.0.0", "unspecified"),
        ("http://224.0.0.1/hook", "224.0.0.1", "224.0.0.1", "multicast"),
        ("http://100.64.0.1/hook", "100.64.0.1", "100.64.0.1", "non-public"),
    ],
)
def test_private_targets_are_blocked_without_allow_list(
    make_ctx: MakeContext, receiver: Receiver, url: str, host: str, address: str, reason: str
) -> None:
    before = len(receiver.received)
    step = make_step(url=url.format(port=receiver.port))
    with pytest.raises(WebhookBlocked) as caught:
        call(make_ctx, step)
    assert f"host `{host}` resolves to {address}, a {reason} address" in caught.value.message
    assert caught.value.hint == "allow it with `webhooks.allow_hosts` in configuration"
    assert len(receiver.received) == before


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"])
def test_non_http_schemes_are_blocked_even_when_allow_listed(
    make_ctx: MakeContext, url: str
) -> None:
    with pytest.raises(WebhookBlocked, match="scheme"):
        call(make_ctx, make_step(url=url), allow_hosts=("127.0.0.1", "0.0.0.0/0"))


@pytest.mark.parametrize(
    ("host", "allow"),
    [
        ("127.0.0.1", ("127.0.0.1",)),
        ("127.0.0.1", ("127.0.0.0/8",)),
        ("127.0.0.1", ("127.0.0.1:{port}",)),
        ("localhost", ("LOCALHOST",)),
        ("localhost", ("localhost:{port}",)),
    ],
)
def test_allow_list_entries_admit_the_receiver(
    make_ctx: MakeContext, receiver: Receiver, host: str, allow: tuple[str, ...]
) -> None:
    step = make_step(url=f"http://{host}:{receiver.port}/echo", method="GET")
    entries = tuple(entry.format(port=receiver.port) for entry in allow)
    output = call(make_ctx, step, allow_hosts=entries)
    assert output["status"] == 200
    assert output["json"]["headers"]["host"] == f"{host}:{receiver.port}"
    assert output["headers"]["content-type"] == "application/json"


def test_allow_list_entry_for_another_port_does_not_admit(
    make_ctx: MakeContext, receiver: Receiver
) -> None:
    step = make_step(url=f"{receiver.base_url}/echo")
    with pytest.raises(WebhookBlocked):
        call(make_ctx, step, allow_hosts=("127.0.0.1:1", "10.0.0.0/8"))


def test_connection_goes_to_the_checked_address_not_a_second_lookup(
    make_ctx: MakeContext, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is checked and used; a later, different one is never asked."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.rebind.test":
            return real(next(answers, "10.9.9.9"), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    step = make_step(url=f"http://hooks.rebind.test:{receiver.port}/echo", json={"a": 1})
    output = call(make_ctx, step, allow_hosts=("127.0.0.0/8",))
    assert output["json"]["headers"]["host"] == f"hooks.rebind.test:{receiver.port}"
    assert next(answers, None) is None  # resolved exactly once


def test_signed_request_verifies_on_the_receiver(make_ctx: MakeContext, receiver: Receiver) -> None:
    step = make_step(url=f"{receiver.base_url}/echo", json={"partner": "{{ inputs.p }}"}, sign=True)
    output = call(make_ctx, step, allow_hosts=LOOPBACK, inputs={"p": "Acme"})
    assert output["json"]["verified"] is True
    assert json.loads(output["json"]["body"]) == {"partner": "Acme"}
    unsigned = call(make_ctx, make_step(url=f"{receiver.base_url}/echo"), allow_hosts=LOOPBACK)
    assert unsigned["json"]["verified"] is False


def test_webhook_id_is_stable_across_retries_and_distinct_per_item(
    make_ctx: MakeContext, receiver: Receiver
) -> None:
    step = make_step(url=f"{receiver.base_url}/echo", body="hi", sign=True)

    def sent_id(**ctx: Any) -> str:
        return call(make_ctx, step, allow_hosts=LOOPBACK, **ctx)["json"]["headers"]["webhook-id"]

    first = sent_id(run_id="run-1", root_id="root-1")
    assert sent_id(run_id="run-2-reexecution", root_id="root-1") == first
    assert sent_id(run_id="run-1", root_id="root-1", mapping_key="p2") != first
    assert sent_id(run_id="run-9", root_id="root-9") != first


def test_sign_without_secret_is_a_configuration_error(make_ctx: MakeContext) -> None:
    step = make_step(url="http://127.0.0.1/echo", sign=True)
    with pytest.raises(ConfigurationError, match="`notify`"):
        call(make_ctx, step, allow_hosts=LOOPBACK, secret=None)


def test_json_body_interpolation_keeps_types(make_ctx: MakeContext, receiver: Receiver) -> None:
    inputs = {
        "count": 3,
        "flag": True,
        "tags": ["a", "b"],
        "when": datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        "nothing": None,
    }
    step = make_step(
        url=f"{receiver.base_url}/echo",
        json={
            "count": "{{ inputs.count }}",
            "ok": "{{ inputs.flag }}",
            "tags": "{{ inputs.tags }}",
            "when": "{{ inputs.when }}",
            "none": "{{ inputs.nothing }}",
            "text": "n={{ inputs.count }}",
            "nested": [{"sum": "{{ inputs.count + 1 }}"}],
        },
    )
    output = call(make_ctx, step, allow_hosts=LOOPBACK, inputs=inputs)
    assert output["json"]["headers"]["content-type"] == "application/json"
    assert json.loads(output["json"]["body"]) == {
        "count": 3,
        "ok": True,
        "tags": ["a", "b"],
        "when": "2024-03-01T09:30:00+00:00",
        "none": None,
        "text": "n=3",
        "nested": [{"sum": 4}],
    }


def test_headers_url_and_raw_body_interpolate(make_ctx: MakeContext, receiver: Receiver) -> None:
    step = make_step(
        url="{{ inputs.base }}/echo",
        method="PUT",
        headers={"X-Partner": "{{ inputs.p }}"},
        body="hello {{ inputs.p }}",
    )
    output = call(
        make_ctx, step, allow_hosts=LOOPBACK, inputs={"base": receiver.base_url, "p": "Acme"}
    )
    seen = output["json"]
    assert (seen["method"], seen["body"]) == ("PUT", "hello Acme")
    assert seen["headers"]["x-partner"] == "Acme"
    assert seen["headers"]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("code", "expect", "ok"),
    [
        (500, None, False),
        (302, None, False),
        (500, 500, True),
        (404, [200, 404], True),
        (202, None, True),
        (202, 201, False),
    ],
)
def test_status_is_checked_against_expect_status(
    make_ctx: MakeContext, receiver: Receiver, code: int, expect: Any, ok: bool
) -> None:
    step = make_step(url=f"{receiver.base_url}/status/{code}", expect_status=expect)
    if ok:
        output = call(make_ctx, step, allow_hosts=LOOPBACK)
        assert (output["status"], output["json"]) == (code, None)
        assert output["text"].startswith("nope ")
        return
    with pytest.raises(StepError) as caught:
        call(make_ctx, step, allow_hosts=LOOPBACK)
    assert f"answered {code}" in caught.value.message


def test_status_mismatch_names_step_masks_url_and_previews_body(
    make_ctx: MakeContext, receiver: Receiver
) -> None:
    url = f"http://user:pa55@127.0.0.1:{receiver.port}/status/500?token=s3cr3t&page=2"
    with pytest.raises(StepError) as caught:
        call(make_ctx, make_step(url=url), allow_hosts=LOOPBACK)
    message = caught.value.message
    assert "webhook step `notify`" in message
    assert f"POST http://***@127.0.0.1:{receiver.port}/status/500?token=***&page=***" in message
    assert "answered 500, expected 2xx" in message
    assert repr(("nope " * 100)[:200]) in message
    assert "s3cr3t" not in str(caught.value) and "pa55" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hooks.example.org/partners", "https://hooks.example.org/partners"),
        ("https://u:p@h.example.org/x?key=abc&x=1", "https://***@h.example.org/x?key=***&x=***"),
        (
            "https://hooks.slack.com/services/T0001/B0002/abcdEFGH1234ijklMNOP",
            "https://hooks.slack.com/services/T0001/B0002/***",
        ),
        ("http://h.example.org:8080/a", "http://h.example.org:8080/a"),
    ],
)
def test_mask_url_hides_credentials(url: str, masked: str) -> None:
    assert webhook.mask_url(httpx.URL(url)) == masked


def test_refused_connection_is_a_step_error(make_ctx: MakeContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    step = make_step(url=f"http://127.0.0.1:{port}/hook?token=s3cr3t")
    with pytest.raises(StepError, match=r"webhook step `notify`: POST .*token=\*\*\* .*failed"):
        call(make_ctx, step, allow_hosts=LOOPBACK)


def test_deadline_bounds_the_call(make_ctx: MakeContext, receiver: Receiver) -> None:
    step = make_step(url=f"{receiver.base_url}/slow")
    with pytest.raises(StepTimeout, match="did not answer"):
        call(make_ctx, step, allow_hosts=LOOPBACK, deadline=time.monotonic() + 0.3)
    with pytest.raises(StepTimeout, match="ran out of time"):
        call(make_ctx, step, allow_hosts=LOOPBACK, deadline=time.monotonic() - 1)


def test_unresolvable_host_is_a_step_error(make_ctx: MakeContext) -> None:
    with pytest.raises(StepError, match="cannot resolve host `no-such-host.invalid`"):
        call(make_ctx, make_step(url="https://no-such-host.invalid/x"))
