"""A throwaway RabbitMQ broker for tests, from Debian's ``rabbitmq-server`` package.

The broker runs as a child of the tests, never as the system service: its own node name, its own
Erlang port mapper (``epmd``) on a free port, its own data, log and config directory, AMQP on a
free loopback port, no plugins. ``stop()`` kills both processes and removes the directory.
Readiness is awaited by opening an AMQP connection (kombu), not by sleeping.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from partnerships_orchestrator_tests.ports import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "epmd"
START_TIMEOUT = 90.0


class RabbitMQUnavailable(RuntimeError):
    """Debian's ``rabbitmq-server`` package is not installed on this machine."""


def _environment(run_dir: Path, amqp_port: int, epmd_port: int) -> dict[str, str]:
    config = run_dir / "rabbitmq.conf"
    config.write_text(
        f"listeners.tcp.1 = 127.0.0.1:{amqp_port}\n"
        "loopback_users = none\n"
        "log.console = false\n"
        "log.file.level = warning\n"
        # a test machine's disk is often nearly full of other work: don't block publishers
        "disk_free_limit.absolute = 1MB\n"
    )
    (run_dir / "enabled_plugins").write_text("[].\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        HOME=str(run_dir),
        RABBITMQ_NODENAME=f"po-test-{amqp_port}@localhost",
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(amqp_port),
        RABBITMQ_DIST_PORT=str(free_port()),
        RABBITMQ_CONFIG_FILE=str(config.with_suffix("")),
        RABBITMQ_CONF_ENV_FILE=str(run_dir / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(run_dir / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(run_dir / "mnesia"),
        RABBITMQ_LOG_BASE=str(run_dir / "log"),
        RABBITMQ_PID_FILE=str(run_dir / "rabbitmq.pid"),
        ERL_EPMD_PORT=str(epmd_port),
        ERL_EPMD_ADDRESS="127.0.0.1",
    )
    return env


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until an AMQP connection opens (the broker answers the protocol, not just the port)."""
    from kombu import Connection

    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with Connection(url, connect_timeout=2) as conn:
                conn.connect()
                return
        except OSError as exc:  # refused until the listener is up
            last = exc
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"RabbitMQ did not accept AMQP connections ({last}):\n{tail}")


def start_rabbitmq(tmpdir: str | os.PathLike[str] | None = None) -> tuple[str, Callable[[], None]]:
    """Start a broker; return its AMQP URL (user ``guest``) and an idempotent ``stop``."""
    if not Path(SERVER).exists() or shutil.which(EPMD) is None:
        raise RabbitMQUnavailable(f"{SERVER} or {EPMD} not found (apt-get install rabbitmq-server)")
    run_dir = Path(tempfile.mkdtemp(prefix="po-mq-", dir=tmpdir))
    amqp_port, epmd_port = free_port(), free_port()
    env = _environment(run_dir, amqp_port, epmd_port)
    output = run_dir / "server.out"
    epmd = subprocess.Popen(
        [EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with output.open("wb") as out:
        server = subprocess.Popen(
            [SERVER], env=env, cwd=run_dir, stdout=out, stderr=out, start_new_session=True
        )
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        for process in (server, epmd):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)

    url = f"amqp://guest:guest@127.0.0.1:{amqp_port}//"
    try:
        _wait_ready(url, server, output)
    except BaseException:
        stop()
        raise
    atexit.register(stop)
    return url, stop
