"""Profiles of the paystream server: py-spy samples under load, tracemalloc growth at rest.

py-spy is optional. Without it a profiled case still runs, and its profile is an error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import os
import re
import shutil
import signal
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SAMPLES_PER_SECOND = 250
TOP_ENTRIES = 15
# A py-spy frame reads "function (/path/to/file.py:123)" with --full-filenames.
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")

LIBRARY_PREFIX = re.compile(r"^.*/lib/python3\.\d+/(site-packages/)?")
# Frames that enclose nearly every sample: the event loop, the server and the middleware
# stack. The inclusive ranking leaves them out, so that it starts with the work itself.
ENCLOSING_FILES = re.compile(
    r"^(threading\.py|asyncio/(runners|events|base_events)\.py|contextlib\.py|uvicorn/|"
    r"starlette/(applications|routing|_exception_handler)\.py|starlette/middleware/|"
    r"paystream/(cli|server)\.py|paystream$)"
)


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def short_file(path: str) -> str:
    """Shorten a frame's file to its path inside the standard library, site-packages or repo."""
    path = LIBRARY_PREFIX.sub("", path)
    return path.removeprefix(str(Path(__file__).resolve().parent.parent) + "/")


def parse_frame(frame: str) -> tuple[str, str]:
    """Split a py-spy frame into its function and its shortened file."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], short_file(match["file"])


def summarize(raw: str, top: int = TOP_ENTRIES) -> dict[str, Any]:
    """Rank functions by own samples and by inclusive samples in py-spy's raw output.

    Each raw line is a stack of frames joined by ";" and a sample count. py-spy records only
    the thread holding the GIL (--gil), so shares are of the time spent running Python code
    and leave out waits, including time inside SQLite, which releases the GIL.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.strip() or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(frame) for frame in stack.split(";")]
        total += count
        function, file = frames[-1]
        own[f"{function} ({file})"] += count
        for function, file in set(frames):
            if function != "<module>" and not ENCLOSING_FILES.match(file):
                inclusive[f"{function} ({file})"] += count

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / total, 4), "samples": count}
            for name, count in counter.most_common(top)
        ]

    return {"gil_samples": total, "own": ranked(own), "inclusive": ranked(inclusive)}


class Profiler:
    """py-spy recording one process for a bounded time, in a process group of its own."""

    def __init__(self, pid: int, output: Path, seconds: float) -> None:
        self.pid = pid
        self.output = output
        self.seconds = seconds
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> bool:
        """Start recording, or return False when py-spy is not installed."""
        executable = py_spy_path()
        if executable is None:
            return False
        self.process = await asyncio.create_subprocess_exec(
            executable, "record", "--pid", str(self.pid), "--rate", str(SAMPLES_PER_SECOND),
            "--duration", str(max(1, round(self.seconds))), "--format", "raw",
            "--output", str(self.output), "--nonblocking", "--full-filenames", "--gil",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        return True

    async def finish(self) -> str | None:
        """Stop recording (py-spy writes its file on SIGINT) and return its raw samples."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if not self.output.exists():
            return None
        return self.output.read_text()


def summarize_snapshots(
    before: Path, after: Path, subscriptions: int, top: int = TOP_ENTRIES
) -> dict[str, Any]:
    """Rank the source lines whose traced memory grew most between two tracemalloc snapshots."""
    growth = tracemalloc.Snapshot.load(str(after)).compare_to(
        tracemalloc.Snapshot.load(str(before)), "lineno"
    )
    entries = []
    for statistic in growth[:top]:
        frame = statistic.traceback[0]
        entries.append({
            "site": f"{short_file(frame.filename)}:{frame.lineno}",
            "source": linecache.getline(frame.filename, frame.lineno).strip(),
            "bytes_per_subscription": round(statistic.size_diff / subscriptions),
            "blocks_per_subscription": round(statistic.count_diff / subscriptions, 2),
        })
    total = sum(statistic.size_diff for statistic in growth)
    return {
        "kind": "tracemalloc",
        "traced_kib_per_subscription": round(total / subscriptions / 1024, 1),
        "top": entries,
    }


async def request_snapshot(pid: int, output: str, number: int, timeout: float = 60) -> Path:
    """Signal bench/tracemalloc_serve.py to write snapshot `number` and wait for its file."""
    path = Path(f"{output}.{number}")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"tracemalloc snapshot {path} was not written within {timeout:g} s.")
        await asyncio.sleep(0.1)
    return path


async def profile_while(
    enabled: bool, pid: int | Sequence[int], output: Path, seconds: float, work: Awaitable[T]
) -> tuple[T, dict[str, Any] | None]:
    """Await `work` and return its result with a profile of process `pid`, taken if `enabled`.

    With several processes, one py-spy records each, and the profile ranks their samples
    together.
    """
    pids = [pid] if isinstance(pid, int) else list(pid)
    profilers = [
        Profiler(one, output.with_name(f"{output.name}.{one}") if len(pids) > 1 else output,
                 seconds)
        for one in pids
    ]
    started = False
    if enabled:
        for profiler in profilers:
            started = await profiler.start()
    try:
        result = await work
    finally:
        raw = [await profiler.finish() for profiler in profilers]
    if enabled and not started:
        return result, {"error": "py-spy is not installed: pip install py-spy"}
    recorded = [text for text in raw if text is not None]
    if not recorded:
        return result, None
    summary = summarize("\n".join(recorded))
    summary["processes"] = len(recorded)
    return result, summary
