"""A bulk e-mail campaign through a playbook, beside the connector alone: how close to the
connection's ceiling does a playbook send?

    .venv/bin/python benchmarks/campaign.py                       # 10,000 recipients at 100/s and 1,000/s
    .venv/bin/python benchmarks/campaign.py --recipients 2000 --rates 1000   # a quicker look

For each ceiling R (requests per second), with the SendGrid emulator served on loopback in this
process and limited server-side to R requests per 1 s (so a request over the ceiling is answered
429), and the client's ``rate_limit`` set to R (burst 1):

* connector alone: ``SendGridEmail.send`` once per recipient, 8 threads sharing one resource
  (one connection, one limiter), the same personalised messages: what the connector can do (as
  in ``connectors.py``);
* playbook, one message each: a playbook ``evaluate`` (N items) -> ``communicate`` with
  ``for_each`` (subject and body personalised per item, so every message is its own request) ->
  a ``collect: true`` step, compiled by ``build_job`` and run with ``execute_in_process`` on an
  ephemeral instance, the product's ledger in a fresh SQLite state database. Timed from the start
  of the run to its end (job start, ledger and collect included);
* playbook, shared content: the same with one subject and body for everyone, so the provider's
  batch API carries up to 1,000 recipients per request.

"x ceiling" is messages per second over R: for the two one-request-per-message rows that is the
fraction of the connection's ceiling reached (target >= 0.8 for the playbook); "x connector" is
the playbook's messages per second over the connector alone's, at the same R. For the shared
content row, R requests/s would carry R x 1,000 messages/s, so its x ceiling is not comparable:
its msg/s and requests say what batching buys. "cpu ms/msg" is this process's CPU time per
message (the emulator's share included): on a busy machine it says more than the seconds do.
"verified" reads the emulator: every recipient delivered exactly once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # partnerships_orchestrator_tests is not installed
sys.path.insert(0, str(BENCH_DIR))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402
from connectors import email_messages, once_each, sendgrid, start, timed_pool  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402
from run_overhead import stderr_to  # noqa: E402

from partnerships_orchestrator.compiler.job import build_job  # noqa: E402
from partnerships_orchestrator.connections import build_resources  # noqa: E402
from partnerships_orchestrator.settings import Settings  # noqa: E402
from partnerships_orchestrator.spec.models import Connections, Playbook  # noqa: E402
from partnerships_orchestrator_tests.emulators import sendgrid as sg_emu  # noqa: E402

PLAYBOOK = """
id: campaign
inputs: {n: {type: integer, default: 10}}
steps:
  - {id: partners, type: evaluate, expression: "range(inputs.n) | list"}
  - id: invite
    type: communicate
    depends_on: [partners]
    for_each: steps.partners.output
    channel: email
    to: "partner{{ '%05d' % item }}@example.com"
    subject: SUBJECT
    body: BODY
  - id: invited
    type: evaluate
    depends_on: [invite]
    collect: true
    expression: "steps.invite.output | length"
"""
PERSONAL = (
    '"Partner summit: your seat, partner {{ item }}"',
    '"Dear partner {{ item }},\\n\\nyour seat at the **partner summit** is reserved."',
)
SHARED = (
    '"Partner summit: your seat"',
    '"Dear partner,\\n\\nyour seat at the **partner summit** is reserved."',
)


@dataclass
class Row:
    name: str
    recipients: int
    requests: int
    server_429: int
    seconds: float
    rate: int
    comparable: bool
    verified: str
    problems: list[str]
    cpu: float = 0.0  # process CPU seconds (the emulator's included: it runs in this process)

    @property
    def per_second(self) -> float:
        return self.recipients / self.seconds if self.seconds else 0.0


def connector_alone(recipients: int, rate: int) -> Row:
    emulator = sg_emu.SendGridEmulator()
    tap, server = start(emulator, "/v3/mail/send")
    # the same messages the playbook sends: subject and body personalised, one request each
    messages = [
        replace(
            m,
            subject=f"Partner summit: your seat, partner {i}",
            body=f"Dear partner {i},\n\nyour seat at the **partner summit** is reserved.",
        )
        for i, m in enumerate(email_messages(recipients))
    ]
    with server:
        emulator.configure(limit=rate, window=1.0)
        email = sendgrid(emulator, rate)
        email.http()  # built (secret resolved) before the clock starts
        cpu = time.process_time()
        outcomes, seconds = timed_pool(email.send, messages, 8)
        cpu = time.process_time() - cpu
        verified, problems = once_each(
            emulator.delivered_counts(), [m.to for m in messages], "recipients"
        )
        email.close()
    statuses = tap.statuses()
    return Row(
        "connector alone: send, 8 threads",
        recipients,
        sum(statuses.values()),
        statuses.get(429, 0),
        seconds,
        rate,
        True,
        verified,
        problems,
        cpu,
    )


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def playbook_run(
    recipients: int, rate: int, content: tuple[str, str], name: str, root: Path
) -> Row:
    emulator = sg_emu.SendGridEmulator()
    tap, server = start(emulator, "/v3/mail/send")
    home = root / f"home-{name.replace(' ', '-').replace(',', '')}-{rate}"
    settings = Settings(playbooks_dir=root, templates_dir=root, home=home)
    text = PLAYBOOK.replace("SUBJECT", content[0]).replace("BODY", content[1])
    playbook = TypeAdapter(Playbook).validate_python(yaml.safe_load(text))
    connections = Connections(
        kind="connections",
        id="default",
        connections={
            "email": {
                "provider": "sendgrid",
                "api_key": "${env:CAMPAIGN_SENDGRID_KEY}",
                "from": "partners@example.org",
                "base_url": "",
                "rate_limit": {"requests": rate, "per_seconds": 1, "burst": 1},
                "timeout_seconds": 30.0,
                "backoff_seconds": 0.05,
                "backoff_max_seconds": 1.0,
            }
        },
    )
    with server, environment("CAMPAIGN_SENDGRID_KEY", sg_emu.API_KEY):
        emulator.configure(limit=rate, window=1.0)
        connections.connections["email"]["base_url"] = emulator.base_url
        job = build_job(playbook, build_resources(settings, connections))
        with dg.DagsterInstance.ephemeral() as instance, stderr_to(root / "dagster-console.log"):
            started, cpu = time.perf_counter(), time.process_time()
            result = job.execute_in_process(
                run_config={"n": recipients}, instance=instance, raise_on_error=False
            )
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        expected = [f"partner{i:05d}@example.com" for i in range(recipients)]
        verified, problems = once_each(emulator.delivered_counts(), expected, "recipients")
        if not result.success:
            problems.append("the run failed")
    statuses = tap.statuses()
    return Row(
        name,
        recipients,
        sum(statuses.values()),
        statuses.get(429, 0),
        seconds,
        rate,
        content is PERSONAL,
        verified,
        problems,
        cpu,
    )


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    alone = {r.rate: r.per_second for r in rows if r.name.startswith("connector")}
    print(
        f"{'':{width}} {'recipients':>10} {'requests':>8} {'429 srv':>7} {'seconds':>8} "
        f"{'msg/s':>8} {'ceiling':>8} {'x ceiling':>9} {'x connector':>11} {'cpu ms/msg':>10}  "
        "verified"
    )
    for r in rows:
        fraction = f"{r.per_second / r.rate:9.2f}" if r.comparable else f"{'(batch)':>9}"
        versus = (
            f"{r.per_second / alone[r.rate]:11.2f}"
            if r.comparable and alone.get(r.rate) and not r.name.startswith("connector")
            else f"{'':11}"
        )
        print(
            f"{r.name:{width}} {r.recipients:10,d} {r.requests:8,d} {r.server_429:7d} "
            f"{r.seconds:8.2f} {r.per_second:8.1f} {f'{r.rate}/s':>8} {fraction} {versus} "
            f"{r.cpu * 1000 / r.recipients:10.2f}  {r.verified}"
        )
    for r in rows:
        for problem in r.problems:
            print(f"  ! {r.name} at {r.rate}/s: {problem}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rates", default="100,1000", help="ceilings, requests per second")
    parser.add_argument("--no-connector", action="store_true", help="skip the connector rows")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    print(
        f"{args.recipients:,} recipients; ceilings {rates} requests/s; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="campaign-") as tmp:
        root = Path(tmp)
        for rate in rates:
            if not args.no_connector:
                rows.append(connector_alone(args.recipients, rate))
            rows.append(
                playbook_run(args.recipients, rate, PERSONAL, "playbook, one message each", root)
            )
            rows.append(
                playbook_run(args.recipients, rate, SHARED, "playbook, shared content", root)
            )
    print()
    print_table(rows)
    print(
        f"\nload average {os.getloadavg()[0]:.2f} at the end; "
        f"{time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
