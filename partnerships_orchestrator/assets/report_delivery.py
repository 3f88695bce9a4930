"""A rendered report delivered to its `deliver` targets, at most once per materialization and
recipient, through the same delivery service as the `communicate` step (``dispatch.py``).

Email carries the PDF (or the HTML, else the Markdown) as an attachment and a short summary as
its body; Slack, Teams and SMS get the summary and the file's path. The ledger key is (root run,
`deliver:<channel>`, recipient): re-executing the run, or retrying the asset, sends nothing twice.
A delivery that fails fails the materialization, naming the recipients.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from partnerships_orchestrator.assets.report import RenderedReport, title_of
from partnerships_orchestrator.connectors.channel import Message
from partnerships_orchestrator.dispatch import Delivery, Dispatcher, DispatchRun
from partnerships_orchestrator.spec.models import Report
from partnerships_orchestrator.store.state import DeliveryKey, StateStore

SUMMARY_LINES = 12


def summary(report: Report, rendered: RenderedReport) -> str:
    """The first lines of the report's text (headings and paragraphs, no charts or tables)."""
    lines = []
    for line in rendered.markdown.splitlines():
        text = line.strip()
        if not text or text.startswith(("<", "|")):
            continue
        lines.append(text)
        if len(lines) >= SUMMARY_LINES:
            break
    return "\n".join(lines)


def _attachment(rendered: RenderedReport) -> str | None:
    for fmt in ("pdf", "html", "markdown"):
        if fmt in rendered.files:
            return str(rendered.files[fmt])
    return None


def messages(report: Report, rendered: RenderedReport, run_id: str) -> list[tuple[str, Message]]:
    """(channel, message) per recipient of every `deliver` entry."""
    attachment = _attachment(rendered)
    text = summary(report, rendered)
    out: list[tuple[str, Message]] = []
    for target in report.deliver:
        recipients = [target.to] if isinstance(target.to, str) else list(target.to)
        subject = target.subject or title_of(report)
        if target.channel == "email":
            body = f"{text}\n\nThe full report is attached."
            attachments: tuple[str, ...] = (attachment,) if attachment else ()
        else:
            body = f"*{subject}*\n\n{text}\n\nFull report: {attachment or 'not rendered'}"
            attachments = ()
        for recipient in recipients:
            out.append(
                (
                    target.channel,
                    Message(
                        channel=target.channel,
                        to=recipient,
                        body=body,
                        subject=subject,
                        attachments=attachments,
                        run_id=run_id,
                        step="deliver",
                        playbook=report.id,
                    ),
                )
            )
    return out


def deliver_report(
    report: Report,
    rendered: RenderedReport,
    *,
    resources: Any,
    state: StateStore,
    run_id: str,
    root_run_id: str,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Send the report to every recipient once; return the receipts."""
    run = DispatchRun(run_id=run_id, root_run_id=root_run_id, playbook=report.id)
    receipts: list[dict[str, Any]] = []
    failures: list[str] = []
    for channel, message in messages(report, rendered, run_id):
        step = f"deliver:{channel}"
        key = DeliveryKey(root_run_id, step, "", message.to)
        keyed = Message(
            **{
                **message.__dict__,
                "idempotency_key": f"{root_run_id}:{step}:{message.to}",
            }
        )
        provider = getattr(resources, channel)
        dispatcher = Dispatcher(state, provider, run, channel=channel, log=log)
        (outcome,) = dispatcher.deliver([Delivery(key, keyed, step)])
        receipts.append(outcome.receipt)
        if outcome.failed:
            failures.append(f"{channel} {message.to}: {outcome.error}")
    if failures:
        raise dg.Failure(
            f"report `{report.id}` was rendered but not delivered to: " + "; ".join(failures),
            metadata={"receipts": dg.MetadataValue.json(receipts)},
        )
    return receipts
