"""The `paystream` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path

from paystream.settings import get_settings

DURATION = re.compile(r"^(\d+)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    match = DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"duration {text!r} must look like 30m, 1h or 7d.")
    return int(match.group(1)) * SECONDS[match.group(2)]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
