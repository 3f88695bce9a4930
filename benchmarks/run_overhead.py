"""What one run of a 10-step playbook costs, against the same Dagster job written by hand.

    .venv/bin/python benchmarks/run_overhead.py               # 7 timed runs each, after a warm-up
    .venv/bin/python benchmarks/run_overhead.py --repeat 3    # a quick look

In one process, each job is run with ``execute_in_process`` on a fresh ephemeral Dagster instance
(instance creation not timed), once to warm up, then ``--repeat`` times; the median is reported:

* hand-written: ``handwritten.make_job`` -- plain ``@op`` / ``@job``, the same 11 nodes and edges
  as a compiled playbook (10 steps + the fan-out op), three items fanned out, trivial work;
* playbook, trivial steps: ``generate.py --trivial`` -- the same graph, every step an `evaluate`
  of a small expression, compiled by ``build_job``: the product's own per-step cost (scope passing,
  expressions, `when`, error policies, timeouts, run-record look-ups) on top of Dagster's;
* playbook, real steps: ``generate.py`` playbook 0 -- two warehouse queries (SQLite, seeded demo
  data), `assign` per item, two inline templates, e-mails per item and a Slack post to the sandbox
  outbox; its webhook step is skipped by `when` (never executed);
* ``partnerships run``, in process: ``Project.execute`` on that playbook, end to end (load the
  folder, check the inputs, compile, the product's persistent instance under a temporary
  DAGSTER_HOME, progress watcher, summary);
* ``partnerships run``, as a command: the entry point in a subprocess, in the foreground and the
  way a script, nohup or cron starts it (SIGINT ignored, its own session, no terminal), taken in
  turn so that a drifting machine load weighs on both the same.
  The two must cost the same and leave no process behind: the benchmark exits 1 when the
  background run costs more than ``--max-background-ratio`` times the foreground one (a run that
  waited on its own log capture took 61 s instead of 0.7 s) or when any process outlives a run.

Then, in fresh processes: the first import of each step runtime (a run worker re-imports the code
location for every run and pays these on the first step of each type).

The machine is shared: figures are noisy, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import generate  # noqa: E402

HAND = "hand-written @op/@job, trivial work"
HAND_SQLITE = "hand-written, SQLite instance (dagster.yaml)"
STEP_TYPES = ("query", "evaluate", "template", "communicate", "webhook")

# Fresh interpreter: what the first step of each type costs to import (after the code location).
IMPORTS = r"""
import importlib, json, sys, time
import dagster
import partnerships_orchestrator.compiler.location
import partnerships_orchestrator.compiler.ops
out = {}
for name in sys.argv[1:]:
    t = time.perf_counter()
    importlib.import_module(f"partnerships_orchestrator.steps.{name}")
    out[name] = time.perf_counter() - t
print(json.dumps(out), flush=True)
"""


def median_run(run: Callable[[], Any], repeat: int) -> tuple[float, list[float], float]:
    """(median, samples, warm-up seconds) of ``run`` (which returns the seconds it timed)."""
    first = run()
    samples = []
    for _ in range(repeat):
        gc.collect()
        samples.append(run())
    return statistics.median(samples), samples, first


def execute(job: Any, make_instance: Callable[[], Any]) -> Callable[[], float]:
    """One timed ``execute_in_process`` on a fresh instance (its creation not timed)."""

    def run() -> float:
        with make_instance() as instance:
            start = time.perf_counter()
            result = job.execute_in_process(instance=instance, raise_on_error=False)
            elapsed = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"run of {job.name} failed")
        return elapsed

    return run


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (Dagster's console log) to a file, the same for every job measured."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# The product's per-step look-ups of the run in the instance (found while profiling these runs).
LOOKUPS = ("_run_info", "_check_not_aborted")


def attribute_lookups(job: Any, make_instance: Callable[[], Any], runs: int) -> dict[str, tuple[float, float, float]]:
    """Per run: calls, median ms per call and ms in all of ``compiler.ops`` instance look-ups."""
    from partnerships_orchestrator.compiler import ops

    if not all(hasattr(ops, name) for name in LOOKUPS):
        return {}
    spent: dict[str, list[float]] = {name: [] for name in LOOKUPS}
    originals = {name: getattr(ops, name) for name in LOOKUPS}

    def timed_call(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name].append(time.perf_counter() - start)
        return call

    try:
        for name in LOOKUPS:
            setattr(ops, name, timed_call(name))
        execute(job, make_instance)()  # warm-up, not counted
        for values in spent.values():
            values.clear()
        for _ in range(runs):
            execute(job, make_instance)()
    finally:
        for name, original in originals.items():
            setattr(ops, name, original)
    return {name: (len(v) / runs, statistics.median(v) * 1e3, sum(v) / runs * 1e3)
            for name, v in spent.items()}


FOREGROUND = "`partnerships run` command, foreground"
BACKGROUND = "`partnerships run` command, SIGINT ignored, background"


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def processes_marked(marker: str) -> list[str]:
    """Command lines of processes whose environment carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:
            continue
    return found


def command_run(playbook_id: str, env: dict[str, str], background: bool,
                leftovers: list[str]) -> Callable[[], float]:
    """One timed `partnerships run` through the entry point; in the background as a script
    starts it (SIGINT ignored, own session, stdin from /dev/null, output to files)."""
    command = [str(Path(sys.executable).parent / "partnerships"), "run", playbook_id, "--json"]
    marker = f"PARTNERSHIPS_BENCH_MARK={env['PARTNERSHIPS_BENCH_MARK']}"

    def run() -> float:
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False,
                              preexec_fn=_ignore_sigint if background else None,
                              start_new_session=background)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or not json.loads(proc.stdout)["success"]:
            raise SystemExit(f"`partnerships run` failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        leftovers.extend(processes_marked(marker))
        return elapsed

    return run


def alternating(runs: dict[str, Callable[[], float]],
                repeat: int) -> dict[str, tuple[float, list[float], float]]:
    """Like ``median_run`` for several runs taken in turn (a, b, a, b, ...), so a machine whose
    load drifts weighs on each the same."""
    first = {label: run() for label, run in runs.items()}
    samples: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            gc.collect()
            samples[label].append(run())
    return {label: (statistics.median(samples[label]), samples[label], first[label])
            for label in runs}


def first_imports(env: dict[str, str], repeat: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in STEP_TYPES}
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", IMPORTS, *STEP_TYPES], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        for name, seconds in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per job (median)")
    parser.add_argument("--e2e-repeat", type=int, default=5, help="timed `partnerships run`s")
    parser.add_argument("--max-background-ratio", type=float, default=1.5,
                        help="fail when a background command run costs more than this x foreground")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="partnerships-run-bench-") as tmp:
        root = Path(tmp)
        os.environ["DAGSTER_HOME"] = str(root / "dagster")
        os.environ["PARTNERSHIPS_HOME"] = str(root / "home")
        for name in ("PARTNER_WAREHOUSE_URL", "PARTNERSHIPS_STRICT"):
            os.environ.pop(name, None)

        import dagster as dg
        from handwritten import make_job

        from partnerships_orchestrator.compiler.job import build_job
        from partnerships_orchestrator.connections import build_resources
        from partnerships_orchestrator.demo import seed_demo_data
        from partnerships_orchestrator.project import Project
        from partnerships_orchestrator.settings import Settings
        from partnerships_orchestrator.spec.loader import load_catalog
        from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema

        print(f"dagster {dg.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at start")
        playbooks, templates = root / "playbooks", root / "templates"
        templates.mkdir()
        generate.write_playbooks(playbooks, 1)
        generate.write_playbooks(playbooks, 1, trivial=True)
        settings = Settings(playbooks_dir=playbooks, templates_dir=templates, home=root / "home")
        engine = create_engine_for(settings.warehouse_url)
        ensure_schema(engine)
        seed_demo_data(engine)
        engine.dispose()

        catalog = load_catalog([playbooks], templates_dir=templates)
        if catalog.problems:
            raise SystemExit(f"generated playbooks do not validate: {catalog.problems}")
        by_id = {p.id: p for p in catalog.playbooks()}
        resources = build_resources(settings, None)
        real_id = generate.playbook_id(0)
        trivial = build_job(by_id[generate.playbook_id(0, True)], resources)
        real = build_job(by_id[real_id], resources)
        hand = make_job(0)

        def ephemeral() -> Any:
            return dg.DagsterInstance.ephemeral()

        def product_instance() -> Any:  # SQLite storage under DAGSTER_HOME, the shipped dagster.yaml
            return dg.DagsterInstance.from_config(str(Project(settings).prepare()))

        def cli_run() -> float:
            start = time.perf_counter()
            summary = Project(settings).execute(real_id, {})
            elapsed = time.perf_counter() - start
            if not summary.success or summary.steps.get("crm_sync") not in (None, "skipped"):
                raise SystemExit(f"`partnerships run` did not go as expected: {summary.as_dict()}")
            return elapsed

        plan = [  # (label, baseline label, timed run, repetitions)
            (HAND, HAND, execute(hand, ephemeral), args.repeat),
            ("playbook, trivial steps", HAND, execute(trivial, ephemeral), args.repeat),
            ("playbook, real steps", HAND, execute(real, ephemeral), args.repeat),
            (HAND_SQLITE, HAND_SQLITE, execute(hand, product_instance), args.repeat),
            ("playbook, real steps, SQLite instance", HAND_SQLITE, execute(real, product_instance),
             args.repeat),
            ("`partnerships run` (Project.execute)", HAND_SQLITE, cli_run, args.e2e_repeat),
        ]
        command_env = dict(os.environ, PARTNERSHIPS_PLAYBOOKS=str(playbooks),
                           PARTNERSHIPS_TEMPLATES=str(templates), PYTHONWARNINGS="ignore",
                           PARTNERSHIPS_BENCH_MARK=str(root))
        leftovers: list[str] = []
        commands = {FOREGROUND: command_run(real_id, command_env, False, leftovers),
                    BACKGROUND: command_run(real_id, command_env, True, leftovers)}
        results: dict[str, tuple[str, tuple[float, list[float], float]]] = {}
        with stderr_to(root / "dagster-console.log"):
            for label, baseline, run, repeat in plan:
                results[label] = (baseline, median_run(run, repeat))
            for label, timed in alternating(commands, args.e2e_repeat).items():
                results[label] = (FOREGROUND, timed)
            lookups = {kind: attribute_lookups(trivial, make, args.repeat)
                       for kind, make in (("ephemeral", ephemeral), ("SQLite", product_instance))}
        imports = first_imports(dict(os.environ, PYTHONWARNINGS="ignore"), 3)

    width = max(len(label) for label in results)
    print(f"\nOne run of a {generate.STEPS}-step playbook (11 ops; 3 items fanned out: 17 step "
          f"executions), in process; median of {args.repeat} ({args.e2e_repeat} end to end)\n")
    print(f"{'':<{width}}  {'s/run':>7}  {'min-max':>11}  {'x hand-written':>14}  {'1st run':>7}")
    for label, (baseline, (median, samples, first)) in results.items():
        ratio = median / results[baseline][1][0]
        print(f"{label:<{width}}  {median:>7.3f}  {min(samples):>5.3f}-{max(samples):<5.3f}  "
              f"{ratio:>14.2f}  {first:>7.3f}")
    per_step = (results["playbook, trivial steps"][1][0] - results[HAND][1][0]) / 17
    print(f"\nproduct cost per step execution, (trivial playbook - hand-written) / 17: "
          f"{per_step * 1e3:.1f} ms")
    print("\nRun look-ups per step in compiler/ops.py, trivial playbook (separate runs, wrapped):")
    for kind, found in lookups.items():
        for name, (calls, per_call, per_run) in found.items():
            print(f"  {kind:<9} {name:<19} {calls:>3.0f} calls/run  {per_call:5.2f} ms/call (median)  "
                  f"{per_run:5.1f} ms/run")
    print("\nFirst import of each step runtime in a fresh process (median of 3), seconds:")
    print("  " + ", ".join(f"{name} {seconds:.3f}" for name, seconds in imports.items()))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    ratio = results[BACKGROUND][1][0] / results[FOREGROUND][1][0]
    problems = []
    if ratio > args.max_background_ratio:
        problems.append(f"a background `partnerships run` costs {ratio:.2f}x the foreground one "
                        f"(limit {args.max_background_ratio}x)")
    if leftovers:
        problems.append("processes outlived a `partnerships run`: " + "; ".join(leftovers[:5]))
    if problems:
        raise SystemExit("REGRESSION: " + "; ".join(problems))
    print(f"background/foreground `partnerships run`: {ratio:.2f}x (limit "
          f"{args.max_background_ratio}x); no process outlived a run")


if __name__ == "__main__":
    main()
