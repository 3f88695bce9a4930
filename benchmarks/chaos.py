"""Chaos benchmark: SIGKILL each of the product's processes many times during bulk sends.

Each campaign is the chaos test's (``partnerships_orchestrator_tests/e2e/chaos.py``): one
`partnerships up` stack, a 200-recipient send to the SendGrid emulator on loopback, a SIGKILL at
random delivery counts, the documented recovery after each (`partnerships up` again when the
daemon or the webserver died; re-execution from failure of a run that did not succeed). Here
each campaign kills one kind of process ``--per-campaign`` times, and campaigns go round the four
kinds until ``--kills`` kills were made, so that each row of the table is about one process:

- delivered: recipients the receiver got (out of the campaigns' recipients);
- duplicates: messages the receiver got more than once (must be 0);
- missing: recipients never reached (must all be dead letters whose outcome is unknown);
- unknown: dead letters whose outcome is unknown (a request in flight when its sender died);
- late: the most messages of a killed run that arrived after its SIGKILL (requests in flight);
- recover s: from the SIGKILL until the receiver got the first message of the run that took
  over (the re-execution; the same run if it went on), median and max.

Usage: ``python benchmarks/chaos.py [--kills 100] [--per-campaign 8] [--seed N]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partnerships_orchestrator_tests.e2e import chaos  # noqa: E402
from partnerships_orchestrator_tests.emulators.sendgrid import SendGridEmulator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--per-campaign", type=int, default=8)
    parser.add_argument("--recipients", type=int, default=200)
    parser.add_argument("--rate", type=int, default=20, help="messages a second")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}; load average {os.getloadavg()[0]:.1f}", flush=True)

    emulator = SendGridEmulator()
    server = emulator.serve()
    rows: dict[str, list[chaos.Report]] = defaultdict(list)
    made, started, failures = 0, time.monotonic(), 0
    try:
        campaign = 0
        while made < args.kills:
            target = chaos.TARGETS[campaign % len(chaos.TARGETS)]
            kills = min(args.per_campaign, args.kills - made)
            campaign += 1
            emulator.reset()
            emulator.configure(limit=args.rate * 10, window=1.0)
            with (
                tempfile.TemporaryDirectory(prefix="chaos-") as base,
                chaos.running_stack(
                    Path(base), emulator, recipients=args.recipients, rate=args.rate
                ) as stack,
            ):
                report = chaos.run_campaign(
                    stack, [target] * kills, rng, say=lambda line: print("  " + line, flush=True)
                )
            rows[target].append(report)
            made += len(report.kills)
            bad = report.duplicates or not report.missing <= report.unknown_recipients
            failures += bool(bad)
            print(
                f"campaign {campaign}: {target} x{len(report.kills)}: "
                f"{report.summary()['delivered']} delivered, {report.duplicates} duplicates, "
                f"{len(report.missing)} missing, {len(report.unknown)} unknown, "
                f"{report.seconds:.0f} s{'  <-- LOST OR DUPLICATED' if bad else ''}",
                flush=True,
            )
            print_table(rows)  # so far: an interrupted benchmark still has its figures
            if not report.kills:
                print("  the send finished before any kill: lower --rate", flush=True)
                return 1
    finally:
        server.stop()
    print_table(rows)
    print(
        f"{made} kills in {time.monotonic() - started:.0f} s; load average "
        f"{os.getloadavg()[0]:.1f}; seed {seed}"
    )
    return 1 if failures else 0


def print_table(rows: dict[str, list[chaos.Report]]) -> None:
    header = (
        f"{'process killed':<15}{'kills':>6}{'delivered':>14}{'duplicates':>11}"
        f"{'missing':>9}{'unknown':>9}{'late':>6}{'recover s (median/max)':>25}"
    )
    print(header)
    print("-" * len(header))
    for target in chaos.TARGETS:
        reports = rows.get(target, [])
        if not reports:
            continue
        recover = [k.recovered_seconds for r in reports for k in r.kills]
        delivered = sum(len(r.delivered) for r in reports)
        expected = sum(r.recipients for r in reports)
        print(
            f"{target:<15}{sum(len(r.kills) for r in reports):>6}"
            f"{f'{delivered}/{expected}':>14}{sum(r.duplicates for r in reports):>11}"
            f"{sum(len(r.missing) for r in reports):>9}{sum(len(r.unknown) for r in reports):>9}"
            f"{max(k.late for r in reports for k in r.kills):>6}"
            f"{f'{statistics.median(recover):.1f} / {max(recover):.1f}':>25}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
