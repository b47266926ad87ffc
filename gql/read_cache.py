"""Results of read queries, kept until any row changes.

A read of the same document and variables by viewers who may read the same rows gives the
same result until a row changes, so it is executed once. Every committed change clears the
cache: in this process when the change is published, in other processes when the change
reaches them through the broadcaster. The cache is off while the broadcast connection is
down, because changes made elsewhere would not clear it then, and every entry also expires
after a few seconds as a last bound on staleness.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_ENTRIES = 1024
MAX_AGE_SECONDS = 2.0


class ReadCache:
    def __init__(self, available: Callable[[], bool] = lambda: True) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._available = available

    def get(self, key: Hashable) -> Any | None:
        if not self._available():
            self._entries.clear()
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, result = entry
        if time.monotonic() - stored_at > MAX_AGE_SECONDS:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: Hashable, result: Any) -> None:
        if not self._available():
            return
        self._entries[key] = (time.monotonic(), result)
        self._entries.move_to_end(key)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
