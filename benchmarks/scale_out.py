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

Then a vendor's ceiling across workers: ``2 x --messages`` personal e-mails (one request each)
in two independent fan-outs on one SendGrid connection (``rate_limit`` ``--ceiling``/s, the
SendGrid emulator allowing as many and answering 429 past it), on two Celery workers, with the
``email`` concurrency pool at 8 steps (both fan-outs at once) and at 1: accepted requests per
second over the ceiling, 429s, duplicates. ``--modes ""`` runs only this part.
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
    parser.add_argument("--messages", type=int, default=100, help="e-mails per fan-out (2 fan-outs)")
    parser.add_argument("--one", choices=("in_process", "multiprocess", "celery"), help=argparse.SUPPRESS)
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
    from partnerships_orchestrator_tests.postgres import create_database, start_postgres
    from partnerships_orchestrator_tests.rabbitmq import start_rabbitmq

    print(f"load average at start: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="po-scale-out-"))
    pg_url, stop_pg = start_postgres(root)
    mq_url, stop_mq = start_rabbitmq()
    sendgrid = SendGridEmulator()
    sendgrid_server = sendgrid.serve()
    try:
        database = create_database(pg_url, f"bench_{uuid.uuid4().hex[:8]}")
        (root / "playbooks").mkdir()
        (root / "templates").mkdir()
        (root / "playbooks" / "bench.yaml").write_text(playbook(args.items, args.fanouts))
        (root / "playbooks" / "vendor.yaml").write_text(vendor_playbook(args.messages))
        (root / "playbooks" / "connections.yaml").write_text(
            CONNECTIONS.format(url=sendgrid.base_url, ceiling=args.ceiling)
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "PARTNERSHIPS_HOME": str(root / "home"),
            "PARTNERSHIPS_PLAYBOOKS": str(root / "playbooks"),
            "PARTNERSHIPS_TEMPLATES": str(root / "templates"),
            "DAGSTER_HOME": str(root / "home" / "dagster"),
            "DAGSTER_POSTGRES_URL": dagster_postgres_url(database),
            "PARTNERSHIPS_DATABASE_URL": database,
            "PARTNER_WAREHOUSE_URL": database,
            "PARTNERSHIPS_CELERY_BROKER": mq_url,
            "SENDGRID_API_KEY": SENDGRID_KEY,
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
        vendor = {
            pools: vendor_ceiling(sendgrid, args.ceiling, pools, env, root) for pools in (8, 1)
        }
    finally:
        sendgrid_server.stop()
        stop_mq()
        stop_pg()
        shutil.rmtree(root, ignore_errors=True)
    print_table(results, args.items)
    print_vendor_table(vendor, args.ceiling, 2 * args.messages)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    runs = [*results.values(), *vendor.values()]
    return 0 if all(r["success"] for r in runs) else 1


# ---------------------------------------------------------------- a vendor's ceiling, 2 workers

SENDGRID_KEY = "SG.emulator-key.s3cr3t-sendgrid-value"  # the emulator's fake key
CONNECTIONS = """
kind: connections
id: default
connections:
  email:
    provider: sendgrid
    api_key: "${{env:SENDGRID_API_KEY}}"
    from: partners@example.org
    base_url: {url}
    rate_limit: {{requests: {ceiling}, per_seconds: 1}}
"""


def vendor_playbook(messages: int) -> str:
    """Two independent fan-outs of personal e-mails (one request each) on one connection."""
    lines = [
        "id: scale-out-vendor",
        "steps:",
        "  - id: partners",
        "    type: query",
        f'    sql: "select id, name, contact_email as email from partners order by id limit {2 * messages}"',
    ]
    for n in range(2):
        lines += [
            f"  - id: send_{n}",
            "    type: communicate",
            "    depends_on: [partners]",
            f"    for_each: steps.partners.rows[{n * messages}:{(n + 1) * messages}]",
            "    channel: email",
            '    to: "{{ item.email }}"',
            '    subject: "Hello {{ item.name }}"',
            '    body: "Dear {{ item.name }}, this one is yours."',
        ]
    return "\n".join(lines) + "\n"


def vendor_ceiling(
    sendgrid: Any, ceiling: int, pool: int, env: dict[str, str], logs: Path
) -> dict[str, Any]:
    """The vendor playbook on 2 Celery workers with the `email` pool at ``pool`` steps."""
    from partnerships_orchestrator.project import Project

    sendgrid.reset()
    sendgrid.configure(limit=ceiling, window=1.0)
    with Project.open().instance as instance:
        instance.event_log_storage.set_concurrency_slots("email", pool)
    run = measure("celery-2", env, logs, "scale-out-vendor")
    sent = [r.at for r in sendgrid.requests("/v3/mail/send")]
    accepted = sendgrid.state.accepted_requests
    span = (max(sent) - min(sent)) if len(sent) > 1 else float("nan")
    per_second = (accepted - 1) / span if span else float("nan")
    return {
        **run,
        "delivered": len(sendgrid.state.delivered),
        "duplicates": len(sendgrid.state.delivered) - len(sendgrid.delivered_counts()),
        "429s": len(sent) - accepted,
        "of_ceiling": per_second / ceiling,
    }


def print_vendor_table(vendor: dict[int, dict[str, Any]], ceiling: int, messages: int) -> None:
    print(f"\n{messages} personal e-mails in 2 fan-outs, 2 Celery workers, vendor ceiling {ceiling}/s\n")
    print("| `email` pool | wall s | delivered | duplicates | 429s | x ceiling |")
    print("|---:|---:|---:|---:|---:|---:|")
    for pool, r in vendor.items():
        print(
            f"| {pool} | {r['wall']:.1f} | {r['delivered']} | {r['duplicates']} | {r['429s']} "
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
