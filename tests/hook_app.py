"""The hook module the hook tests name in PAYSTREAM_HOOKS: every hook records its calls.

Module-level state steers the hooks; the `hook_app_state` fixture resets it for each test.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from paystream.hooks import CALLBACKS, HookCall, hook

# (hook function name, call) in the order the calls finished.
CALLS: list[tuple[str, HookCall]] = []
# `slow` sleeps this many seconds; `flaky` raises until `failures_left` reaches 0.
STATE: dict[str, Any] = {"slow_seconds": 0.0, "failures_left": 0}
# `flaky` is a plain function, so it runs in worker threads.
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        CALLS.clear()
        STATE.update(slow_seconds=0.0, failures_left=0)


def calls(name: str, callback: str | None = None) -> list[HookCall]:
    with _lock:
        return [
            call
            for hook_name, call in CALLS
            if hook_name == name and (callback is None or call.callback == callback)
        ]


def _record(name: str, call: HookCall) -> None:
    with _lock:
        CALLS.append((name, call))


@hook(*CALLBACKS)
async def record(call: HookCall) -> None:
    _record("record", call)


@hook("payment.succeeded")
async def slow(call: HookCall) -> None:
    await asyncio.sleep(STATE["slow_seconds"])
    _record("slow", call)


@hook("payment.succeeded")
def flaky(call: HookCall) -> None:
    with _lock:
        if STATE["failures_left"] > 0:
            STATE["failures_left"] -= 1
            raise RuntimeError("the warehouse is down")
    _record("flaky", call)


@hook("stripe:charge.failed")
async def charge_failed(call: HookCall) -> None:
    _record("charge_failed", call)
