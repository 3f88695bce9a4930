"""Request and response bodies of the API (the playbook document itself is the spec models')."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive timestamps; the product writes them all in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]


def as_json(model: type[BaseModel], content: dict[str, Any]) -> bytes:
    """The body FastAPI would send for ``content`` as ``model`` (validated, then JSON)."""
    return model.model_validate(content).model_dump_json().encode()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` (or the next offset) to get the next one."""

    items: list[T]
    total: int | None = Field(None, description="All matches, when cheap to count.")
    next_cursor: str | None = Field(None, description="Cursor of the next page; none at the end.")


class PlaybookSummary(BaseModel):
    id: str
    kind: str
    name: str | None
    description: str | None
    owners: list[str]
    tags: dict[str, str]
    triggers: list[str]
    steps: int | None
    origin: Literal["file", "store"] = Field(
        description="`file`: read-only, from `playbooks/`; `store`: created through the API."
    )
    file: str
    revision: int | None = Field(None, description="Current revision (store playbooks only).")


class PlaybookDetail(PlaybookSummary):
    document: dict[str, Any] = Field(description="The validated document, defaults filled in.")
    inputs: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(None, description="The document as sent (store playbooks only).")


class Revision(BaseModel):
    playbook: str
    number: int
    action: Literal["create", "update", "delete"]
    format: Literal["yaml", "json"]
    token_id: str | None
    created_at: Timestamp
    text: str | None = None


class ExecuteRequest(Strict):
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Run inputs by name, checked like `--input`."
    )


class ExecutionAccepted(BaseModel):
    execution_id: str
    playbook: str
    status: str


class ExecutionSummary(BaseModel):
    id: str
    playbook: str | None
    job: str
    status: str
    created_at: Timestamp | None
    started_at: Timestamp | None
    ended_at: Timestamp | None
    trigger: dict[str, Any] | None
    parent_execution_id: str | None
    root_execution_id: str | None


class StepState(BaseModel):
    key: str
    status: str | None
    attempts: int
    started_at: Timestamp | None
    ended_at: Timestamp | None


class LogLine(BaseModel):
    at: Timestamp
    level: str
    step: str | None
    event: str | None
    message: str


class ExecutionDetail(ExecutionSummary):
    steps: list[StepState]
    logs: list[LogLine]
    messages_sent: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]


class WebhookAccepted(BaseModel):
    event_id: int | None = Field(description="The inbox entry; none when it was a duplicate.")
    webhook_id: str
    playbook: str
    duplicate: bool
    execution_id: str | None = Field(None, description="With `?wait`: the run it started.")
    status: str | None = Field(None, description="With `?wait`: the run's status when answered.")


class DeadLetter(BaseModel):
    id: int
    playbook: str
    step: str
    run_id: str
    action: str
    error_type: str
    error: str
    inputs: Any = None
    attempts: int
    status: str
    redriven_at: Timestamp | None = None
    created_at: Timestamp


class Redriven(BaseModel):
    id: int
    playbook: str
    step: str
    output: Any = None


class OutboxMessage(BaseModel):
    id: int
    channel: str
    recipient: str
    subject: str | None
    body: str
    attachments: Any = None
    playbook: str | None
    run_id: str | None
    step: str | None
    message_id: str
    created_at: Timestamp


class AuditRow(BaseModel):
    id: int
    at: Timestamp
    token_id: str | None
    action: str
    playbook: str | None
    execution: str | None
    address: str | None
    status: int
    outcome: str
    detail: str | None


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Check] = Field(default_factory=dict)
