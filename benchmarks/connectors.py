"""Connector throughput against rate-limited vendor emulators: does the client reach its ceiling
without ever drawing a 429?

    .venv/bin/python benchmarks/connectors.py            # 2,000 e-mails, 500 SMS, 20,000 records
    .venv/bin/python benchmarks/connectors.py --quick    # 300 / 100 / 3,000 (~15 s)

Each vendor emulator (``partnerships_orchestrator_tests.emulators``) is served on loopback, in
this process, with a server-side limit equal to the client's configured ceiling, so any request
over the ceiling is answered 429 and "0 429s" means the client held its ceiling:

* e-mail: ``SendGridEmail.send``, one recipient per request, ``--workers`` threads sharing one
  resource (one connection, one limiter); SendGrid emulator limited to R requests per 1 s
  (fixed windows, with its ``X-RateLimit-*`` headers). Twice: with the emulator's answers as
  served, and with the tap correcting its ``X-RateLimit-Reset``, which is one second late (see
  ``Tap._fixed``). Then ``send_batch`` for the same messages on a fresh emulator (what batching
  costs instead);
* SMS: ``TwilioSMS.send``, same threads; Twilio emulator limited to R creates per 1 s (429 code
  20429, no rate-limit headers, as Twilio);
* HubSpot: ``HubSpotCRM.list_objects("contacts")`` over seeded records, 100 per page (one cursor,
  so one thread); emulator at HubSpot's documented 100 requests per 10 s (fixed 10 s windows,
  ``X-HubSpot-RateLimit-*`` headers), the client configured the same;
* Salesforce: ``SalesforceCRM.soql`` over seeded Accounts, 200 per batch. Salesforce has no
  per-second limit and neither has its emulator, so this script puts a gate in front of the
  query paths (R per 1 s, 429 with ``Retry-After``) and the client is configured to R/s.

Every response status is counted by a tap in front of each emulator ("429 srv"); the client's
own count is ``client.stats.rate_limited`` ("429 cli"). "x ceiling" is successful requests per
second over the configured ceiling, from the first request to the last answer; "max/window" is
the most successful requests the server saw in one of its windows. "verified" checks what the
emulator holds: every recipient delivered exactly once, every record read exactly once (by id).

The machine is shared and the emulators run in this process (same GIL as the clients): figures
are noisy; the 429 counts and verifications are not.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # partnerships_orchestrator_tests is not installed

from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from partnerships_orchestrator.connectors.channel import Message as OutMessage  # noqa: E402
from partnerships_orchestrator.connectors.hubspot import HubSpotCRM  # noqa: E402
from partnerships_orchestrator.connectors.salesforce import SalesforceCRM  # noqa: E402
from partnerships_orchestrator.connectors.sendgrid import SendGridEmail  # noqa: E402
from partnerships_orchestrator.connectors.twilio import TwilioSMS  # noqa: E402
from partnerships_orchestrator_tests.emulators import hubspot as hs_emu  # noqa: E402
from partnerships_orchestrator_tests.emulators import salesforce as sf_emu  # noqa: E402
from partnerships_orchestrator_tests.emulators import sendgrid as sg_emu  # noqa: E402
from partnerships_orchestrator_tests.emulators import twilio as tw_emu  # noqa: E402
from partnerships_orchestrator_tests.emulators.core import (  # noqa: E402
    Clock,
    Emulator,
    RateLimiter,
    RunningServer,
    serve,
)

SUBJECT = "Your Q3 partner report"
BODY = "Hello,\n\nyour **Q3 partner report** is ready in the portal.\n\n- the Partnerships team"


# --------------------------------------------------------------------------- server-side tap


@dataclass
class Tap:
    """ASGI wrapper in front of an emulator: the status of every vendor request under
    ``prefix`` and when it arrived (emulator clock = wall clock); optionally a ``gate``
    answering 429 past its limit (for vendors whose emulator has no per-second limit)."""

    app: ASGIApp
    prefix: str
    gate: RateLimiter | None = None
    fix_reset: bool = False
    seen: list[tuple[float, int]] = field(default_factory=list)
    resets_fixed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        if self.gate is not None:
            decision = self.gate.hit()
            if not decision.allowed:
                self._record(arrived, 429)
                await _answer_429(send, decision.retry_after)
                return

        async def tapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._record(arrived, message["status"])
                if self.fix_reset:
                    message = {**message, "headers": self._fixed(message["headers"], arrived)}
            await send(message)

        await self.app(scope, receive, tapped)

    def _fixed(self, headers: list[tuple[bytes, bytes]], arrived: float) -> list[Any]:
        """SendGrid emulator, 1 s windows: its ``X-RateLimit-Reset`` is ``ceil(now2 +
        reset_after)`` with ``now2`` read after the limiter's ``now``, i.e. one second past the
        end of the window the request was counted in. Put the window's end back."""
        out = []
        for name, value in headers:
            if name.lower() == b"x-ratelimit-reset" and int(value) - 1 > arrived:
                value = str(int(value) - 1).encode()
                self.resets_fixed += 1
            out.append((name, value))
        return out

    def _record(self, arrived: float, status: int) -> None:
        with self._lock:
            self.seen.append((arrived, status))

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()
        if self.gate is not None:
            self.gate.reset()

    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(status for _, status in self.seen)

    def max_per_window(self, window: float) -> int:
        """Most successful requests arriving in one clock-aligned window (as the emulators count)."""
        with self._lock:
            ok = [at for at, status in self.seen if status < 400]
        return max(Counter(math.floor(at / window) for at in ok).values(), default=0)


async def _answer_429(send: Send, retry_after: float) -> None:
    body = b'[{"message": "rate limit (benchmark gate)", "errorCode": "REQUEST_LIMIT"}]'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", f"{max(retry_after, 0.001):.3f}".encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def start(
    emulator: Emulator[Any], prefix: str, gate: RateLimiter | None = None, fix_reset: bool = False
) -> tuple[Tap, RunningServer]:
    tap = Tap(emulator.app(), prefix, gate, fix_reset)
    server = serve(tap)
    emulator.base_url = server.url
    return tap, server


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    name: str
    requests: int  # as the server counted them (every status)
    server_429: int
    client_429: int
    seconds: float
    ok_requests: int
    ceiling: float  # requests per second
    ceiling_text: str
    window: float
    window_limit: int
    max_window: int
    verified: str
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok_requests / self.seconds if self.seconds else 0.0

    @property
    def fraction(self) -> float:
        return self.rate / self.ceiling


def row_from(
    name: str,
    tap: Tap,
    stats: dict[str, float],
    seconds: float,
    ceiling: tuple[int, float],
    verified: str,
    problems: list[str],
) -> Row:
    statuses = tap.statuses()
    requests, per = ceiling
    ok = sum(n for status, n in statuses.items() if status < 400)
    others = {s: n for s, n in statuses.items() if s >= 400 and s != 429}
    if others:
        problems.append(f"other errors from the server: {dict(sorted(others.items()))}")
    if stats["failures"]:
        problems.append(f"{int(stats['failures'])} calls failed after retries")
    return Row(
        name=name,
        requests=sum(statuses.values()),
        server_429=statuses.get(429, 0),
        client_429=int(stats["rate_limited"]),
        seconds=seconds,
        ok_requests=ok,
        ceiling=requests / per,
        ceiling_text=f"{requests}/{per:g}s",
        window=per,
        window_limit=requests,
        max_window=tap.max_per_window(per),
        verified=verified,
        problems=problems,
    )


def print_table(rows: Sequence[Row]) -> None:
    width = max(len(r.name) for r in rows)
    head = (
        f"{'':{width}} {'requests':>8} {'429 srv':>7} {'429 cli':>7} {'seconds':>7} {'req/s':>7} "
        f"{'ceiling':>9} {'x ceiling':>9} {'max/window':>10}  verified"
    )
    print(head)
    for r in rows:
        print(
            f"{r.name:{width}} {r.requests:8d} {r.server_429:7d} {r.client_429:7d} {r.seconds:7.2f} "
            f"{r.rate:7.2f} {r.ceiling_text:>9} {r.fraction:9.2f} "
            f"{f'{r.max_window}/{r.window_limit}':>10}  {r.verified}"
        )
    for r in rows:
        for problem in r.problems:
            print(f"  ! {r.name}: {problem}")


def timed_pool(
    work: Callable[[Any], Any], items: Sequence[Any], workers: int
) -> tuple[list[Any], float]:
    """Outcomes of ``work`` over ``items`` on ``workers`` threads (exceptions kept), seconds."""

    def guarded(item: Any) -> Any:
        try:
            return work(item)
        except Exception as exc:  # noqa: BLE001 - counted and shown, never hidden
            return exc

    started = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="bench-send") as pool:
        outcomes = list(pool.map(guarded, items))
    return outcomes, time.perf_counter() - started


def failures(outcomes: Sequence[Any]) -> list[str]:
    errors = Counter(f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, Exception))
    return [f"{n} x {text[:160]}" for text, n in errors.most_common(3)]


def once_each(counts: dict[str, int], expected: Sequence[str], noun: str) -> tuple[str, list[str]]:
    """'N <noun>, each once' or what is wrong."""
    problems = []
    missing = [a for a in expected if counts.get(a, 0) == 0]
    twice = [a for a, n in counts.items() if n > 1]
    extra = set(counts) - set(expected)
    if missing:
        problems.append(f"{len(missing)} {noun} never delivered (e.g. {missing[0]})")
    if twice:
        problems.append(f"{len(twice)} {noun} delivered more than once (e.g. {twice[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected {noun}")
    text = f"{len(expected):,} {noun}, each once" if not problems else "NO (see below)"
    return text, problems


def read_once(ids: Sequence[str], seeded: Sequence[str], noun: str) -> tuple[str, list[str]]:
    problems = []
    if len(ids) != len(set(ids)):
        problems.append(f"{len(ids) - len(set(ids))} {noun} read more than once")
    if set(ids) != set(seeded):
        problems.append(
            f"{len(set(seeded) - set(ids))} {noun} missing, {len(set(ids) - set(seeded))} unknown"
        )
    text = f"{len(seeded):,} {noun}, each once" if not problems else "NO (see below)"
    return text, problems


# --------------------------------------------------------------------------- the runs


def rate_limit(requests: int, per: float) -> dict[str, Any]:
    return {"requests": requests, "per_seconds": per, "burst": 1}


COMMON = {"timeout_seconds": 10.0, "backoff_seconds": 0.05, "backoff_max_seconds": 1.0}


def email_messages(count: int) -> list[OutMessage]:
    return [
        OutMessage("email", f"partner{i:05d}@example.com", BODY, SUBJECT, idempotency_key=f"k{i}")
        for i in range(count)
    ]


def sendgrid(emulator: sg_emu.SendGridEmulator, rate: int) -> SendGridEmail:
    return SendGridEmail(
        api_key=sg_emu.API_KEY,
        sender="partners@example.com",
        base_url=emulator.base_url,
        rate_limit=rate_limit(rate, 1.0),
        **COMMON,
    )


def bench_email(count: int, rate: int, workers: int, fix_reset: bool) -> Row:
    """Per-recipient sends, ``workers`` threads on one resource (one limiter)."""
    emulator = sg_emu.SendGridEmulator()
    tap, server = start(emulator, "/v3/mail/send", fix_reset=fix_reset)
    messages = email_messages(count)
    with server:
        emulator.configure(limit=rate, window=1.0)
        email = sendgrid(emulator, rate)
        client = email.http()  # built (secret resolved) before the clock starts
        outcomes, seconds = timed_pool(email.send, messages, workers)
        counts = emulator.delivered_counts()
        verified, problems = once_each(counts, [m.to for m in messages], "recipients")
        problems += failures(outcomes)
        ids = [o.message_id for o in outcomes if not isinstance(o, Exception)]
        if len(set(ids)) != len(ids):
            problems.append("message ids repeat across receipts")
        how = "Reset corrected" if fix_reset else "as served"
        row = row_from(
            f"email: send x{count:,}, {workers} thr, {how}",
            tap,
            client.stats.as_dict(),
            seconds,
            (rate, 1.0),
            verified,
            problems,
        )
        email.close()
    return row


def bench_email_batch(count: int, rate: int) -> str:
    """The same messages through ``send_batch`` (one thread, fresh emulator and connection)."""
    emulator = sg_emu.SendGridEmulator()
    tap, server = start(emulator, "/v3/mail/send")
    messages = email_messages(count)
    with server:
        emulator.configure(limit=rate, window=1.0)
        email = sendgrid(emulator, rate)
        client = email.http()
        started = time.perf_counter()
        results = email.send_batch(messages)
        seconds = time.perf_counter() - started
        counts = emulator.delivered_counts()
        verified, problems = once_each(counts, [m.to for m in messages], "recipients")
        refused = [r for r in results if isinstance(r, Exception)]
        statuses = tap.statuses()
        stats = client.stats.as_dict()
        email.close()
    line = (
        f"email: send_batch of the same {count:,}: {sum(statuses.values())} requests "
        f"(statuses {dict(sorted(statuses.items()))}), {seconds:.2f} s, "
        f"{count / seconds:,.0f} recipients/s, 429s {statuses.get(429, 0)} srv / "
        f"{int(stats['rate_limited'])} cli, {len(refused)} refused; {verified}"
    )
    return "; ".join([line, *problems])


def bench_sms(count: int, rate: int, workers: int) -> Row:
    emulator = tw_emu.TwilioEmulator()
    tap, server = start(emulator, f"/{tw_emu.API_VERSION}/Accounts/")
    numbers = [f"+1555{i:07d}" for i in range(count)]
    messages = [OutMessage("sms", n, "Your Q3 partner report is ready.") for n in numbers]
    with server:
        emulator.configure(limit=rate, window=1.0)
        sms = TwilioSMS(
            account_sid=tw_emu.ACCOUNT_SID,
            auth_token=tw_emu.AUTH_TOKEN,
            sender=tw_emu.FROM_NUMBER,
            base_url=emulator.base_url,
            rate_limit=rate_limit(rate, 1.0),
            **COMMON,
        )
        client = sms.http()
        outcomes, seconds = timed_pool(sms.send, messages, workers)
        verified, problems = once_each(emulator.delivered_counts(), numbers, "numbers")
        problems += failures(outcomes)
        row = row_from(
            f"sms: send x{count:,}, {workers} threads",
            tap,
            client.stats.as_dict(),
            seconds,
            (rate, 1.0),
            verified,
            problems,
        )
        sms.close()
    return row


def bench_hubspot(records: int, limit: int, window: float) -> Row:
    emulator = hs_emu.HubSpotEmulator()
    tap, server = start(emulator, "/crm/")
    with server:
        emulator.configure(ten_secondly_limit=limit, window_seconds=window)
        seeded = emulator.seed("contacts", records)
        crm = HubSpotCRM(
            token=emulator.issue_private_token(),
            base_url=emulator.base_url,
            rate_limit={"requests": limit, "per_seconds": window},
            **COMMON,
        )
        client = crm.http()
        problems: list[str] = []
        ids: list[str] = []
        started = time.perf_counter()
        try:
            ids = [str(r["id"]) for r in crm.list_objects("contacts")]
        except Exception as exc:  # noqa: BLE001 - shown in the table
            problems.append(f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        verified, more = read_once(ids, seeded, "records")
        row = row_from(
            f"hubspot: list_objects {records:,}",
            tap,
            client.stats.as_dict(),
            seconds,
            (limit, window),
            verified,
            problems + more,
        )
        crm.close()
    return row


def bench_salesforce(records: int, rate: int) -> Row:
    emulator = sf_emu.SalesforceEmulator()
    gate = RateLimiter(rate, 1.0, Clock())
    tap, server = start(emulator, "/services/data/", gate)
    with server:
        seeded = emulator.seed("Account", records)
        crm = SalesforceCRM(
            login_url=emulator.base_url,
            client_id="sf-client-1",
            client_secret="sf-client-secret-1",
            refresh_token=emulator.issue_refresh_token(),
            query_batch_size=200,
            rate_limit={"requests": rate, "per_seconds": 1.0},
            **COMMON,
        )
        client = crm.http()
        problems: list[str] = []
        ids: list[str] = []
        started = time.perf_counter()  # includes the login (not rate limited, not counted)
        try:
            ids = [str(r["Id"]) for r in crm.soql("SELECT Id, Name FROM Account")]
        except Exception as exc:  # noqa: BLE001 - shown in the table
            problems.append(f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        verified, more = read_once(ids, seeded, "records")
        row = row_from(
            f"salesforce: soql {records:,} (gate)",
            tap,
            client.stats.as_dict(),
            seconds,
            (rate, 1.0),
            verified,
            problems + more,
        )
        crm.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 e-mails, 100 SMS, 3,000 records")
    parser.add_argument("--emails", type=int, help="e-mails to send (default 2,000)")
    parser.add_argument("--sms", type=int, help="SMS to send (default 500)")
    parser.add_argument("--records", type=int, help="CRM records to read (default 20,000)")
    parser.add_argument("--email-rate", type=int, default=100, help="requests/s (default 100)")
    parser.add_argument("--sms-rate", type=int, default=25, help="requests/s (default 25)")
    parser.add_argument(
        "--hubspot-window", type=float, default=10.0, help="s per 100 requests (default 10)"
    )
    parser.add_argument("--salesforce-rate", type=int, default=25, help="requests/s (default 25)")
    parser.add_argument("--no-salesforce", action="store_true", help="skip the SOQL row")
    parser.add_argument("--workers", type=int, default=4, help="threads for the sends (default 4)")
    args = parser.parse_args()
    emails = args.emails or (300 if args.quick else 2000)
    sms = args.sms or (100 if args.quick else 500)
    records = args.records or (3000 if args.quick else 20_000)

    # retries are counted in the table; their log lines would only bury it
    logging.getLogger("partnerships.connectors").setLevel(logging.ERROR)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    started = time.perf_counter()
    rows = [bench_email(emails, args.email_rate, args.workers, fix_reset=False)]
    rows.append(bench_email(emails, args.email_rate, args.workers, fix_reset=True))
    batch_line = bench_email_batch(emails, args.email_rate)
    rows.append(bench_sms(sms, args.sms_rate, args.workers))
    rows.append(bench_hubspot(records, 100, args.hubspot_window))
    if not args.no_salesforce:
        rows.append(bench_salesforce(records, args.salesforce_rate))
    print()
    print("Server limit = client ceiling (burst 1); x ceiling: successful requests/s over the")
    print("ceiling (target >= 0.9); 429 srv: answered by the emulator, 429 cli: client.stats\n")
    print_table(rows)
    print(f"\n{batch_line}")
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
