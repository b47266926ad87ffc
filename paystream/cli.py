"""The `paystream` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from paystream.errors import PaystreamError
from paystream.settings import get_settings

if TYPE_CHECKING:
    from paystream.services import Services

DURATION = re.compile(r"^(\d+)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    match = DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"duration {text!r} must look like 30m, 1h or 7d.")
    return int(match.group(1)) * SECONDS[match.group(2)]


def parse_since(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"date {text!r} must be an ISO 8601 date or date-time, such as 2025-06-01 or "
            "2025-06-01T12:00:00Z."
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number.")
    return int(text)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from paystream import server

    settings = get_settings()
    if args.workers > 1 and settings.broadcast_url.startswith("memory"):
        print(
            f"paystream serve: --workers {args.workers} needs BROADCAST_URL set to redis:// or "
            "postgres://: the in-memory broadcast cannot reach subscribers in other processes.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        # Migrate once here rather than racing in every worker's start-up.
        from db.engine import normalize_database_url
        from db.migrate import upgrade

        upgrade(normalize_database_url(settings.database_url))
    config = uvicorn.Config(
        "paystream.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=args.log_level,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    server.run(config)
    return 0


def migrate(args: argparse.Namespace) -> int:
    from db.engine import normalize_database_url
    from db.migrate import upgrade

    upgrade(normalize_database_url(get_settings().database_url))
    print("database is at the newest revision")
    return 0


def export_schema(args: argparse.Namespace) -> int:
    from gql.schema import build_schema

    text = build_schema().as_str() + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def token(args: argparse.Namespace) -> int:
    from paystream.auth import mint_token

    try:
        print(mint_token(get_settings(), args.user, args.role, args.expires))
    except ValueError as error:
        print(f"paystream token: {error}", file=sys.stderr)
        return 2
    return 0


@contextlib.asynccontextmanager
async def open_services() -> AsyncIterator[Services]:
    """Set up the database, broadcaster, hooks and Stripe gateway as the server does.

    Changes are published to BROADCAST_URL, so with Redis or PostgreSQL there the live
    lists of running servers see them at once. Hook runs that a change queues are run by
    the servers' hook runners, which poll for them.
    """
    from callbacks.hook_config import load_hook_config
    from callbacks.hook_runner import HookRunner
    from db.broadcast import create_broadcast
    from db.engine import Database
    from db.publish import Publisher
    from paystream.services import Services
    from paystream.stripe_api import StripeGateway

    settings = get_settings()
    hooks = load_hook_config(settings)
    broadcast = create_broadcast(settings.broadcast_url)
    await broadcast.connect()
    try:
        db = Database(settings.database_url, Publisher(broadcast, settings.broadcast_channel_prefix))
        # Never started: constructing it installs the outbox that queues hook runs.
        HookRunner(db, hooks, settings)
        gateway = StripeGateway(settings)
        try:
            yield Services(settings=settings, db=db, stripe=gateway, hooks=hooks)
        finally:
            await gateway.close()
            await db.dispose()
    finally:
        await broadcast.disconnect()


def events_list(args: argparse.Namespace) -> int:
    from callbacks.replay import list_events

    async def run() -> list[list[str]]:
        async with open_services() as services:
            rows = await list_events(
                services.db,
                event_type=args.type,
                outcome=args.outcome,
                endpoint=args.endpoint,
                since=args.since,
                limit=args.limit,
            )
        return [
            [
                dt.datetime.fromtimestamp(row.created, dt.UTC).isoformat(),
                row.id,
                row.type,
                row.outcome or "",
                row.endpoint,
            ]
            for row in rows
        ]

    try:
        lines = asyncio.run(run())
    except ValueError as error:
        print(f"paystream events list: {error}", file=sys.stderr)
        return 2
    if not lines:
        print("no stored event matches")
        return 0
    lines.insert(0, ["CREATED", "ID", "TYPE", "OUTCOME", "ENDPOINT"])
    widths = [max(len(line[column]) for line in lines) for column in range(4)]
    for line in lines:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[4]]))
    return 0


def events_show(args: argparse.Namespace) -> int:
    from callbacks.replay import EventNotFound, event_as_json, get_events

    async def run() -> list[dict[str, object]]:
        async with open_services() as services:
            rows = await get_events(services.db, args.event_id, args.endpoint)
        return [event_as_json(row) for row in rows]

    try:
        rows = asyncio.run(run())
    except (EventNotFound, ValueError) as error:
        print(f"paystream events show: {error}", file=sys.stderr)
        return 1
    if len(rows) > 1:
        endpoints = ", ".join(str(row["endpoint"]) for row in rows)
        print(
            f"paystream events show: event {args.event_id} is stored for endpoints "
            f"{endpoints}: choose one with --endpoint.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(rows[0], indent=2))
    return 0


def events_replay(args: argparse.Namespace) -> int:
    from callbacks.events import Outcome
    from callbacks.replay import EventNotFound, ReplayResult, replay_event, replay_failed

    if (args.event_id is None) == (not args.failed):
        print("paystream events replay: give either an EVENT_ID or --failed.", file=sys.stderr)
        return 2
    if args.failed and args.endpoint is not None:
        print("paystream events replay: --endpoint applies to an EVENT_ID only.", file=sys.stderr)
        return 2

    async def run() -> list[ReplayResult]:
        async with open_services() as services:
            if args.failed:
                return await replay_failed(services.db, services.hooks)
            return await replay_event(services.db, services.hooks, args.event_id, args.endpoint)

    try:
        results = asyncio.run(run())
    except (EventNotFound, ValueError) as error:
        print(f"paystream events replay: {error}", file=sys.stderr)
        return 1
    if not results:
        print("no failed events to replay")
    for result in results:
        line = f"{result.event_id} {result.event_type} {result.outcome.value} {result.endpoint}"
        print(line if result.error is None else f"{line}: not replayed: {result.error}")
    return 1 if any(result.outcome is Outcome.FAILED for result in results) else 0


def reconcile(args: argparse.Namespace) -> int:
    from paystream.reconcile import ReconcileReport
    from paystream.reconcile import reconcile as reconcile_rows

    async def run() -> ReconcileReport:
        async with open_services() as services:
            return await reconcile_rows(services, older_than=args.older_than)

    try:
        report = asyncio.run(run())
    except (ValueError, PaystreamError) as error:
        print(f"paystream reconcile: {error}", file=sys.stderr)
        return 2
    for change in report.changes:
        print(change)
    for message in report.errors:
        print(f"error: {message}", file=sys.stderr)
    print(
        f"checked {report.checked}, changed {len(report.changes)}, errors {len(report.errors)}"
    )
    return 1 if report.errors else 0


def webhooks_setup(args: argparse.Namespace) -> int:
    import stripe

    from paystream.webhook_setup import SetupError, SetupResult, endpoint_specs
    from paystream.webhook_setup import setup_webhook_endpoints as setup_endpoints

    async def run() -> SetupResult:
        async with open_services() as services:
            specs = endpoint_specs(services.hooks)
            return await setup_endpoints(services.stripe, args.url, specs)

    try:
        result = asyncio.run(run())
    except (SetupError, PaystreamError, ValueError) as error:
        print(f"paystream webhooks setup: {error}", file=sys.stderr)
        return 1
    for endpoint in result.endpoints:
        name = f"{endpoint.spec.name} endpoint {endpoint.endpoint_id} ({endpoint.url})"
        if endpoint.action == "created":
            print(
                f"created {name} for {len(endpoint.spec.event_types)} event types, "
                f"API version {stripe.api_version}"
            )
            print(f"  signing secret: {endpoint.secret}")
            print(f"  set {endpoint.spec.secret_setting} to it; Stripe shows it only once.")
        else:
            print(f"{endpoint.action} {name}: the existing signing secret stays valid.")
        for note in endpoint.notes:
            print(f"  note: {note}")
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paystream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the server under uvicorn")
    serve_parser.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind (default: PORT or 8000)")
    serve_parser.add_argument("--log-level", default="info", help="uvicorn log level")
    serve_parser.add_argument("--workers", type=int, default=1,
                              help="processes to run; more than 1 needs a Redis or Postgres "
                                   "BROADCAST_URL (default: 1)")
    serve_parser.add_argument("--graceful-timeout", type=int, default=30,
                              help="seconds in-flight requests get to finish on SIGTERM "
                                   "(default: 30)")
    serve_parser.set_defaults(run=serve)

    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.set_defaults(run=migrate)

    schema_parser = commands.add_parser("export-schema", help="write the GraphQL SDL")
    schema_parser.add_argument("output", nargs="?", default="schema.graphql",
                               help="file to write, or - for stdout (default: schema.graphql)")
    schema_parser.set_defaults(run=export_schema)

    token_parser = commands.add_parser("token", help="mint a bearer token for development")
    token_parser.add_argument("--user", required=True, help="the user id (the token's sub)")
    token_parser.add_argument("--role", choices=["user", "admin"], default="user")
    token_parser.add_argument("--expires", type=parse_duration, default="1h",
                              help="lifetime such as 30m, 1h or 7d (default: 1h)")
    token_parser.set_defaults(run=token)

    add_events_commands(commands)

    reconcile_parser = commands.add_parser(
        "reconcile", help="apply Stripe's state to rows still waiting for a webhook"
    )
    reconcile_parser.add_argument(
        "--older-than", type=parse_duration, default="15m",
        help="age such as 15m or 1h that a payment or refund without a Stripe id must reach "
             "before it is looked up or canceled; at least 5m (default: 15m)",
    )
    reconcile_parser.set_defaults(run=reconcile)

    webhooks_parser = commands.add_parser("webhooks", help="manage Stripe webhook endpoints")
    webhooks_commands = webhooks_parser.add_subparsers(dest="webhooks_command", required=True)
    setup_parser = webhooks_commands.add_parser(
        "setup", help="create or update the endpoints at Stripe and print new signing secrets"
    )
    setup_parser.add_argument(
        "--url", required=True, help="the public https:// base URL that serves paystream"
    )
    setup_parser.set_defaults(run=webhooks_setup)
    return parser


def add_events_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events_parser = commands.add_parser("events", help="list, show and replay stored Stripe events")
    events_commands = events_parser.add_subparsers(dest="events_command", required=True)

    list_parser = events_commands.add_parser("list", help="list stored events, newest first")
    list_parser.add_argument("--type", help="only events of this type, such as refund.updated")
    list_parser.add_argument("--outcome", choices=["processed", "ignored", "failed"])
    list_parser.add_argument("--endpoint", help="only events received by this endpoint")
    list_parser.add_argument(
        "--since", type=parse_since,
        help="only events Stripe created at or after this ISO 8601 date or date-time (UTC "
             "unless it has an offset)",
    )
    list_parser.add_argument("--limit", type=positive_int, default=50,
                             help="maximum number of events listed (default: 50)")
    list_parser.set_defaults(run=events_list)

    show_parser = events_commands.add_parser("show", help="print a stored event as JSON")
    show_parser.add_argument("event_id", metavar="EVENT_ID")
    show_parser.add_argument("--endpoint", help="the endpoint's row, when several received it")
    show_parser.set_defaults(run=events_show)

    replay_parser = events_commands.add_parser(
        "replay", help="apply a stored event again, as a new delivery of it would"
    )
    replay_parser.add_argument("event_id", metavar="EVENT_ID", nargs="?")
    replay_parser.add_argument("--failed", action="store_true",
                               help="replay every event whose last attempt failed")
    replay_parser.add_argument(
        "--endpoint", help="replay only this endpoint's row (default: every endpoint's)"
    )
    replay_parser.set_defaults(run=events_replay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
