"""The playbook language: one pydantic model per construct, the single source of truth.

The validator, the compiler, the API schema, the README's reference table and the JSON Schema
for editors (``partnerships schema``) all derive from these models. Keys and meanings follow
PLAYBOOK_SPEC.md; every model forbids unknown keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_RUNS_LIMIT = 10  # dagster.yaml ships one run-tag concurrency rule per value 1..10

DocId = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        description="Lower-case letters, digits, `-` and `_`; unique across the folder.",
    ),
]


class Model(BaseModel):
    """Base of every language model: unknown keys are errors, aliases and names both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- inputs and triggers

InputType = Literal["string", "integer", "number", "boolean", "date", "datetime", "list", "object"]


class InputSpec(Model):
    """One typed run input: the launchpad config, the API body and `--input key=value`."""

    type: InputType = Field(description="The value's type.")
    default: Any = Field(None, description="Value used when the input is not given.")
    required: bool | None = Field(
        None, description="Must be given; defaults to true unless a `default` is set."
    )
    description: str | None = Field(None, description="Shown in the launchpad and the API docs.")
    enum: list[Any] | None = Field(None, description="The only values allowed.")

    @property
    def is_required(self) -> bool:
        if self.required is None:
            return self.default is None
        return self.required


class CronTrigger(Model):
    """Run on a cron schedule."""

    type: Literal["cron"]
    cron: str = Field(description="Five-field cron expression, e.g. `0 9 * * 1-5`.")
    timezone: str = Field("UTC", description="IANA time zone the cron is read in.")


class WebhookTrigger(Model):
    """Run when `POST /api/partnerships/webhooks/<playbook id>` receives a signed call."""

    type: Literal["webhook"]
    secret: str | None = Field(
        None,
        description="Secret reference to a Standard Webhooks `whsec_...` key; "
        "made per playbook and kept in local state when absent.",
    )


class DatasetTrigger(Model):
    """Run after an asset (sync object, dataset, metrics or report) materializes."""

    type: Literal["dataset"]
    dataset: str = Field(description="Asset id, e.g. `hubspot_companies` or a dataset id.")


class ManualTrigger(Model):
    """Run by hand: the UI launchpad, the CLI or the API."""

    type: Literal["manual"]


Trigger = Annotated[
    CronTrigger | WebhookTrigger | DatasetTrigger | ManualTrigger, Field(discriminator="type")
]


# ---------------------------------------------------------------- error policy


class OnError(Model):
    """What happens when a step fails."""

    action: Literal["retry", "skip", "abort"] = Field(
        "retry",
        description="`retry` then fail the step; `skip` records the failure and goes on; "
        "`abort` fails the run now.",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts in all, with `retry`.")
    delay_seconds: float = Field(1.0, ge=0, description="Wait before the first retry.")
    backoff: Literal["constant", "linear", "exponential"] = Field(
        "constant", description="How the wait grows between retries."
    )
    jitter: Literal["none", "full", "plus_minus"] = Field(
        "none", description="Randomise waits so retries of many runs do not align."
    )


class Concurrency(Model):
    """How many runs of this playbook may be in progress at once."""

    max_runs: int = Field(ge=1, le=MAX_RUNS_LIMIT, description="Runs of this playbook at once.")


class Defaults(Model):
    """Step settings applied where a step does not set its own."""

    on_error: OnError | None = Field(None, description="Error policy for steps without one.")
    timeout_seconds: float | None = Field(None, gt=0, description="Timeout for steps without one.")


# ---------------------------------------------------------------- steps


class StepBase(Model):
    """Keys common to every step type."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", description="Unique in the playbook.")
    type: str = Field(description="`query`, `evaluate`, `template`, `communicate` or `webhook`.")
    name: str | None = Field(None, description="Human label shown in the UI.")
    description: str | None = Field(None, description="What the step does (shown in the UI).")
    depends_on: list[str] = Field(default_factory=list, description="Step ids this step needs.")
    when: str | None = Field(None, description="Expression; false skips this step and dependents.")
    for_each: str | None = Field(
        None, description="Expression yielding a list; the step runs once per element (`item`)."
    )
    collect: bool = Field(
        False, description="Run once after a fan-out, seeing the list of per-item outputs."
    )
    on_error: OnError | None = Field(None, description="What happens when the step fails.")
    timeout_seconds: float | None = Field(None, gt=0, description="Fail the attempt after this.")


class QueryStep(StepBase):
    """Read rows from the warehouse, a CRM connector or a dataset."""

    type: Literal["query"]
    source: str = Field(
        "warehouse", description="`warehouse`, a CRM connector (`hubspot`, ...), or `dataset:<id>`."
    )
    sql: str | None = Field(None, description="SQL with `:name` placeholders bound from `params`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Bound SQL parameters.")
    object: str | None = Field(None, description="CRM object to read, e.g. `contacts`.")
    filters: dict[str, Any] = Field(default_factory=dict, description="CRM property filters.")
    properties: list[str] | None = Field(None, description="CRM properties to return.")
    limit: int | None = Field(None, ge=1, description="Most rows returned.")

    @model_validator(mode="after")
    def _sql_or_object(self) -> QueryStep:
        if self.sql is not None and self.object is not None:
            raise ValueError("a query step takes `sql` or `object`, not both")
        if self.sql is None and self.object is None and not self.source.startswith("dataset:"):
            raise ValueError("a query step needs `sql` or `object` (or `source: dataset:<id>`)")
        return self


class EvaluateStep(StepBase):
    """Compute values with expressions."""

    type: Literal["evaluate"]
    expression: str | None = Field(None, description="Bare expression: the step's output.")
    assign: dict[str, str] = Field(
        default_factory=dict, description="New fields per row (or per item): name -> expression."
    )
    filter: str | None = Field(None, description="Keep rows where this expression is true.")
    rows: str | None = Field(
        None,
        description="Expression yielding the rows `assign`/`filter` work on; "
        "defaults to the rows of the single upstream query.",
    )

    @model_validator(mode="after")
    def _has_work(self) -> EvaluateStep:
        if self.expression is None and not self.assign and self.filter is None:
            raise ValueError("an evaluate step needs `expression`, `assign` or `filter`")
        return self


TemplateFormat = Literal["markdown", "html", "text", "pdf"]


class TemplateStep(StepBase):
    """Render a Jinja2 template to text, HTML or PDF."""

    type: Literal["template"]
    template: str | None = Field(None, description="File under `templates/`.")
    source: str | None = Field(None, description="Inline template text.")
    format: TemplateFormat = Field("markdown", description="Output format.")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Extra names for the template (values may interpolate)."
    )

    @model_validator(mode="after")
    def _template_or_source(self) -> TemplateStep:
        if (self.template is None) == (self.source is None):
            raise ValueError("a template step needs exactly one of `template` or `source`")
        return self


Channel = Literal["email", "sms", "slack", "teams"]


class CommunicateStep(StepBase):
    """Send a message by email, SMS, Slack or Teams, at most once per recipient."""

    type: Literal["communicate"]
    channel: Channel = Field(description="`email`, `sms`, `slack` or `teams`.")
    provider: str | None = Field(
        None, description="Provider name; defaults to the channel's connection (`outbox` if none)."
    )
    to: str | list[str] = Field(description="Recipient(s); strings may interpolate.")
    subject: str | None = Field(None, description="Subject (email) or title (chat).")
    body: str | None = Field(None, description="Message text; Markdown for email and chat.")
    template: str | None = Field(None, description="Template file for the body instead of `body`.")
    attachments: list[str] = Field(
        default_factory=list, description="File paths (e.g. a PDF template step's output)."
    )

    @model_validator(mode="after")
    def _body_or_template(self) -> CommunicateStep:
        if (self.body is None) == (self.template is None):
            raise ValueError("a communicate step needs exactly one of `body` or `template`")
        return self


class WebhookStep(StepBase):
    """Call an HTTP endpoint."""

    type: Literal["webhook"]
    url: str = Field(description="Target URL; may interpolate.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="HTTP method."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers; may interpolate."
    )
    json_body: Any = Field(None, alias="json", description="JSON body; strings may interpolate.")
    body: str | None = Field(None, description="Raw text body.")
    expect_status: list[int] | int | None = Field(
        None, description="Accepted status code(s); any 2xx when absent."
    )
    sign: bool = Field(False, description="Sign with the playbook's Standard Webhooks secret.")

    @model_validator(mode="after")
    def _one_body(self) -> WebhookStep:
        if self.json_body is not None and self.body is not None:
            raise ValueError("a webhook step takes `json` or `body`, not both")
        return self


Step = Annotated[
    QueryStep | EvaluateStep | TemplateStep | CommunicateStep | WebhookStep,
    Field(discriminator="type"),
]
STEP_TYPES = ("query", "evaluate", "template", "communicate", "webhook")


# ---------------------------------------------------------------- documents


class DocumentBase(Model):
    """Keys every document has."""

    id: DocId
    name: str | None = Field(None, description="Human title shown in the UI.")
    description: str | None = Field(None, description="What it is for.")
    owners: list[str] = Field(default_factory=list, description="Teams allowed to see and run it.")
    tags: dict[str, str] = Field(default_factory=dict, description="Labels, shown as Dagster tags.")


class Playbook(DocumentBase):
    """A multi-step workflow: a Dagster job plus its schedules and sensors."""

    kind: Literal["playbook"] = Field("playbook", description="May be omitted for playbooks.")
    triggers: list[Trigger] = Field(
        default_factory=list, description="What starts a run; by hand only when empty."
    )
    inputs: dict[str, InputSpec] = Field(default_factory=dict, description="Typed run inputs.")
    defaults: Defaults | None = Field(None, description="Settings for steps that set none.")
    concurrency: Concurrency | None = Field(None, description="Limit on simultaneous runs.")
    executor: Literal["in_process", "multiprocess"] = Field(
        "in_process", description="`multiprocess` runs independent steps in separate processes."
    )
    steps: list[Step] = Field(min_length=1, description="The work, as a graph via `depends_on`.")


class Schedule(Model):
    """When an asset is refreshed."""

    cron: str = Field(description="Five-field cron expression.")
    timezone: str = Field("UTC", description="IANA time zone the cron is read in.")


class Sync(DocumentBase):
    """CRM objects landed in the partner warehouse, one asset per object."""

    kind: Literal["sync"]
    provider: Literal["hubspot", "salesforce"] = Field(description="The CRM to read.")
    objects: list[str] = Field(
        min_length=1, description="CRM objects, each one asset `<id>_<object>`."
    )
    properties: dict[str, list[str]] = Field(
        default_factory=dict, description="Properties to land per object (all when absent)."
    )
    incremental: bool = Field(True, description="Only records modified since the last good sync.")
    schedule: Schedule | None = Field(None, description="When to sync.")

    def asset_ids(self) -> list[str]:
        return [f"{self.id}_{obj}" for obj in self.objects]


class Check(Model):
    """A data quality check on a dataset (a Dagster asset check, run after each materialization)."""

    type: Literal["unique", "not_null", "accepted_values", "row_count", "freshness"] = Field(
        description="What to check: `unique` / `not_null` / `accepted_values` on `column`, "
        "`row_count` between `min` and `max`, `freshness`: the newest `column` value is at most "
        "`max_age_hours` old."
    )
    column: str | None = Field(None, description="The column checked.")
    values: list[Any] | None = Field(None, description="Allowed values, for `accepted_values`.")
    min: int | None = Field(None, description="Fewest rows, for `row_count`.")
    max: int | None = Field(None, description="Most rows, for `row_count`.")
    max_age_hours: float | None = Field(
        None, gt=0, description="Oldest the newest `column` value may be, for `freshness`."
    )
    severity: Literal["warn", "error"] = Field(
        "error", description="How a failure shows in Dagster: `warn` or `error`."
    )
    blocking: bool = Field(
        False, description="A failure (with `error` severity) stops downstream assets."
    )

    @model_validator(mode="after")
    def _needs(self) -> Check:
        if self.type in ("unique", "not_null", "accepted_values", "freshness") and not self.column:
            raise ValueError(f"a `{self.type}` check needs `column`")
        if self.type == "accepted_values" and not self.values:
            raise ValueError("an `accepted_values` check needs `values`")
        if self.type == "row_count" and self.min is None and self.max is None:
            raise ValueError("a `row_count` check needs `min` and/or `max`")
        if self.type == "freshness" and self.max_age_hours is None:
            raise ValueError("a `freshness` check needs `max_age_hours`")
        return self


class Dataset(DocumentBase):
    """A research dataset: one asset, its upstream assets inferred from its SQL."""

    kind: Literal["dataset"]
    sql: str = Field(
        description="The query defining the dataset; its tables are its upstream assets."
    )
    deps: list[str] = Field(
        default_factory=list,
        description="Upstream assets beyond the tables the SQL reads (e.g. read through a view).",
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Warehouse tables outside the product's schema that the SQL may read "
        "(landed by other tools); any other table must be an asset or a warehouse table.",
    )
    checks: list[Check] = Field(default_factory=list, description="Data quality checks.")
    schedule: Schedule | None = Field(
        None, description="When to refresh; without one it refreshes when its upstreams do."
    )


class Delivery(Model):
    """Where a report goes after it is rendered."""

    channel: Channel = Field(description="`email`, `sms`, `slack` or `teams`.")
    to: list[str] | str = Field(description="Recipient(s).")
    subject: str | None = Field(None, description="Subject (email) or title (chat).")
    provider: str | None = Field(
        None, description="Provider; defaults to the channel's connection."
    )


class Report(DocumentBase):
    """A Markdown (+ PDF) report asset, delivered to stakeholders."""

    kind: Literal["report"]
    template: str = Field(description="Template file under `templates/`.")
    title: str | None = Field(None, description="Title page heading; `name` or the id if absent.")
    data: list[str] = Field(
        default_factory=list,
        description="Datasets, sync tables and metrics sets the template reads "
        "(`data.<id>` rows, `metrics.<id>` values).",
    )
    formats: list[Literal["markdown", "html", "pdf"]] = Field(
        default=["markdown"], description="Files to render."
    )
    deliver: list[Delivery] = Field(
        default_factory=list,
        description="Who receives it: email with the PDF attached, chat with a summary and path.",
    )
    schedule: Schedule | None = Field(
        None, description="When to render and deliver; without one it follows its data."
    )


class Thresholds(Model):
    """Where a metric turns into a warning or an error (an asset check with that severity)."""

    warn: float | None = Field(None, description="Warn when the value is on the wrong side of it.")
    error: float | None = Field(None, description="Fail when the value is on the wrong side of it.")


class Metric(Model):
    """One dashboard number."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Metric name.")
    sql: str = Field(description="A query returning one number.")
    target: float | None = Field(
        None, description="The value the team aims for; missing it is a warning."
    )
    thresholds: Thresholds | None = Field(None, description="Warning and error levels.")
    higher_is_better: bool = Field(
        True, description="Whether values above `target` / thresholds are good (false: below)."
    )
    description: str | None = Field(None, description="What the number means.")
    unit: str | None = Field(None, description="Unit shown beside the value, e.g. `USD`.")


class Metrics(DocumentBase):
    """Dashboard metric definitions: one asset with numeric metadata per metric."""

    kind: Literal["metrics"]
    metrics: list[Metric] = Field(min_length=1, description="The metrics.")
    deps: list[str] = Field(
        default_factory=list, description="Upstream assets beyond the tables the SQL reads."
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Warehouse tables outside the product's schema that the SQL may read.",
    )
    schedule: Schedule | None = Field(
        None, description="When to recompute; without one it follows its upstreams."
    )


class Connections(DocumentBase):
    """Which provider serves each connector, its settings, secret references and rate limits."""

    kind: Literal["connections"]
    connections: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Connector name (`warehouse`, `hubspot`, `salesforce`, `email`, `sms`, "
        "`slack`, `teams`, `vault`, `webhooks`) -> its settings.",
    )


Document = Annotated[
    Playbook | Sync | Dataset | Report | Metrics | Connections, Field(discriminator="kind")
]
KINDS = ("playbook", "sync", "dataset", "report", "metrics", "connections")
