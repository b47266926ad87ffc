"""Server subprocesses for the benchmark: paystream and the baselines.

Every server runs in a process group of its own on 127.0.0.1, writes its output to a log file
in the run's temporary folder, and is stopped by signalling that group, so nothing it started
outlives the run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from paystream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
LOOPBACK_HOSTS = "127.0.0.1,localhost"

# Settings that paystream reads from the environment. The servers start from the caller's
# environment without them and in a folder without a .env file, so a developer's own
# configuration does not reach them.
PAYSTREAM_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def clean_environment(**variables: str) -> dict[str, str]:
    """Copy this process's environment without paystream's settings, then add `variables`.

    NO_PROXY keeps the servers' own HTTP clients (the Stripe SDK's calls to localstripe)
    from going through a proxy configured in the caller's environment.
    """
    environment = {k: v for k, v in os.environ.items() if k.upper() not in PAYSTREAM_VARIABLES}
    environment.update(NO_PROXY=LOOPBACK_HOSTS, no_proxy=LOOPBACK_HOSTS)
    environment.update(variables)
    return environment


def rss_kib(pid: int) -> int:
    """Read the resident set size of a process from /proc, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line.")


# Servers not yet stopped. The exit hook stops them if the run ends by an exception.
_RUNNING: set[Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


def cpu_seconds(pid: int) -> float:
    """Sum the CPU time of every thread of a process from /proc schedstat, in seconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class Server:
    """One server process in its own process group, ready once GET /health returns 200."""

    def __init__(
        self, name: str, argv: list[str], environment: dict[str, str], workdir: Path, port: int
    ) -> None:
        self.name = name
        self.argv = argv
        self.environment = environment
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running.")
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING.add(self)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        # trust_env=False keeps a configured HTTP proxy out of a request to 127.0.0.1.
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not return 200 for GET /health within {START_TIMEOUT_SECONDS:g} s. "
            f"The end of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Send SIGTERM to the server's process group, and SIGKILL after a timeout."""
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The group leader is gone. Anything it left in its group is ended too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    """Start the server in a worker thread, so the caller's event loop keeps running."""
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def paystream_command() -> list[str]:
    """Find the `paystream serve` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("paystream")
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("paystream")
    if found is None:
        raise RuntimeError(
            "the paystream command was not found: install the project with pip install -e ."
        )
    return [found, "serve"]


def paystream_server(name: str, workdir: Path, **settings: str) -> Server:
    """Configure `paystream serve` through environment variables, as users run it.

    `settings` are environment variables such as DATABASE_URL. PORT is chosen here.
    """
    port = free_port()
    environment = clean_environment(PORT=str(port), **settings)
    return Server(name, paystream_command(), environment, workdir, port)


def baseline_server(name: str, factory: str, workdir: Path, **variables: str) -> Server:
    """Serve a baseline app from bench/baselines.py under uvicorn as `paystream serve` runs.

    That is one uvicorn worker with the default loop, HTTP and WebSocket implementations, log
    level info (so with the access log) and permessage-deflate off.
    """
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", f"bench.baselines:{factory}", "--factory",
        "--app-dir", str(REPO), "--host", HOST, "--port", str(port),
        "--log-level", "info", "--ws-per-message-deflate", "false",
    ]
    return Server(name, argv, clean_environment(**variables), workdir, port)
