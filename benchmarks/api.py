"""The HTTP API under load, and a webhook against a direct Dagster launch.

    .venv/bin/python benchmarks/api.py                      # 50 clients x 10 s, 10 webhook/direct pairs
    .venv/bin/python benchmarks/api.py --seconds 5 --runs 4  # a quicker look
    .venv/bin/python benchmarks/api.py --client threads --requests 40   # without wrk

Starts the product as a user does (`partnerships up` on free ports, a fresh home, one 3-step
playbook: warehouse query -> evaluate -> one e-mail per partner into the sandbox outbox), then:

* latency: C concurrent clients, one keep-alive connection each, send requests to one endpoint
  at a time: `GET /playbooks`, `GET /playbooks/{id}`, `GET /executions?limit=20` and
  `GET /executions/{id}` (a finished run with its steps, logs and messages), with a viewer
  token. The clients are wrk's (Debian's `wrk`, C, for S seconds per endpoint) when it is
  installed, else Python threads with httpx (R requests each), whose own CPU then competes with
  the server's on this machine. The baseline is `GET /health/live` under the same load: no
  authentication, no work, the floor of the HTTP stack here. p50 / p95 / p99 in milliseconds,
  requests a second, and p95 over the baseline's.
* webhook vs direct: the same playbook started N times by a signed `POST /webhooks/{id}`
  (202 at once; the inbox sensor starts the run) and N times by a direct GraphQL `launchRun` on
  the webserver, alternating, one at a time. From the moment the request is sent to the run's
  start and end as Dagster records them. p50 / p95 and webhook over direct.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))  # partnerships_orchestrator_tests is not installed

import dagster as dg  # noqa: E402
import httpx  # noqa: E402
from standardwebhooks import Webhook  # noqa: E402

from partnerships_orchestrator.store.state import StateStore  # noqa: E402
from partnerships_orchestrator_tests.api.conftest import HELLO  # noqa: E402
from partnerships_orchestrator_tests.ports import free_port  # noqa: E402

BIN = Path(sys.executable).parent
PREFIX = "/api/partnerships"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Product:
    """`partnerships up` in a fresh home, stopped with SIGTERM at the end."""

    def __init__(self, base: Path, api_workers: int = 1) -> None:
        playbooks = base / "playbooks"
        playbooks.mkdir()
        (playbooks / "api-hello.yaml").write_text(HELLO)
        self.home = base / "home"
        self.env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        self.env.update(
            PARTNERSHIPS_HOME=str(self.home),
            PARTNERSHIPS_PLAYBOOKS=str(playbooks),
            PARTNERSHIPS_TEMPLATES=str(ROOT / "templates"),
        )
        self.ui_port, self.api_port = free_port(), free_port()
        self.log = base / "up.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "partnerships"),
                    "up",
                    "--no-materialize",
                    "--ui-port",
                    str(self.ui_port),
                    "--api-port",
                    str(self.api_port),
                    "--api-workers",
                    str(api_workers),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 300
        while b"ready:" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the product did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.5)
        self.api = f"http://127.0.0.1:{self.api_port}{PREFIX}"
        self.ui = f"http://127.0.0.1:{self.ui_port}"
        self.instance = dg.DagsterInstance.from_config(str(self.home / "dagster"))

    def token(self, role: str) -> str:
        done = subprocess.run(
            [
                str(BIN / "partnerships"),
                "token",
                "create",
                "--role",
                role,
                "--team",
                "*",
                "--rate-limit",
                "100000000",
            ],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load(url: str, headers: dict[str, str], clients: int, requests: int) -> list[float]:
    """Latencies (ms) of ``clients`` threads sending ``requests`` GETs each, all at once."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)
    failures: list[int] = []

    def client() -> None:
        with httpx.Client(headers=headers, timeout=60) as http:
            http.get(url)  # connect first: latency of requests, not of TCP handshakes
            start.wait()
            mine = []
            for _ in range(requests):
                began = time.perf_counter()
                answer = http.get(url)
                mine.append((time.perf_counter() - began) * 1000)
                if answer.status_code != 200:
                    failures.append(answer.status_code)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests to {url} failed: {sorted(set(failures))}")
    return latencies


WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("RESULT %d %d %d %.3f %.3f %.3f\\n", summary.requests,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def load_wrk(url: str, headers: dict[str, str], clients: int, seconds: float) -> list[float]:
    """p50 / p95 / p99 (ms) and requests/s of wrk's ``clients`` connections over ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_REPORT)
    args = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "-s", script.name]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    try:
        done = subprocess.run([*args, url], capture_output=True, text=True, check=False)
    finally:
        os.unlink(script.name)
    if done.returncode:
        raise SystemExit(f"wrk failed on {url}: {done.stderr or done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    total, bad_status, socket_errors, p50, p95, p99 = line.split()[1:]
    if int(bad_status) or int(socket_errors):
        raise SystemExit(f"{url}: {bad_status} non-2xx answers, {socket_errors} socket errors")
    return [float(p50), float(p95), float(p99), int(total) / seconds]


def wait_run(instance: dg.DagsterInstance, **tags: str) -> dg.RunRecord:
    filters = dg.RunsFilter(tags=tags)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = instance.get_run_records(filters, limit=1)
        if records and records[0].dagster_run.status.value in ("SUCCESS", "FAILURE", "CANCELED"):
            if records[0].dagster_run.status.value != "SUCCESS":
                raise SystemExit(f"run {records[0].dagster_run.run_id} did not succeed")
            return records[0]
        time.sleep(0.05)
    raise SystemExit(f"no finished run with {tags}")


def via_webhook(product: Product, secret: str) -> tuple[float, float]:
    body = json.dumps({"tier": "silver", "limit": 2}).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    sent = time.time()
    answer = httpx.post(f"{product.api}/webhooks/api-hello", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    record = wait_run(product.instance, **{"partnerships/webhook_id": msg_id})
    return record.start_time - sent, record.end_time - sent


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def via_graphql(product: Product) -> tuple[float, float]:
    marker = uuid.uuid4().hex
    params = {
        "selector": {
            "repositoryLocationName": "partnerships",
            "repositoryName": "partnerships",
            "jobName": "api_hello",
        },
        "runConfigData": {"tier": "silver", "limit": 2},
        "executionMetadata": {"tags": [{"key": "bench", "value": marker}]},
    }
    sent = time.time()
    answer = httpx.post(
        f"{product.ui}/graphql", json={"query": LAUNCH, "variables": {"params": params}}, timeout=60
    )
    assert answer.json()["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", answer.text
    record = wait_run(product.instance, bench=marker)
    return record.start_time - sent, record.end_time - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client and endpoint")
    parser.add_argument("--runs", type=int, default=10, help="webhook and direct launches each")
    parser.add_argument(
        "--client",
        choices=("wrk", "threads"),
        default="wrk" if shutil.which("wrk") else "threads",
        help="load generator: wrk (C; Debian's `wrk`, the default when installed) or Python "
        "threads with httpx (whose own CPU shares the machine with the server)",
    )
    parser.add_argument("--seconds", type=float, default=10, help="per endpoint, with wrk")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="`partnerships up --api-workers` (API processes)"
    )
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start, "
        f"{args.api_workers} API process(es)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        product = Product(Path(folder), args.api_workers)
        try:
            run(product, args)
        finally:
            product.stop()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def run(product: Product, args: argparse.Namespace) -> None:
    viewer = {"Authorization": f"Bearer {product.token('viewer')}"}
    secret = StateStore(f"sqlite:///{product.home / 'state.db'}").webhook_secret("api-hello")
    via_graphql(product)  # warm up: the first run imports everything once
    via_webhook(product, secret)
    pairs = []
    for n in range(args.runs):
        order = (via_webhook, via_graphql) if n % 2 == 0 else (via_graphql, via_webhook)
        result = {}
        for fn in order:
            result[fn.__name__] = fn(product, secret) if fn is via_webhook else fn(product)
        pairs.append(result)
    run_id = product.instance.get_run_records(limit=1)[0].dagster_run.run_id

    per = f"{args.seconds:g} s" if args.client == "wrk" else f"{args.requests} requests"
    print(f"\nlatency: {args.clients} concurrent clients ({args.client}) x {per}, viewer token")
    print(
        f"{'endpoint':<32} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>7} {'p95 / baseline':>15}"
    )
    endpoints = [
        ("GET /health/live (baseline)", f"{product.api}/health/live"),
        ("GET /playbooks", f"{product.api}/playbooks"),
        ("GET /playbooks/{id}", f"{product.api}/playbooks/api-hello"),
        ("GET /executions?limit=20", f"{product.api}/executions?limit=20"),
        ("GET /executions/{id}", f"{product.api}/executions/{run_id}"),
    ]
    baseline = None
    for name, url in endpoints:
        began = time.monotonic()
        if args.client == "wrk":
            p50, p95, p99, rate = load_wrk(url, viewer, args.clients, args.seconds)
        else:
            lat = load(url, viewer, args.clients, args.requests)
            p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
            rate = len(lat) / (time.monotonic() - began)
        baseline = baseline or p95
        print(
            f"{name:<32} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} {rate:>7.0f} {p95 / baseline:>14.1f}x"
        )

    print(f"\nwebhook vs direct GraphQL launch, {args.runs} each, one at a time (seconds)")
    print(f"{'':<28} {'start p50':>10} {'start p95':>10} {'end p50':>9} {'end p95':>9}")
    summary = {}
    for name in ("via_graphql", "via_webhook"):
        starts = [p[name][0] for p in pairs]
        ends = [p[name][1] for p in pairs]
        summary[name] = (statistics.median(starts), statistics.median(ends))
        label = {"via_graphql": "direct GraphQL launchRun", "via_webhook": "signed webhook"}[name]
        print(
            f"{label:<28} {statistics.median(starts):>10.2f} {percentile(starts, 95):>10.2f} "
            f"{statistics.median(ends):>9.2f} {percentile(ends, 95):>9.2f}"
        )
    w, d = summary["via_webhook"], summary["via_graphql"]
    print(f"{'webhook / direct (p50)':<28} {w[0] / d[0]:>9.2f}x {'':>10} {w[1] / d[1]:>8.2f}x")


if __name__ == "__main__":
    main()
