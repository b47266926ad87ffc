"""Reading Stripe objects whatever API version shaped them."""

from __future__ import annotations

from typing import Any


def object_id(value: Any) -> str | None:
    """Return the id of an expandable field, which contains either an id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


# Row ids are INTEGER columns, which PostgreSQL limits to 32 bits. A larger number cannot
# be one of our ids, and a query with it would fail instead of finding nothing.
MAX_ROW_ID = 2**31 - 1


def metadata_int(stripe_object: dict[str, Any], key: str) -> int | None:
    """Return an integer id we stored in the object's metadata, or None when absent or malformed."""
    metadata = stripe_object.get("metadata") or {}
    value = metadata.get(key) if isinstance(metadata, dict) else None
    # str.isdigit() alone also accepts "²", which int() cannot parse.
    if not (isinstance(value, str) and value.isascii() and value.isdigit()):
        return None
    if len(value) > len(str(MAX_ROW_ID)) or int(value) > MAX_ROW_ID:
        return None
    return int(value)
