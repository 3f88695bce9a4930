"""What running steps on Celery workers costs and gains, against Dagster's in-process and
multiprocess executors, on this machine.

    .venv/bin/python benchmarks/scale_out.py                 # 1,000 items in 10 fan-outs
    .venv/bin/python benchmarks/scale_out.py --items 200     # a quick look

The playbook: one warehouse query of ``--items`` partners, then ``--fanouts`` independent
fan-outs over equal slices of the rows, each an `evaluate` step per item (trivial work), so the
run has ``fanouts + 1`` Dagster steps: a fan-out region runs its items inside one step, and
independent fan-outs are what an executor can spread over processes or workers. Every mode runs
the same job on the same instance (Dagster storage, state and warehouse in one PostgreSQL, as
`partnerships up --postgres` does), orchestrated the way a run worker does it (``execute_job`` of
the code location's reconstructable job), in a fresh process per mode:

* in-process: every step in the orchestrating process (the baseline);
* multiprocess: a process per step (Dagster's ``multiprocess_executor``);
* celery, 1 worker / 2 workers: each step a Celery task through RabbitMQ to `partnerships worker`
  processes (``--concurrency 1`` each), started before the run and ready (not timed).

RabbitMQ (Debian's ``rabbitmq-server``) and PostgreSQL (the machine's server binaries) are
started by the script on free loopback ports, as the tests do, and stopped at the end.
Reported: wall time of the run, Dagster steps per second, items per second, and seconds of
overhead per step: (wall - in-process wall) / steps, i.e. what the executor adds to each step.

Then a vendor's ceiling across workers: ``2 x --messages`` personal messages (one request each)
in two independent fan-outs on one connection (``rate_limit`` ``--ceiling``/s, the emulator
allowing as many and answering 429 past it), on two Celery workers:

* SendGrid (which announces its quota in ``X-RateLimit-*`` headers), the limiter shared through
  PostgreSQL (the default);
* Twilio (which announces nothing), the limiter shared;
* both again with the connection's ``rate_limit`` at 0.95 of the vendor's ceiling (room for
  the requests' jitter on the way to a vendor that counts per clock second);
* Twilio with ``PARTNERSHIPS_RATE_LIMITS=local``: each worker paces only its own calls (the
  behaviour before the limiter was shared), both fan-outs at once (`sms` pool 8) and one step at
  a time (`sms` pool 1, the former workaround).

Reported: messages delivered (each exactly once: the ledger forbids a second send), requests
the vendor received, 429s, the most requests it received within one second, and accepted
requests per second between the first and the last request, over the ceiling.
``--modes ""`` runs only this part; ``--vendors`` picks scenarios.
The machine is shared: figures are noisy, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # partnerships_orchestrator_tests is not installed

MODES = ("in_process", "multiprocess", "celery-1", "celery-2")


def playbook(items: int, fanouts: int) -> str:
    per = items // fanouts
    lines = [
        "id: scale-out-bench",
        "steps:",
        "  - id: partners",
        "    type: query",
        f'    sql: "select id, name from partners order by id limit {per * fanouts}"',
    ]
    for n in range(fanouts):
        lines += [
            f"  - id: tag_{n}",
            "    type: evaluate",
            "    depends_on: [partners]",
            f"    for_each: steps.partners.rows[{n * per}:{(n + 1) * per}]",
            "    assign:",
            "      label: \"item.id ~ '-' ~ item.name\"",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one mode, in its own process


def run_one(executor: str, playbook_id: str = "scale-out-bench") -> dict[str, Any]:
    """Execute the benchmark job once with ``executor``; called in a fresh process."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from partnerships_orchestrator.compiler import naming
    from partnerships_orchestrator.project import Project

    os.environ["PARTNERSHIPS_EXECUTOR"] = executor
    project = Project.open()
    instance = project.instance
    repository = ReconstructableRepository.for_module(
        "partnerships_orchestrator.definitions", "defs", working_directory=str(REPO_ROOT)
    )
    job = repository.get_reconstructable_job(naming.job_name(playbook_id))
    started = time.perf_counter()
    result = dg.execute_job(job, instance=instance, raise_on_error=False)
    wall = time.perf_counter() - started
    steps = {
        e.step_key
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_SUCCESS and e.step_key
    }
    return {"success": result.success, "wall": wall, "steps": len(steps)}


# ---------------------------------------------------------------- services and workers


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    from dagster_celery.make_app import make_app

    workers = []
    for n in range(count):
        name = f"bench{n}"
        out = (logs / f"{name}.log").open("wb")
        argv = [sys.executable, "-m", "partnerships_orchestrator.cli", "worker", "--name", name]
        workers.append(
            subprocess.Popen(
                [*argv, "--concurrency", "1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    app = make_app({"broker": env["PARTNERSHIPS_CELERY_BROKER"], "backend": "rpc://"})
    wanted = {f"bench{n}" for n in range(count)}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answered = {name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply}
        if wanted <= answered:
            return workers
    stop_workers(workers)
    raise RuntimeError(f"workers did not answer; see {logs}")


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def measure(
    mode: str, env: dict[str, str], logs: Path, playbook_id: str = "scale-out-bench"
) -> dict[str, Any]:
    workers = start_workers(int(mode.split("-")[1]), env, logs) if mode.startswith("celery") else []
    executor = "celery" if workers else mode
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--one", executor, "--playbook", playbook_id],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{mode} failed:\n{exc.stderr[-3000:]}") from None
    finally:
        stop_workers(workers)
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--fanouts", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES), help="executors to compare")
    parser.add_argument("--ceiling", type=int, default=20, help="e-mails/s the vendor allows")
    parser.add_argument(
        "--messages", type=int, default=100, help="messages per fan-out (2 fan-outs)"
    )
    parser.add_argument(
        "--vendors", default=",".join(SCENARIOS), help=f"vendor scenarios ({', '.join(SCENARIOS)})"
    )
    parser.add_argument(
        "--one", choices=("in_process", "multiprocess", "celery"), help=argparse.SUPPRESS
    )
    parser.add_argument("--playbook", default="scale-out-bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.playbook)))
        return 0

    from partnerships_orchestrator.demo import seed_demo_data
    from partnerships_orchestrator.instance import dagster_postgres_url
    from partnerships_orchestrator.project import Project
    from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
    from partnerships_orchestrator_tests.emulators.sendgrid import SendGridEmulator
    from partnerships_orchestrator_tests.emulators.twilio import TwilioEmulator
    from partnerships_orchestrator_tests.postgres import create_database, start_postgres
    from partnerships_orchestrator_tests.rabbitmq import start_rabbitmq

    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="po-scale-out-"))
    pg_url, stop_pg = start_postgres(root)
    mq_url, stop_mq = start_rabbitmq()
    sendgrid, twilio = SendGridEmulator(), TwilioEmulator()
    sendgrid_server, twilio_server = sendgrid.serve(), twilio.serve()
    emulators = {"sendgrid": sendgrid, "twilio": twilio}
    try:
        database = create_database(pg_url, f"bench_{uuid.uuid4().hex[:8]}")
        (root / "playbooks").mkdir()
        (root / "templates").mkdir()
        (root / "playbooks" / "bench.yaml").write_text(playbook(args.items, args.fanouts))
        for vendor in VENDORS:
            (root / "playbooks" / f"{vendor}.yaml").write_text(
                vendor_playbook(vendor, args.messages)
            )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            "PARTNERSHIPS_HOME": str(root / "home"),
            "PARTNERSHIPS_PLAYBOOKS": str(root / "playbooks"),
            "PARTNERSHIPS_TEMPLATES": str(root / "templates"),
            "DAGSTER_HOME": str(root / "home" / "dagster"),
            "DAGSTER_POSTGRES_URL": dagster_postgres_url(database),
            "PARTNERSHIPS_DATABASE_URL": database,
            "PARTNER_WAREHOUSE_URL": database,
            "PARTNERSHIPS_CELERY_BROKER": mq_url,
            "SENDGRID_API_KEY": SENDGRID_KEY,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        }
        os.environ.update(env)
        Project.open().prepare()
        engine = create_engine_for(database)
        ensure_schema(engine)
        seed_demo_data(engine, partners=max(args.items, 2 * args.messages))
        engine.dispose()

        results: dict[str, dict[str, Any]] = {}
        for mode in [m for m in args.modes.split(",") if m]:
            results[mode] = measure(mode, env, root)
            print(f"{mode}: {results[mode]}", file=sys.stderr, flush=True)
        vendor = {}
        for scenario in [v for v in args.vendors.split(",") if v]:
            name, limits, pool, client = SCENARIOS[scenario]
            (root / "playbooks" / "connections.yaml").write_text(
                CONNECTIONS.format(
                    sendgrid=sendgrid.base_url,
                    twilio=twilio.base_url,
                    requests=round(args.ceiling * client * 10),
                    sid=TWILIO_SID,
                )
            )
            vendor[scenario] = vendor_ceiling(
                emulators[name], name, args.ceiling, pool, {**env, RATE_LIMITS: limits}, root
            )
            print(f"{scenario}: {vendor[scenario]}", file=sys.stderr, flush=True)
    finally:
        sendgrid_server.stop()
        twilio_server.stop()
        stop_mq()
        stop_pg()
        shutil.rmtree(root, ignore_errors=True)
    print_table(results, args.items)
    print_vendor_table(vendor, args.ceiling, 2 * args.messages)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    # the per-process limiters are expected to draw 429s and may give messages up: not a failure
    runs = [*results.values(), *(r for k, r in vendor.items() if SCENARIOS[k][1] == "shared")]
    return 0 if all(r["success"] for r in runs) else 1


# ---------------------------------------------------------------- a vendor's ceiling, 2 workers

SENDGRID_KEY = "SG.emulator-key.s3cr3t-sendgrid-value"  # the emulator's fake key
TWILIO_SID = "AC" + "0123456789abcdef" * 2  # the emulator's fake account
TWILIO_TOKEN = "f0e1d2c3b4a5s3cr3t0tw1l10t0k3n99"  # nosec B105 # the emulator's fake token
RATE_LIMITS = "PARTNERSHIPS_RATE_LIMITS"
CONNECTIONS = """
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {sendgrid}
    rate_limit: {{requests: {requests}, per_seconds: 10}}
  sms:
    provider: twilio
    account_sid: {sid}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    from: "+15550100"
    base_url: {twilio}
    rate_limit: {{requests: {requests}, per_seconds: 10}}
"""
# vendor -> (channel, recipient column, request path)
VENDORS = {
    "sendgrid": ("email", "contact_email", "/v3/mail/send"),
    "twilio": ("sms", "contact_phone", "/Messages.json"),
}
# scenario -> (vendor, PARTNERSHIPS_RATE_LIMITS, steps of the channel's pool at once,
#              the connection's rate_limit as a fraction of the vendor's ceiling)
SCENARIOS = {
    "sendgrid-shared": ("sendgrid", "shared", 8, 1.0),
    "twilio-shared": ("twilio", "shared", 8, 1.0),
    "sendgrid-shared-95": ("sendgrid", "shared", 8, 0.95),
    "twilio-shared-95": ("twilio", "shared", 8, 0.95),
    "twilio-local": ("twilio", "local", 8, 1.0),
    "twilio-local-pool1": ("twilio", "local", 1, 1.0),
}


def vendor_playbook(vendor: str, messages: int) -> str:
    """Two independent fan-outs of personal messages (one request each) on one connection."""
    channel, column, _ = VENDORS[vendor]
    lines = [
        f"id: scale-out-{vendor}",
        "steps:",
        "  - id: partners",
        "    type: query",
        f'    sql: "select id, name, {column} as address from partners order by id limit {2 * messages}"',
    ]
    for n in range(2):
        lines += [
            f"  - id: send_{n}",
            "    type: communicate",
            "    depends_on: [partners]",
            f"    for_each: steps.partners.rows[{n * messages}:{(n + 1) * messages}]",
            f"    channel: {channel}",
            '    to: "{{ item.address }}"',
            '    subject: "Hello {{ item.name }}"',
            '    body: "Dear {{ item.name }}, this one is yours."',
        ]
    return "\n".join(lines) + "\n"


def vendor_ceiling(
    emulator: Any, vendor: str, ceiling: int, pool: int, env: dict[str, str], logs: Path
) -> dict[str, Any]:
    """The vendor's playbook on 2 Celery workers with its channel's pool at ``pool`` steps."""
    from partnerships_orchestrator.project import Project

    channel, _, path = VENDORS[vendor]
    emulator.reset()
    emulator.configure(limit=ceiling, window=1.0)
    with Project.open().instance as instance:
        instance.event_log_storage.set_concurrency_slots(channel, pool)
    run = measure("celery-2", env, logs, f"scale-out-{vendor}")
    sent = sorted(r.at for r in emulator.requests(method="POST") if r.path.endswith(path))
    if vendor == "sendgrid":
        accepted, delivered = emulator.state.accepted_requests, len(emulator.state.delivered)
    else:
        accepted = delivered = len(emulator.state.messages)
    span = (max(sent) - min(sent)) if len(sent) > 1 else float("nan")
    per_second = (accepted - 1) / span if span else float("nan")
    return {
        **run,
        "delivered": delivered,
        "requests": len(sent),
        "429s": len(sent) - accepted,
        "busiest_second": most_within(sent, 1.0),
        "of_ceiling": per_second / ceiling,
    }


def most_within(times: list[float], window: float) -> int:
    """The most requests that reached the vendor within any ``window`` seconds."""
    most, end = 0, 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] - at < window:
            end += 1
        most = max(most, end - start)
    return most


def print_vendor_table(vendor: dict[str, dict[str, Any]], ceiling: int, messages: int) -> None:
    print(
        f"\n{messages} personal messages in 2 fan-outs, 2 Celery workers, vendor ceiling {ceiling}/s\n"
    )
    print(
        "| vendor | limiter | pool | rate_limit | wall s | delivered | requests | 429s "
        "| most in 1 s | x ceiling |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, r in vendor.items():
        name, limits, pool, client = SCENARIOS[scenario]
        print(
            f"| {name} | {limits} | {pool} | {client * ceiling:g}/s | {r['wall']:.1f} "
            f"| {r['delivered']} | {r['requests']} | {r['429s']} | {r['busiest_second']} "
            f"| {r['of_ceiling']:.2f} |"
        )


def print_table(results: dict[str, dict[str, Any]], items: int) -> None:
    if "in_process" not in results:
        return
    base = results["in_process"]["wall"]
    print(f"\n{items} items, {results['in_process']['steps']} Dagster steps per run\n")
    print("| executor | wall s | x in-process | steps/s | items/s | overhead s/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        overhead = (r["wall"] - base) / r["steps"] if r["steps"] else 0.0
        print(
            f"| {mode} | {r['wall']:.1f} | {r['wall'] / base:.1f} | {r['steps'] / r['wall']:.2f} "
            f"| {items / r['wall']:.0f} | {overhead:.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
