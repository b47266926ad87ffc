"""Run `paystream serve` under tracemalloc, and write a snapshot on each SIGUSR1.

Usage: python bench/tracemalloc_serve.py [serve options]

The benchmark runs this in place of `paystream serve` when it profiles the memory of idle
subscriptions. Each SIGUSR1 writes a snapshot to BENCH_TRACEMALLOC_OUTPUT with the suffix
.1, .2 and so on. A snapshot file appears only once it is complete, because it is written
under another name first.
Tracing makes the server slower and larger, so the figures of such a run are not comparable.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from types import FrameType

FRAMES = 1


def main() -> int:
    output = os.environ["BENCH_TRACEMALLOC_OUTPUT"]
    taken = 0

    def write_snapshot(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        taken += 1
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        path = f"{output}.{taken}"
        snapshot.dump(path + ".partial")
        os.replace(path + ".partial", path)

    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, write_snapshot)

    from paystream.cli import main as paystream_main

    return paystream_main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
