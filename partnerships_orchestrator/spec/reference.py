"""The language reference in Markdown, generated from the pydantic models (and the helper tables).

``python -m partnerships_orchestrator.spec.reference > docs/language-reference.md`` writes it;
a test fails when the committed file and this output differ. The preface explains the semantics
no field carries (expressions, fan-out, error policy, triggers at run time); the tables that
follow are built from field info only: key (alias first), type, default, required, description.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from partnerships_orchestrator.compiler.naming import ABORT_TAG, MAX_RUNS_TAG_PREFIX
from partnerships_orchestrator.compiler.ops import DEFAULT_POLICY
from partnerships_orchestrator.compiler.triggers import WEBHOOK_SENSOR_INTERVAL
from partnerships_orchestrator.connections import ALLOW_HOSTS_ENV
from partnerships_orchestrator.connectors.outbox import (
    PERMANENT_FAILURE_DOMAIN,
    TRANSIENT_FAILURE_DOMAIN,
)
from partnerships_orchestrator.expressions import FILTERS, HELPERS
from partnerships_orchestrator.spec.models import (
    MAX_RUNS_LIMIT,
    Concurrency,
    Document,
    InputSpec,
    Model,
    OnError,
    Playbook,
)
from partnerships_orchestrator.steps.webhook import DEFAULT_TIMEOUT_SECONDS

GENERATE_COMMAND = "python -m partnerships_orchestrator.spec.reference > docs/language-reference.md"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


# ---------------------------------------------------------------- types and cells


@dataclass(frozen=True)
class TaggedUnion:
    """A discriminated union of models: ``tag`` names the key that selects the member."""

    tag: str
    members: tuple[type[BaseModel], ...]


def anchor(model: type[BaseModel]) -> str:
    """The Markdown anchor of a model's section."""
    return model.__name__.lower()


def tagged_union(annotation: Any) -> TaggedUnion | None:
    """The discriminated union inside ``annotation`` (itself, or a list of it), if any."""
    if get_origin(annotation) is list:
        return tagged_union(get_args(annotation)[0])
    if get_origin(annotation) is not Annotated:
        return None
    base, *extras = get_args(annotation)
    tag = next(
        (e.discriminator for e in extras if isinstance(e, FieldInfo) and e.discriminator), None
    )
    if not isinstance(tag, str):
        return None
    return TaggedUnion(tag, tuple(get_args(base)))


def tag_value(model: type[BaseModel], tag: str) -> str:
    """The value of ``tag`` (a one-value ``Literal`` field) that selects ``model``."""
    (value,) = get_args(model.model_fields[tag].annotation)
    return str(value)


def type_text(annotation: Any, key: str = "") -> str:
    """A reader's name for a type: `string`, `list of string`, links to nested models.

    A tagged union links to its section, whose anchor is ``key`` (the field holding it).
    """
    origin, args = get_origin(annotation), get_args(annotation)
    union = tagged_union(annotation) if origin is Annotated else None
    if union is not None:
        choices = ", ".join(f"[`{tag_value(m, union.tag)}`](#{anchor(m)})" for m in union.members)
        return f"[one of, by `{union.tag}`](#{key}): {choices}"
    if origin is Annotated:
        return type_text(args[0], key)
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a, key) for a in args if a is not type(None))
    if origin is Literal:
        values = ", ".join(f"`{v}`" for v in args)
        return values if len(args) == 1 else f"one of {values}"
    if origin is list:
        return f"list of {type_text(args[0], key)}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{anchor(annotation)})"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def constraints_text(field: FieldInfo) -> str:
    """Bounds and patterns from the field's metadata, e.g. ``>= 1, <= 10``."""
    parts: list[str] = []
    for item in field.metadata:
        for attr, label in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                parts.append(f"{label} {getattr(item, attr)}")
        if getattr(item, "min_length", None) is not None:
            parts.append(f"at least {item.min_length}")
        if getattr(item, "max_length", None) is not None:
            parts.append(f"at most {item.max_length}")
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matches `{item.pattern}`")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    return "" if value is None else f"`{json.dumps(value)}`"


def key_of(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def field_row(name: str, field: FieldInfo) -> str:
    kind = type_text(field.annotation, key_of(name, field))
    bounds = constraints_text(field)
    cells = (
        f"`{key_of(name, field)}`",
        f"{kind}, {bounds}" if bounds else kind,
        default_text(field),
        "yes" if field.is_required() else "no",
        field.description or "",
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def own_fields(model: type[BaseModel], base: type[BaseModel] | None) -> dict[str, FieldInfo]:
    """The fields of ``model`` not inherited from ``base`` (all of them when ``base`` is None)."""
    inherited = base.model_fields if base is not None else {}
    return {n: f for n, f in model.model_fields.items() if n not in inherited}


def field_table(fields: dict[str, FieldInfo]) -> list[str]:
    rows = [field_row(name, field) for name, field in fields.items()]
    return ["| key | type | default | required | description |", "|---|---|---|---|---|", *rows]


def docstring(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def _common_base(members: tuple[type[BaseModel], ...]) -> type[BaseModel] | None:
    """The most derived language model every member inherits from (not ``Model`` itself)."""
    shared = [c for c in members[0].__mro__ if all(c in m.__mro__ for m in members)]
    base = next((c for c in shared if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return None if base in (Model, BaseModel) else base


def nested_models(annotation: Any) -> Iterator[type[BaseModel] | TaggedUnion]:
    """Models and tagged unions a field's type mentions, in order."""
    union = tagged_union(annotation)
    if union is not None:
        yield union
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from nested_models(arg)


# ---------------------------------------------------------------- sections


class _Renderer:
    """Writes model sections depth first, each model once; later mentions link to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.done: set[type[BaseModel]] = set()
        self.anchors: set[str] = set()

    def heading(self, level: int, ident: str, text: str) -> None:
        assert ident not in self.anchors, f"two sections would share the anchor #{ident}"  # nosec B101 # build-time check of the generated reference
        self.anchors.add(ident)
        self.lines += ["", f'<a id="{ident}"></a>', "", f"{'#' * level} {text}", ""]

    def paragraph(self, text: str) -> None:
        if text:
            self.lines += [text, ""]

    def table(self, fields: dict[str, FieldInfo]) -> None:
        if fields:
            self.lines += [*field_table(fields), ""]
        else:
            self.paragraph("No keys of its own.")

    def model(
        self,
        model: type[BaseModel],
        level: int,
        title: str,
        base: type[BaseModel] | None = None,
        note: str = "",
    ) -> None:
        self.done.add(model)
        self.heading(level, anchor(model), title)
        self.paragraph(docstring(model))
        self.paragraph(note)
        fields = own_fields(model, base)
        self.table(fields)
        self.nested(fields, level)

    def nested(self, fields: dict[str, FieldInfo], level: int) -> None:
        for name, field in fields.items():
            for found in nested_models(field.annotation):
                if isinstance(found, TaggedUnion):
                    self.union(found, level, key_of(name, field))
                elif found not in self.done:
                    self.model(found, max(level, 3), f"`{found.__name__}`")

    def union(self, union: TaggedUnion, level: int, key: str) -> None:
        if all(m in self.done for m in union.members):
            return
        base = _common_base(union.members)
        names = ", ".join(f"`{tag_value(m, union.tag)}`" for m in union.members)
        self.heading(max(level, 3), key, f"`{key}`: one of {names}, by `{union.tag}`")
        listing = [
            f"- [`{union.tag}: {tag_value(m, union.tag)}`](#{anchor(m)}): {docstring(m)}"
            for m in union.members
        ]
        self.lines += [*listing, ""]
        sub = max(level, 3) + 1
        if base is not None and base not in self.done:
            self.model(base, sub, f"Keys every entry of `{key}` has (`{base.__name__}`)")
        for member in union.members:
            self.model(
                member,
                sub,
                f"`{union.tag}: {tag_value(member, union.tag)}`",
                base,
                f"Also takes [the keys of `{base.__name__}`](#{anchor(base)})." if base else "",
            )


def _documents(renderer: _Renderer) -> None:
    union = tagged_union(Document)
    assert union is not None  # nosec B101 # invariant for mypy: Document is a tagged union
    base = _common_base(union.members)
    assert base is not None  # nosec B101 # invariant for mypy: the kinds share a base model
    renderer.lines += ["", "## Documents", "", "| kind | what it is |", "|---|---|"]
    for member in union.members:
        kind = tag_value(member, union.tag)
        renderer.lines.append(f"| [`{kind}`](#{anchor(member)}) | {_cell(docstring(member))} |")
    renderer.lines.append("")
    renderer.model(base, 3, f"Keys every document has (`{base.__name__}`)")
    for member in union.members:
        kind_field = member.model_fields[union.tag]
        note = f"Also takes [the keys every document has](#{anchor(base)})."
        if not kind_field.is_required():
            note += f" `{union.tag}` may be omitted: it defaults to `{kind_field.default}`."
        renderer.model(member, 2, f"kind: `{tag_value(member, union.tag)}`", base, note)


# ---------------------------------------------------------------- the preface


def _signature(name: str, fn: Any) -> str:
    """``name(params) -> result`` with annotations as written (no quotes)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return f"{name}(...)"

    def ann(value: Any) -> str:
        return value if isinstance(value, str) else getattr(value, "__name__", str(value))

    params = []
    for p in sig.parameters.values():
        text = p.name if p.annotation is p.empty else f"{p.name}: {ann(p.annotation)}"
        params.append(text if p.default is p.empty else f"{text} = {p.default!r}")
    result = "" if sig.return_annotation is sig.empty else f" -> {ann(sig.return_annotation)}"
    return f"{name}({', '.join(params)}){result}"


def _summary(fn: Any) -> str:
    if getattr(fn, "__module__", None) == "builtins":
        return f"Python's built-in `{fn.__name__}`."
    doc = inspect.getdoc(fn)
    return doc.splitlines()[0] if doc else ""


def helpers_list() -> list[str]:
    """One line per helper function in ``expressions.HELPERS``."""
    lines = []
    for name, fn in HELPERS.items():
        builtin = getattr(fn, "__module__", None) == "builtins"
        shown = f"{name}(...)" if builtin else _signature(name, fn)
        summary = _summary(fn)
        lines.append(f"- `{shown}`" + (f": {summary}" if summary else ""))
    return lines


def filters_list() -> list[str]:
    """One line per filter in ``expressions.FILTERS``: the piped value, then the arguments."""
    lines = []
    for name, fn in FILTERS.items():
        params = list(inspect.signature(fn).parameters.values())[1:]
        args = ", ".join(
            p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params
        )
        shown = f"value | {name}" + (f"({args})" if args else "")
        summary = _summary(fn)
        lines.append(f"- `{shown}`" + (f": {summary}" if summary else ""))
    return lines


def _literal_values(model: type[BaseModel], name: str) -> str:
    return ", ".join(f"`{v}`" for v in get_args(model.model_fields[name].annotation))


PREFACE = """\
# Playbook language reference

> Generated from the pydantic models in `partnerships_orchestrator/spec/models.py`: regenerate
> with `{command}`; do not edit by hand (a test fails when this file and the models differ).
> For editors, `partnerships schema > partnerships.schema.json` prints the JSON Schema of every
> document; put `# yaml-language-server: $schema=./partnerships.schema.json` on a playbook's
> first line (path relative to the file).

## Expressions

Expressions use Jinja2 syntax and are evaluated in Jinja2's sandbox with strict undefined
names: an unknown name or attribute is an error, never an empty string.

- **Bare expressions**, without `{{{{ }}}}`: `when`, `for_each`, the values of `assign`, `filter`,
  `expression` and `rows` (evaluate steps), e.g. `when: steps.scored.output.fit > 0.5`.
- **Interpolation** in other strings: `{{{{ expr }}}}` (and `{{% ... %}}` statements) in query
  `params` and `filters`, template `context`, communicate `to`, `subject`, `body` and
  `attachments`, webhook `url`, `headers`, `json` and `body`. Template files and a template
  step's inline `source` are Jinja2 templates that see the same names.
- **A lone `{{{{ expr }}}}` keeps its type**: a string that is exactly one `{{{{ ... }}}}` (spaces
  around allowed) is the value itself, so `"{{{{ run.started_at - days(7) }}}}"` stays a datetime
  and `"{{{{ steps.q.rows }}}}"` stays a list. Anything else renders to text.

Names in scope:

| name | value |
|---|---|
| `inputs` | the run's inputs, converted to their types (`date` and `datetime` inputs are date and datetime values) |
| `steps.<id>.output` | the output of a step upstream of this one (direct or not); referring to a step that is not upstream is a validation error |
| `steps.<id>.rows`, `steps.<id>.count` | for query steps: the rows (a list of mappings) and their number |
| `item` | inside a fan-out: the current element; in an evaluate step's `assign` and `filter`: the current row |
| `row` | in `assign` and `filter` only: the current row (the same value as `item` there) |
| `trigger` | what started the run; see [Triggers at run time](#triggers-at-run-time) |
| `run` | `run.id`, `run.playbook` and `run.started_at` (timezone-aware, UTC) |

Helper functions:

{helpers}

Filters (besides Jinja2's built-in ones such as `length`, `default`, `join`, `map`, `sum`):

{filters}

Step outputs: `query` gives `{{rows, count}}`; `evaluate` gives the `expression`'s value, or the
rows with the `assign`ed fields added and the `filter` applied (inside a fan-out: the item with
its fields added); `template` the rendered text (for `pdf`: the written file's path);
`communicate` a list of delivery receipts (`provider`, `channel`, `to`, `message_id`, `status`);
`webhook` `{{status, json, text, headers}}` (`json` is null unless the response is JSON).

## Fan-out: map and collect

A step with `for_each` runs once per element of the list it yields (anything else fails the step
at once), with the element bound to `item`. A step that depends on a mapped step is mapped too:
it runs once per item, with the same `item`, and `steps.<id>.output` means that item's output.
This goes on until a step sets `collect: true`: it runs once, after every item, and
`steps.<id>.output` of each mapped step upstream of it is the list of the per-item outputs, in
item order, with skipped items left out (an empty list when there were no items; the collect step
still runs and sees `inputs` and the steps before the fan-out). A false `when` or a skipped
failure inside a fan-out skips just that item. The validator refuses shapes that cannot run: a
step that both fans out and collects, a fan-out inside a fan-out (collect first), `collect`
without a fan-out upstream, one step depending on two different fan-outs without collecting.

## Error policy: `on_error`

A step's `on_error` applies, else the playbook's `defaults.on_error`, else **one attempt, then the
step fails and the failure is written to the dead-letter queue** (`action: {default_action}`,
`max_attempts: {default_attempts}`). A step's `on_error` replaces the defaults as a whole (keys
are not merged); keys it leaves out take the defaults in the [`OnError`](#onerror) table.

- `retry`: becomes a Dagster `RetryPolicy` with `max_attempts - 1` retries, waiting
  `delay_seconds` grown by `backoff` and randomised by `jitter`. When attempts run out the step
  fails, the failure is dead-lettered and the run fails. Failures another attempt cannot fix
  fail at once, without retrying: expression errors, input errors, webhook destinations refused
  by the SSRF guard, and deliveries the provider refused permanently.
- `skip`: the failure is dead-lettered; the step counts as skipped (no output), so the steps that
  need it are skipped, not failed; inside a fan-out only that item is skipped; the run goes on.
- `abort`: the failure is dead-lettered, the run is tagged `{abort_tag}` and fails; steps that
  have not started yet refuse to start; steps already running finish.

A dead letter keeps the step as written, the run's inputs, the item, the trigger, the error,
the run id and the scope the step saw; `partnerships dead-letters` lists them and
`partnerships dead-letters redrive ID` runs that step again with that scope, in the same root
run (so messages already delivered are not sent again). A false `when` is a skip, never a
failure.

`timeout_seconds` (a step's own, else `defaults.timeout_seconds`) bounds each attempt: an attempt
still running after that many seconds fails with a timeout, which goes through `on_error` like
any failure. Query steps on PostgreSQL pass the remaining time to the database as a statement
timeout; webhook steps use it as the HTTP timeout ({webhook_timeout:g} s when none is set).

## Runs: concurrency and executor

`concurrency.max_runs` ({max_runs_min}..{max_runs_max}) bounds the runs of one playbook in
progress at once: its runs are tagged `{max_runs_tag}N: <playbook id>`, and the shipped
`dagster.yaml` holds one run-tag concurrency limit per N (applied per playbook id), so further runs
wait in Dagster's run queue. `executor` is one of {executors}: `in_process` (the default) runs the
steps one at a time in the run's process; `multiprocess` runs each step in its own process, so
steps with no path between them run in parallel. Both apply to runs launched through Dagster (the
UI, schedules, sensors); `partnerships run` executes the job inside the CLI's own process, outside
the run queue. A deployment can set `PARTNERSHIPS_EXECUTOR` (`in_process`, `multiprocess` or
`celery`), which then applies to every playbook whatever its `executor` says: `celery` runs each
step on `partnerships worker` processes over RabbitMQ (README, "Scale-out").

## Inputs

Input types: {input_types}. Values are converted before the run starts, and an unknown input, a
missing required one or a value that does not convert is refused, naming the input and the type
it needs. From the command line (`--input key=value`) `integer` and `number` parse the text,
`boolean` takes `true`/`false`, `yes`/`no`, `1`/`0`, `on`/`off`, `date` and `datetime` take ISO
8601 and `list` and `object` take JSON. `enum` limits the values (a drop-down in the launchpad
for `string` inputs).

## Triggers at run time

- `cron`: a Dagster schedule (on by default) in the trigger's `timezone`; `trigger` is
  `{{type: cron, scheduled_time}}`.
- `webhook`: each call received for the playbook is picked up by a sensor (every
  {sensor_interval} s) and starts one run. Keys of the JSON payload that name an input fill that
  input (converted and checked like any input; other keys are ignored); a payload whose inputs
  are refused starts no run and is dead-lettered. `trigger` is `{{type: webhook, webhook_id,
  payload, received_at}}` plus every payload key at the top level (a payload that is not an
  object is `trigger.body`).
- `dataset`: an asset sensor runs the playbook after the asset materializes; `trigger` is
  `{{type: dataset, dataset, run_id, timestamp}}`.
- `manual`: the launchpad, the API or `partnerships run`; `trigger` is `{{type: manual}}`
  (plus `via: cli` from `partnerships run`).

## Assets: sync, dataset, metrics, report

- `sync`: one asset and warehouse table `<id>_<object>` per object (HubSpot `contacts`,
  `companies`, `deals`; Salesforce `accounts`, `contacts`, `opportunities`): `id`, one typed
  column per property (Salesforce fields in snake case), `modified_at`, `is_deleted`,
  `deleted_at`, `synced_at`, `raw` (JSON); HubSpot deals also always have `stage` (`dealstage`
  with `closedwon` / `closedlost` read as `closed`) and `company_id` (the associated company's
  `id`, its primary one first). Incremental by last-modified time, rows and cursor
  committed together; deleted records marked; `full_refresh` in the launchpad config (or
  `partnerships materialize --full-refresh`). Reads the provider's connection, else the sandbox
  demo CRM. Checks `unique_id` and `required_columns`.
- `dataset`: its upstream assets are the tables its SQL reads (plus `deps`); a table that is not
  an asset, a warehouse table or in `sources` is a validation problem, as is SQL that does not
  parse or a dependency cycle. Rebuilt and swapped in one transaction. `checks` become asset
  checks; `blocking: true` stops downstream assets when the check fails with `error` severity.
- `metrics`: each value is numeric metadata of the asset and a row of `metric_history`;
  `target` warns when missed, `thresholds` warn past `warn` and fail past `error`
  (`higher_is_better: false` flips both).
- `report`: the template sees `data.<id>` rows, `metrics.<id>.<metric>` values, `report` and
  `chart(kind, rows, x, y, title)` (SVG `bar` / `line`); files under
  `<home>/artifacts/reports/<id>/<run id>/`; `deliver` sends each recipient the report at most
  once per materialization (email with the PDF attached, chat with a summary and the path).
- Without a `schedule`, datasets, metrics and reports follow their upstreams (Dagster's eager
  automation condition); with one, the job `<id>__assets` runs on it.

## The sandbox outbox

A channel with no connection configured delivers to the sandbox `outbox` (the run's log says
so); `partnerships outbox` lists what it received. Like a payment provider's test cards, two
reserved recipient domains rehearse failures: an address containing `{fail_domain}` is always
refused (a permanent failure: not retried), and one containing `{flaky_domain}` fails on its first
attempt and is delivered on the next (give the step `on_error: {{action: retry}}`). A message is
sent at most once per (run, step, item, recipient), also when the step or the run is retried.

## Webhook steps and private addresses

A webhook step's host is resolved once and every address is checked: loopback, private,
link-local, multicast, reserved, unspecified and other non-public addresses are refused unless
allowed, and the request then goes to the checked address itself (with the original `Host` header
and TLS server name), so DNS rebinding cannot redirect it. Only `http` and `https` URLs are
allowed; redirects are not followed and proxy variables are ignored. To allow internal hosts, list
host names, `host:port` or IP networks (CIDR) under `webhooks: {{allow_hosts: [...]}}` in the
`connections` map of the `kind: connections` document, or comma-separated in the environment
variable `{allow_env}`. With `sign: true` the body is signed per Standard Webhooks
(`webhook-id`, `webhook-timestamp`, `webhook-signature`); `webhook-id` is the same for every
retry of one call in one run, so receivers can deduplicate.
"""


def preface() -> str:
    return PREFACE.format(
        command=GENERATE_COMMAND,
        helpers="\n".join(helpers_list()),
        filters="\n".join(filters_list()),
        default_action=DEFAULT_POLICY.action,
        default_attempts=DEFAULT_POLICY.max_attempts,
        abort_tag=ABORT_TAG,
        webhook_timeout=DEFAULT_TIMEOUT_SECONDS,
        max_runs_min=_bound(Concurrency.model_fields["max_runs"], "ge"),
        max_runs_max=MAX_RUNS_LIMIT,
        max_runs_tag=MAX_RUNS_TAG_PREFIX,
        executors=_literal_values(Playbook, "executor"),
        input_types=_literal_values(InputSpec, "type"),
        sensor_interval=WEBHOOK_SENSOR_INTERVAL,
        fail_domain=PERMANENT_FAILURE_DOMAIN,
        flaky_domain=TRANSIENT_FAILURE_DOMAIN,
        allow_env=ALLOW_HOSTS_ENV,
    )


def _bound(field: FieldInfo, attr: str) -> Any:
    return next(getattr(m, attr) for m in field.metadata if getattr(m, attr, None) is not None)


def connector_settings() -> list[str]:
    """The settings of every connector and provider, from the resource classes themselves."""
    from partnerships_orchestrator.connections import PROVIDERS, RENAMED, SPECIAL, connector_class

    back = {python: key for key, python in RENAMED.items()}
    lines = [
        "## Connector settings",
        "",
        "What each entry of a `kind: connections` document takes. String settings may be secret "
        "references (`${env:NAME}`, `${vault:mount/path#key}`), resolved when the connection is "
        "first used and never written to run config, logs or the UI. `provider` picks the vendor "
        "where a connector has several (the first listed is the default); `outbox` keeps that "
        "channel in the sandbox. `warehouse` takes `url` (a SQLAlchemy URL; an unset "
        f"`${{env:...}}` means the embedded SQLite file) and `webhooks` takes `allow_hosts`. "
        f"Special entries: {', '.join(f'`{k}`' for k in SPECIAL)}.",
        "",
    ]
    from partnerships_orchestrator.connectors.ratelimit import RateLimitConfig

    lines += [f"### `{RateLimitConfig.__name__}`", "", docstring(RateLimitConfig), ""]
    lines += field_table(dict(RateLimitConfig.model_fields)) + [""]
    for connector, providers in PROVIDERS.items():
        for provider, target in providers.items():
            if not target:
                continue
            cls = connector_class(connector, provider)
            fields = {back.get(n, n): f for n, f in cls.model_fields.items()}
            lines += [f"### `{connector}` with provider `{provider}`", "", docstring(cls), ""]
            lines += field_table(fields) + [""]
    return lines


def render_reference() -> str:
    """The whole reference: the preface, then one section per kind and one table per model."""
    renderer = _Renderer()
    _documents(renderer)
    body = "\n".join(renderer.lines).strip("\n")
    assert OnError in renderer.done  # nosec B101 # build-time check: the preface links to its table
    connectors = "\n".join(connector_settings()).strip("\n")
    return preface().rstrip("\n") + "\n\n" + body + "\n\n" + connectors + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
