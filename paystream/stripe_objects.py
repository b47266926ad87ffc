"""Reading Stripe objects whatever API version shaped them."""

from __future__ import annotations

from typing import Any


def object_id(value: Any) -> str | None:
    """The id of an expandable field, which holds either an id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def metadata_int(stripe_object: dict[str, Any], key: str) -> int | None:
    """An integer id we stored in the object's metadata, or None when absent or malformed."""
    metadata = stripe_object.get("metadata") or {}
    value = metadata.get(key) if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
