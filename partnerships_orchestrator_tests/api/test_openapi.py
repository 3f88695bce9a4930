"""The OpenAPI document is valid, and a bounded schemathesis run against the live API finds no
server error and no response that contradicts the document."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from partnerships_orchestrator_tests.api.conftest import Stack

MAX_EXAMPLES = 5
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def openapi_document(stack: Stack) -> dict:
    answer = httpx.get(f"{stack.api}/openapi.json", timeout=30)
    assert answer.status_code == 200
    return answer.json()


def test_openapi_document_is_valid_and_lists_every_endpoint(openapi_document: dict):
    validate(openapi_document)
    paths = openapi_document["paths"]
    prefix = "/api/partnerships"
    for path, methods in {
        "/playbooks": {"get", "post"},
        "/playbooks/{playbook_id}": {"get", "put", "delete"},
        "/playbooks/{playbook_id}/execute": {"post"},
        "/playbooks/{playbook_id}/revisions": {"get"},
        "/playbooks/{playbook_id}/revisions/{number}": {"get"},
        "/executions": {"get"},
        "/executions/{run_id}": {"get"},
        "/executions/{run_id}/cancel": {"post"},
        "/executions/{run_id}/retry": {"post"},
        "/webhooks/{playbook_id}": {"post"},
        "/dead-letters": {"get"},
        "/dead-letters/{letter_id}": {"get"},
        "/dead-letters/{letter_id}/redrive": {"post"},
        "/outbox": {"get"},
        "/audit": {"get"},
        "/health/live": {"get"},
        "/health/ready": {"get"},
    }.items():
        assert methods <= set(paths[prefix + path]), path
    problem = paths[prefix + "/playbooks/{playbook_id}"]["get"]["responses"]["404"]
    assert "application/problem+json" in problem["content"]


@pytest.fixture(scope="module")
def api_schema(openapi_document: dict) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_dict(openapi_document)


@pytest.fixture(scope="module")
def fuzz_token(stack: Stack) -> str:
    return stack.token("admin", team="team-a", rate_limit=1_000_000)


def test_fuzzed_requests_get_no_server_error_and_documented_answers(
    api_schema: schemathesis.schemas.BaseSchema, stack: Stack, fuzz_token: str
):
    """Every operation, a few generated requests each (schemathesis' pytest plugin does not
    load under this pytest, so the operations are driven one by one)."""
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=stack.api, headers=headers, checks=CHECKS)

        try:
            run()
        except (
            Exception,
            BaseExceptionGroup,
        ) as exc:  # collected: one report for every operation that failed
            failures[operation.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
