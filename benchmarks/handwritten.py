"""The baseline: the generated playbooks' graph written by hand with plain Dagster `@op` / `@job`.

``make_job(n)`` builds the job a Dagster user would write for playbook ``n`` of
``generate.py``, without the product: the same nodes and edges as the compiled job (the ten step
ops plus the op that fans out, as the compiler builds it), a ``DynamicOut`` fan-out mapped over
three ops and collected, a typed job config (the playbook's five inputs, through a
``ConfigMapping``), a retry policy, tags and descriptions. The ops do trivial work (small
integers through the graph, as the ``--trivial`` playbooks do), so a run of this job is what
Dagster itself costs for this graph.

Op names are namespaced by job, as the product does, so N of these jobs fit in one code location.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

INPUTS = {
    "since_days": dg.Field(dg.Int, default_value=7, description="Look-back window in days."),
    "batch": dg.Field(dg.Int, default_value=3, description="Partners per run."),
    "min_fit": dg.Field(dg.Int, default_value=40, description="Fit score that earns the email."),
    "push_to_crm": dg.Field(dg.Bool, default_value=False, description="Also push to the CRM."),
}


def make_job(n: int, *, prefix: str = "hand") -> dg.JobDefinition:
    """The hand-written job for playbook ``n`` (named ``<prefix>_<n>_partner_review``)."""
    job = f"{prefix}_{n:04d}_partner_review"
    region = dg.Enum(f"{job}__region", [dg.EnumValue(r) for r in ("AMER", "EMEA", "APAC")])
    schema = {**INPUTS, "region": dg.Field(region, default_value="AMER")}

    def name(step: str) -> str:
        return f"{job}__{step}"

    @dg.op(name=name("partners"), description="query partners", config_schema={"batch": int},
           tags={"kind": "query"})
    def partners(context: dg.OpExecutionContext) -> dict[str, Any]:
        return {"rows": list(range(context.op_config["batch"])), "n": n}

    @dg.op(name=name("deals"), description="query deals", tags={"kind": "query"})
    def deals() -> dict[str, Any]:
        return {"amount": 1}

    @dg.op(name=name("scored__items"), description="fan-out of `scored`",
           out={"items": dg.DynamicOut(dg.Any), "base": dg.Out(dg.Any)}, tags={"kind": "for_each"})
    def scored_items(after_partners: dict[str, Any]) -> Iterator[Any]:
        for index, item in enumerate(after_partners["rows"]):
            yield dg.DynamicOutput(item, output_name="items", mapping_key=str(index))
        yield dg.Output(after_partners, output_name="base")

    @dg.op(name=name("scored"), description="score one partner", tags={"kind": "evaluate"})
    def scored(after_item: int) -> int:
        return after_item + 1

    @dg.op(name=name("message"), description="render the welcome", tags={"kind": "template"})
    def message(after_scored: int) -> int:
        return after_scored * 2

    @dg.op(name=name("send"), description="send the welcome (when fit)", config_schema={"min_fit": int},
           out=dg.Out(dg.Any, is_required=False), tags={"kind": "communicate"})
    def send(context: dg.OpExecutionContext, after_message: int) -> Iterator[dg.Output]:
        if after_message >= 0 or context.op_config["min_fit"] < 0:
            yield dg.Output(after_message + 1)

    @dg.op(name=name("summary"), description="collect the fan-out", tags={"kind": "evaluate"})
    def summary(after_scored: list[int], after_send: list[int], after_scored_base: dict[str, Any],
                after_message: list[int]) -> int:
        return sum(after_send)

    @dg.op(name=name("pipeline"), description="sum the pipeline", tags={"kind": "evaluate"})
    def pipeline(after_deals: dict[str, Any]) -> int:
        return after_deals["amount"]

    @dg.op(name=name("digest"), description="render the digest", tags={"kind": "template"})
    def digest(after_summary: int, after_pipeline: int) -> int:
        return after_summary + after_pipeline

    @dg.op(name=name("notify"), description="post the digest", tags={"kind": "communicate"},
           retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL,
                                       jitter=dg.Jitter.FULL))
    def notify(after_digest: int) -> int:
        return after_digest

    @dg.op(name=name("crm_sync"), description="push to the CRM (when asked)",
           config_schema={"push_to_crm": bool}, out=dg.Out(dg.Any, is_required=False),
           tags={"kind": "webhook"})
    def crm_sync(context: dg.OpExecutionContext, after_summary: int) -> Iterator[dg.Output]:
        if context.op_config["push_to_crm"]:
            yield dg.Output(after_summary)

    def to_ops(config: dict[str, Any]) -> dict[str, Any]:
        return {"ops": {name("partners"): {"config": {"batch": config["batch"]}},
                        name("send"): {"config": {"min_fit": config["min_fit"]}},
                        name("crm_sync"): {"config": {"push_to_crm": config["push_to_crm"]}}}}

    @dg.job(
        name=job,
        description=f"Partner review {n}: hand-written",
        tags={"domain": "generated", "team": "partner-ops"},
        config=dg.ConfigMapping(config_schema=schema, config_fn=to_ops),
        executor_def=dg.in_process_executor,
        op_retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    )
    def the_job() -> None:
        items, base = scored_items(partners())
        per_item = items.map(lambda item: _per_item(scored, message, send, item))
        scored_h, message_h, send_h = per_item
        total = summary(scored_h.collect(), send_h.collect(), base, message_h.collect())
        notify(digest(total, pipeline(deals())))
        crm_sync(total)

    return the_job


def _per_item(scored: Any, message: Any, send: Any, item: Any) -> tuple[Any, Any, Any]:
    s = scored(item)
    m = message(s)
    return s, m, send(m)


def definitions(count: int) -> dg.Definitions:
    """All ``count`` jobs, defined eagerly, as an ordinary code location would."""
    return dg.Definitions(jobs=[make_job(n) for n in range(count)])
