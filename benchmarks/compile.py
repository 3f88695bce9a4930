"""What loading and compiling playbooks costs, against the same jobs written by hand.

    .venv/bin/python benchmarks/compile.py                      # N = 10, 100, 1000; 3 repetitions
    .venv/bin/python benchmarks/compile.py --sizes 10,100 --repeat 1   # a quick look

For each N, N playbooks of 10 steps (``generate.py``) are written to a temporary folder, and:

(a) in this process (imports and first-call warm-ups done beforehand, per-text caches cleared
    before every load): ``load_catalog`` in fast mode (``check_expressions=False``, what the run
    worker and the code location do) and in full mode (what ``partnerships validate`` does), then
    ``build_job`` for every playbook;
(b) in this process: the same N Dagster jobs built by hand with plain ``@op`` / ``@job``
    (``handwritten.py``: same nodes and edges, a ``DynamicOut`` fan-out and collect, a config
    schema) -- the baseline every ratio is taken against;
(c) what a run worker pays before it can run anything: a fresh Python process that loads the code
    location the way ``dagster api execute_run`` does (``ReconstructableRepository`` ->
    ``get_reconstructable_job(name).get_definition()``) and holds ONE job. The product's location
    is ``partnerships_orchestrator.definitions`` (``build_repository``: lazy, that one job is
    compiled on demand); the baseline is a module defining all N hand-written jobs eagerly in a
    ``Definitions``. Wall time of the whole process, interpreter start-up included.

Every figure is the median of ``--repeat`` runs (min-max shown). The machine is shared: figures are
noisy, compare ratios within one run rather than seconds across runs.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import generate  # noqa: E402

# Runs in a fresh interpreter: load a code location as the run worker does, get one job.
WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import dagster
from dagster._core.definitions.reconstruct import ReconstructableRepository
t1 = time.perf_counter()
kind, target, attr, job_name = sys.argv[1:5]
if kind == "module":
    recon = ReconstructableRepository.for_module(target, attr)
else:
    recon = ReconstructableRepository.for_file(target, attr)
recon_job = recon.get_reconstructable_job(job_name)
recon_job.get_repository_definition()
t2 = time.perf_counter()
job = recon_job.get_definition()
t3 = time.perf_counter()
assert job.name == job_name, job.name
print(json.dumps({"import_dagster": t1 - t0, "load_location": t2 - t1, "get_job": t3 - t2,
                  "ops": len(job.graph.nodes)}), flush=True)
import os
os._exit(0)  # a run worker goes on to run the job: its exit-time teardown is not part of this
"""

HANDWRITTEN_LOCATION = """\
# A code location with every hand-written job defined eagerly (written by benchmarks/compile.py).
import sys

sys.path.insert(0, {bench_dir!r})

from handwritten import definitions

defs = definitions({count})
"""


@dataclass
class Timing:
    """Seconds of each repetition of one measurement."""

    samples: list[float] = field(default_factory=list)
    detail: list[dict[str, float]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def spread(self) -> str:
        if len(self.samples) < 2:
            return ""
        return f"{min(self.samples):.3f}-{max(self.samples):.3f}"


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> Timing:
    timing = Timing()
    for _ in range(repeat):
        if before:
            before()
        gc.collect()
        start = time.perf_counter()
        result = fn()
        timing.samples.append(time.perf_counter() - start)
        del result
    return timing


def clear_caches() -> None:
    """Per-text caches of the loader: each load pays as the first load of a fresh process does."""
    from partnerships_orchestrator import expressions
    from partnerships_orchestrator.spec import expression_checks, validate

    for cached in (expression_checks.expression_uses, expression_checks.template_uses,
                   validate.valid_cron, validate.valid_timezone,
                   expressions._compiled, expressions._template):  # noqa: SLF001
        cached.cache_clear()


# ---------------------------------------------------------------- (a) and (b): in process

class InProcess:
    def __init__(self, root: Path) -> None:
        from partnerships_orchestrator.connections import build_resources
        from partnerships_orchestrator.settings import Settings

        self.templates = root / "templates"
        self.templates.mkdir(exist_ok=True)
        self.settings = Settings(playbooks_dir=root, templates_dir=self.templates, home=root / "home")
        self.resources = build_resources(self.settings, None)

    def load(self, folder: Path, full: bool) -> Any:
        from partnerships_orchestrator.spec.loader import load_catalog

        catalog = load_catalog([folder], templates_dir=self.templates, check_expressions=full)
        if catalog.problems:
            raise SystemExit(f"generated playbooks do not validate: {catalog.problems[:3]}")
        return catalog

    def compile_all(self, catalog: Any) -> list[Any]:
        from partnerships_orchestrator.compiler.job import build_job
        from partnerships_orchestrator.spec.models import Playbook

        return [build_job(d.model, self.resources, source=d.file)
                for d in catalog.documents if isinstance(d.model, Playbook)]

    def warm_up(self, root: Path) -> None:
        """Imports and first calls (pydantic, jinja, dagster) outside every timing."""
        from handwritten import make_job

        folder = root / "warmup"
        generate.write_playbooks(folder, 3, start=9000)
        for full in (False, True):
            self.compile_all(self.load(folder, full))
        for n in range(9000, 9003):
            make_job(n, prefix="warm")


def handwritten_all(count: int) -> list[Any]:
    from handwritten import make_job

    return [make_job(n) for n in range(count)]


# ---------------------------------------------------------------- (c): a fresh run worker

def worker_env(folder: Path, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PARTNERSHIPS_STRICT", "DAGSTER_IS_DEFS_VALIDATION_CLI")}
    env.update(PARTNERSHIPS_PLAYBOOKS=str(folder), PARTNERSHIPS_TEMPLATES=str(root / "templates"),
               PARTNERSHIPS_HOME=str(root / "home"), DAGSTER_HOME=str(root / "dagster"),
               PYTHONWARNINGS="ignore")
    return env


def run_worker(args: list[str], env: dict[str, str], repeat: int) -> Timing:
    timing = Timing()
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", WORKER, *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({' '.join(args)}):\n{proc.stderr[-3000:]}")
        timing.samples.append(elapsed)
        timing.detail.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return timing


def breakdown(timing: Timing) -> str:
    keys = ("import_dagster", "load_location", "get_job")
    labels = ("import dagster", "load location", "get job")
    parts = [f"{label} {statistics.median(d[k] for d in timing.detail):.2f}"
             for k, label in zip(keys, labels, strict=True)]
    return "; ".join(parts)


# ---------------------------------------------------------------- report

@dataclass
class Row:
    label: str
    timing: Timing
    baseline: Timing | None
    note: str = ""


def print_table(count: int, repeat: int, rows: list[Row]) -> None:
    width = max(len(r.label) for r in rows)
    head = f"N = {count} playbooks x {generate.STEPS} steps, median of {repeat}"
    print(f"\n{head}\n{'-' * len(head)}")
    print(f"{'':<{width}}  {'seconds':>8}  {'min-max':>13}  {'x hand-written':>14}")
    for row in rows:
        ratio = f"{row.timing.median / row.baseline.median:.2f}" if row.baseline else ""
        print(f"{row.label:<{width}}  {row.timing.median:>8.3f}  {row.timing.spread():>13}  "
              f"{ratio:>14}")
        if row.note:
            print(f"{'':<{width}}    {row.note}")
    sys.stdout.flush()


def bench_size(count: int, repeat: int, root: Path, proc: InProcess, workers: bool) -> list[Row]:
    folder = root / f"n{count}" / "playbooks"
    generate.write_playbooks(folder, count)

    hand = timed(lambda: handwritten_all(count), repeat)
    fast = timed(lambda: proc.load(folder, full=False), repeat, before=clear_caches)
    full = timed(lambda: proc.load(folder, full=True), repeat, before=clear_caches)
    catalog = proc.load(folder, full=False)
    compiled = timed(lambda: proc.compile_all(catalog), repeat)

    def total(load: Timing) -> Timing:
        return Timing([a + b for a, b in zip(load.samples, compiled.samples, strict=True)])

    rows = [
        Row("in process: hand-written @op/@job, build N jobs", hand, hand),
        Row("in process: load + validate, fast (run worker)", fast, hand),
        Row("in process: load + validate, full (`partnerships validate`)", full, hand),
        Row("in process: compile N jobs (build_job)", compiled, hand),
        Row("in process: fast load + compile N jobs", total(fast), hand),
        Row("in process: full load + compile N jobs", total(full), hand),
    ]
    if workers:
        job = count // 2
        location = root / f"n{count}" / "handwritten_location.py"
        location.write_text(HANDWRITTEN_LOCATION.format(bench_dir=str(BENCH_DIR), count=count))
        env = worker_env(folder, root)
        hand_worker = run_worker(["file", str(location), "defs", f"hand_{job:04d}_partner_review"],
                                 env, repeat)
        product_worker = run_worker(["module", "partnerships_orchestrator.definitions", "defs",
                                     generate.job_name(job)], env, repeat)
        rows += [
            Row("run worker: hand-written module, N jobs eager, get 1", hand_worker, hand_worker,
                breakdown(hand_worker)),
            Row("run worker: product lazy location, get 1 by name", product_worker, hand_worker,
                breakdown(product_worker)),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated N (default 10,100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per measurement (median)")
    parser.add_argument("--no-worker", action="store_true", help="skip (c), the fresh-process runs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    import warnings

    import dagster

    warnings.filterwarnings("ignore")
    print(f"dagster {dagster.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="partnerships-bench-") as tmp:
        root = Path(tmp)
        proc = InProcess(root)
        proc.warm_up(root)
        for count in sizes:
            print_table(count, args.repeat, bench_size(count, args.repeat, root, proc,
                                                       not args.no_worker))
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average "
          f"{os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
