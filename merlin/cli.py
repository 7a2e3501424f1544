"""The ``merlin`` command: one entry point for the services and the local infrastructure."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from domain.errors import MerlinError
from merlin.local import LocalKafka, LocalPostgres
from merlin.settings import KafkaSettings
from merlin.topics import ensure_topics


def _kafka(action: str) -> int:
    kafka = LocalKafka()
    if action == "fetch":
        print(f"kafka: jars in {kafka.fetch()}")
    elif action == "start":
        print(kafka.start().describe())
    elif action == "stop":
        print("kafka: stopped" if kafka.stop() else "kafka: was not running (from this checkout)")
    else:
        status = kafka.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def _postgres(action: str) -> int:
    postgres = LocalPostgres()
    if action == "start":
        status = postgres.start()
        print(status.describe())
        print(f"postgres: databases {', '.join(postgres.settings.postgres_databases)}")
    elif action == "stop":
        print("postgres: stopped" if postgres.stop() else "postgres: was not running (from this checkout)")
    else:
        status = postgres.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def _topics(action: str) -> int:
    settings = KafkaSettings()
    created = asyncio.run(ensure_topics(settings))
    print(f"topics: created {', '.join(created)}" if created else "topics: all present")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``merlin``."""
    parser = argparse.ArgumentParser(prog="merlin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    kafka = commands.add_parser("kafka", help="the local Apache Kafka broker (KRaft, from Maven jars)")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])
    kafka.set_defaults(handler=_kafka)
    postgres = commands.add_parser("postgres", help="the local PostgreSQL server (Debian's package)")
    postgres.add_argument("action", choices=["start", "stop", "status"])
    postgres.set_defaults(handler=_postgres)
    topics = commands.add_parser("topics", help="merlin's Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(handler=_topics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``merlin``; errors merlin understands are one line on stderr, not a traceback."""
    arguments = build_parser().parse_args(argv)
    handler: Callable[[str], int] = arguments.handler
    try:
        return handler(arguments.action)
    except MerlinError as exc:
        print(f"merlin: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
