"""Loading the app's hooks: the Python module in PAYSTREAM_HOOKS and the PAYSTREAM_HOOKS_FILE.

The file is TOML, or JSON when its name ends in `.json`, with the same structure:

    [[http_hooks]]
    name = "shop"
    url = "https://shop.example.com/paystream"
    secret_env = "SHOP_HOOK_SECRET"          # or: secret = "..."
    callbacks = ["payment.succeeded", "stripe:charge.dispute.created"]

    [[endpoints]]
    name = "disputes"                        # served at POST /webhooks/stripe/disputes
    secret_env = "STRIPE_DISPUTES_SECRET"    # or: secrets = ["whsec_..."]
    events = ["charge.dispute.created"]
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from paystream.hooks import (
    HOOK_ATTRIBUTE,
    STRIPE_EVENT_PREFIX,
    STRIPE_EVENT_TYPE,
    HookCall,
    check_callback,
)
from paystream.settings import Settings

logger = logging.getLogger("paystream.hooks")

# HTTP hook and endpoint names. A Python hook's name is its dotted path, which has a dot.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAIN_ENDPOINT = "main"
HTTP_HOOK_KEYS = frozenset({"name", "url", "secret", "secret_env", "callbacks"})
ENDPOINT_KEYS = frozenset({"name", "secrets", "secret_env", "events"})


class HookConfigError(ValueError):
    """The hooks module or file is invalid. The message names the setting and the entry."""


@dataclass(frozen=True)
class PythonHook:
    name: str
    function: Callable[[HookCall], Any]
    callbacks: frozenset[str]


@dataclass(frozen=True)
class HttpHook:
    name: str
    url: str
    secret: str = field(repr=False)
    callbacks: frozenset[str]


@dataclass(frozen=True)
class Endpoint:
    """A dedicated webhook endpoint: its own signing secrets and the event types it takes."""

    name: str
    secrets: tuple[str, ...] = field(repr=False)
    events: frozenset[str]


@dataclass
class HookConfig:
    hooks: dict[str, PythonHook | HttpHook] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def hook_names(self, callback: str) -> list[str]:
        return [name for name, hook in self.hooks.items() if callback in hook.callbacks]


def load_hook_config(settings: Settings) -> HookConfig:
    """Import the hooks module and read the hooks file named in the settings."""
    config = HookConfig()
    if settings.paystream_hooks:
        for python_hook in python_hooks(settings.paystream_hooks):
            config.hooks[python_hook.name] = python_hook
    if settings.paystream_hooks_file:
        path = Path(settings.paystream_hooks_file)
        document = _read_file(path)
        # An HTTP hook's name has no dot, so it never equals a Python hook's dotted path.
        for http_hook in _http_hooks(path, document):
            config.hooks[http_hook.name] = http_hook
        config.endpoints = _endpoints(path, document)
    _warn_unbound(config)
    return config


def python_hooks(module_name: str) -> list[PythonHook]:
    """Collect the functions decorated with `@hook` in the module, or imported into it."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise HookConfigError(
            f"PAYSTREAM_HOOKS: module {module_name!r} could not be imported: {error}"
        ) from error
    found: dict[str, PythonHook] = {}
    for value in vars(module).values():
        callbacks = getattr(value, HOOK_ATTRIBUTE, None)
        if not callbacks or not callable(value):
            continue
        name = f"{value.__module__}.{value.__qualname__}"
        found[name] = PythonHook(name=name, function=value, callbacks=frozenset(callbacks))
    if not found:
        logger.warning("PAYSTREAM_HOOKS: module %s has no @hook functions", module_name)
    return list(found.values())


def is_async(hook: PythonHook) -> bool:
    return inspect.iscoroutinefunction(hook.function)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise HookConfigError(f"PAYSTREAM_HOOKS_FILE: {path} could not be read: {error}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise HookConfigError(f"PAYSTREAM_HOOKS_FILE: {path} is invalid: {error}") from None
    if not isinstance(document, dict):
        raise HookConfigError(f"PAYSTREAM_HOOKS_FILE: {path} must contain a table (an object).")
    unknown = set(document) - {"http_hooks", "endpoints"}
    if unknown:
        raise HookConfigError(
            f"{path}: unknown section {min(unknown)!r}; expected http_hooks and endpoints."
        )
    return document


def _entries(path: Path, document: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    entries = document.get(section, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise HookConfigError(f"{path}: {section} must be a list of tables.")
    return entries


def _name(where: str, entry: Mapping[str, Any], allowed: frozenset[str]) -> str:
    unknown = set(entry) - allowed
    if unknown:
        raise HookConfigError(
            f"{where}: unknown key {min(unknown)!r}; allowed: {', '.join(sorted(allowed))}."
        )
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise HookConfigError(
            f"{where}: name {name!r} must be 1 to 64 lower-case letters, digits, '-' or '_'."
        )
    return name


def _strings(where: str, entry: Mapping[str, Any], key: str) -> list[str]:
    values = entry.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise HookConfigError(f"{where}: {key} must be a non-empty list of strings.")
    return values


def _secrets(where: str, entry: Mapping[str, Any], literal_key: str) -> list[str]:
    """Read the entry's secrets from the file, or from the environment variable it names."""
    variable = entry.get("secret_env")
    if variable is not None and literal_key in entry:
        raise HookConfigError(f"{where}: give {literal_key} or secret_env, not both.")
    if variable is not None:
        from_environment = os.environ.get(str(variable), "")
        secrets = [part.strip() for part in from_environment.split(",") if part.strip()]
        if not secrets:
            raise HookConfigError(f"{where}: environment variable {variable} is not set.")
        return secrets
    literal = entry.get(literal_key)
    values: list[Any] = literal if isinstance(literal, list) else [literal]
    if not values or not all(isinstance(value, str) and value for value in values):
        raise HookConfigError(f"{where}: {literal_key} or secret_env is required.")
    return [str(value) for value in values]


def _http_hooks(path: Path, document: Mapping[str, Any]) -> list[HttpHook]:
    hooks: dict[str, HttpHook] = {}
    for index, entry in enumerate(_entries(path, document, "http_hooks")):
        where = f"{path}: http_hooks[{index}]"
        name = _name(where, entry, HTTP_HOOK_KEYS)
        where = f"{where} ({name})"
        if name in hooks:
            raise HookConfigError(f"{where}: hook name {name!r} is used twice.")
        url = entry.get("url")
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HookConfigError(f"{where}: url {url!r} must be an http:// or https:// URL.")
        secrets = _secrets(where, entry, "secret")
        if len(secrets) != 1:
            raise HookConfigError(f"{where}: an HTTP hook is signed with exactly one secret.")
        callbacks = _strings(where, entry, "callbacks")
        for callback in callbacks:
            try:
                check_callback(callback)
            except ValueError as error:
                raise HookConfigError(f"{where}: {error}") from None
        hooks[name] = HttpHook(
            name=name, url=str(url), secret=secrets[0], callbacks=frozenset(callbacks)
        )
    return list(hooks.values())


def _endpoints(path: Path, document: Mapping[str, Any]) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    for index, entry in enumerate(_entries(path, document, "endpoints")):
        where = f"{path}: endpoints[{index}]"
        name = _name(where, entry, ENDPOINT_KEYS)
        where = f"{where} ({name})"
        if name == MAIN_ENDPOINT or name in endpoints:
            raise HookConfigError(f"{where}: endpoint name {name!r} is already taken.")
        events = _strings(where, entry, "events")
        for event_type in events:
            if not STRIPE_EVENT_TYPE.fullmatch(event_type):
                raise HookConfigError(
                    f"{where}: {event_type!r} is not a Stripe event type such as charge.failed."
                )
        endpoints[name] = Endpoint(
            name=name,
            secrets=tuple(_secrets(where, entry, "secrets")),
            events=frozenset(events),
        )
    return endpoints


def _warn_unbound(config: HookConfig) -> None:
    """Log event types that would arrive with no hook to run, and hooks no event reaches."""
    served = set().union(*(endpoint.events for endpoint in config.endpoints.values()))
    bound = {
        callback[len(STRIPE_EVENT_PREFIX) :]
        for hook in config.hooks.values()
        for callback in hook.callbacks
        if callback.startswith(STRIPE_EVENT_PREFIX)
    }
    for event_type in sorted(bound - served):
        logger.warning(
            "hooks for stripe:%s never run: no endpoint in PAYSTREAM_HOOKS_FILE lists %s",
            event_type, event_type,
        )
    for event_type in sorted(served - bound):
        logger.warning("events of type %s are recorded but run no hook", event_type)
