"""The ``merlin`` command: one entry point for the services and the local infrastructure."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from domain.errors import MerlinError
from merlin.admin_client import add_endpoints_parser
from merlin.kafka_access import add_acls_parser
from merlin.probe import add_probe_parser
from merlin.settings_command import add_config_parser
from merlin.tokens import add_token_parser
from merlin.version import VersionAction

if TYPE_CHECKING:
    from merlin.local import LocalKafkaCluster

# Each command imports what it runs once it is chosen: all of merlin's services together take
# over a second to import, and a forwarder's parent process (``--processes N``) starts its
# children that much sooner without them (0.4 s to import this module, against 1.25 s).


def _kafka(arguments: argparse.Namespace) -> int:
    from merlin.local import LocalKafka, LocalKafkaCluster

    action = arguments.action
    if arguments.brokers is not None and arguments.brokers > 1:
        return _kafka_cluster(action, LocalKafkaCluster(arguments.brokers))
    kafka = LocalKafka()
    if arguments.brokers is None and action in ("stop", "status"):
        # Whatever `start` started, however many brokers: a cluster is found by its state.
        clusters = LocalKafkaCluster.found()
        if clusters:
            codes = [_kafka_cluster(action, cluster) for cluster in clusters]
            if action == "stop" and kafka.stop():
                print(f"kafka: stopped the broker at {kafka.bootstrap}")
            elif action == "status" and kafka.status().managed:
                print(kafka.status().describe())
            return max(codes)
    if action == "fetch":
        print(f"kafka: jars in {kafka.fetch()}")
    elif action == "start":
        print(kafka.start().describe())
    elif action == "stop":
        print("kafka: stopped" if kafka.stop() else "kafka: was not running (from this merlin)")
    else:
        status = kafka.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def _kafka_cluster(action: str, cluster: LocalKafkaCluster) -> int:
    if action == "fetch":
        print(f"kafka: jars in {cluster.nodes[0].fetch()}")
        return 0
    if action == "stop":
        stopped = cluster.stop()
        print(f"kafka: stopped {sum(stopped)} of {len(stopped)} brokers")
        return 0
    statuses = cluster.start() if action == "start" else cluster.status()
    for node, status in zip(cluster.nodes, statuses, strict=True):
        print(f"node {node.node_id}: {status.describe()}")
    print(
        f"kafka: MERLIN_KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap} "
        f"MERLIN_KAFKA_REPLICATION_FACTOR={cluster.replicas}"
    )
    return 0 if all(status.running for status in statuses) else 3


def _postgres(arguments: argparse.Namespace) -> int:
    from merlin.local import LocalPostgres

    action = arguments.action
    postgres = LocalPostgres()
    if action == "start":
        status = postgres.start()
        print(status.describe())
        print(f"postgres: databases {', '.join(postgres.settings.postgres_databases)}")
    elif action == "stop":
        print("postgres: stopped" if postgres.stop() else "postgres: was not running (from this merlin)")
    else:
        status = postgres.status()
        print(status.describe())
        return 0 if status.running else 3
    return 0


def _topics(_arguments: argparse.Namespace) -> int:
    from kernel.settings import KafkaSettings
    from kernel.topics import ensure_topics

    settings = KafkaSettings()
    for line in asyncio.run(ensure_topics(settings)).lines():
        print(line)
    return 0


def _db(_arguments: argparse.Namespace) -> int:
    from read_store.engines import shown_url
    from read_store.migrate import upgrade
    from read_store.settings import ReadStoreSettings

    store = ReadStoreSettings()
    asyncio.run(upgrade(store.url, store.db_schema))
    print(f"read store: {shown_url(store.url)} is up to date")
    return 0


def _service(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(arguments: argparse.Namespace) -> int:
        from merlin import services

        runs: dict[str, Callable[[int | None, int | None], None]] = {
            "write-api": services.run_write_api,
            "read-api": services.run_read_api,
            "admin-api": services.run_admin_api,
        }
        runs[name](arguments.workers, arguments.fd)
        return 0

    return handler


def _forwarder(arguments: argparse.Namespace) -> int:
    from merlin.services import run_forwarder

    run_forwarder(arguments.processes)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def _dev(_arguments: argparse.Namespace) -> int:
    from merlin.dev import run_dev

    return asyncio.run(run_dev())


def _rebuild(options: argparse.Namespace) -> int:
    from merlin.rebuild_command import run

    return run(options.to, options.schema, follow=options.follow, as_json=options.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``merlin``."""
    parser = argparse.ArgumentParser(prog="merlin", description=__doc__)
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("write-api", "serve the write API (MERLIN_WRITE_API_*)"),
        ("read-api", "serve the read API (MERLIN_READ_API_*)"),
        ("admin-api", "serve the admin API (MERLIN_ADMIN_API_*, MERLIN_ADMIN_TOKEN)"),
    ):
        service = commands.add_parser(name, help=summary)
        service.add_argument(
            "--workers", type=_positive, metavar="N",
            help=f"N processes on one listening socket (default: MERLIN_{name.upper().replace('-', '_')}"
            "_WORKERS, 1)",
        )  # fmt: skip
        service.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
        service.set_defaults(handler=_service(name), action=name)
    dev = commands.add_parser(
        "dev",
        help="local Kafka + topics + SQLite migrations + all four services + a live-rooms page; Ctrl-C stops",
    )
    dev.set_defaults(handler=_dev, action="dev")
    forwarder = commands.add_parser("forwarder", help="run the forwarder worker (MERLIN_FORWARDER_*)")
    forwarder.add_argument(
        "--processes", type=_positive, metavar="N",
        help="N worker processes under one parent, members of the same groups "
        "(default: MERLIN_FORWARDER_PROCESSES, 1); process i serves its metrics on the port + i",
    )  # fmt: skip
    forwarder.set_defaults(handler=_forwarder, action="forwarder")
    db = commands.add_parser("db", help="the read store's schema (Alembic)")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(handler=_db)
    kafka = commands.add_parser("kafka", help="the local Apache Kafka broker (KRaft, from Maven jars)")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])
    kafka.add_argument(
        "--brokers", type=_positive, metavar="N",
        help="N nodes (each broker and controller) in one cluster, on MERLIN_LOCAL_KAFKA_PORT + 2i "
        "(start: default 1; stop and status: default whatever is running)",
    )  # fmt: skip
    kafka.set_defaults(handler=_kafka)
    postgres = commands.add_parser("postgres", help="the local PostgreSQL server (Debian's package)")
    postgres.add_argument("action", choices=["start", "stop", "status"])
    postgres.set_defaults(handler=_postgres)
    topics = commands.add_parser("topics", help="merlin's Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(handler=_topics)
    add_endpoints_parser(commands)
    add_token_parser(commands)
    add_acls_parser(commands)
    add_probe_parser(commands)
    add_config_parser(commands)
    store = commands.add_parser(
        "rebuild",
        help="project the whole log into a new read store, with progress, delivering nothing",
        description="Project the events topic into a new read store (migrated first), outside any consumer"
        " group, then say how to switch the services over. Run again, it continues where it stopped.",
    )
    store.add_argument(
        "--to", required=True, metavar="URL", help="the new store: sqlite:///… or postgresql://…"
    )
    store.add_argument("--schema", metavar="NAME", help="a PostgreSQL schema for it (created if missing)")
    store.add_argument("--follow", action="store_true", help="once caught up, keep following until Ctrl-C")
    store.add_argument("--json", action="store_true", help="a JSON summary on stdout at the end")
    store.set_defaults(handler=_rebuild)
    return parser


def _setting_errors(exc: ValidationError) -> list[str]:
    """One line per bad setting, named as its environment variable."""
    from merlin.settings_registry import is_secret_name

    found = [cls for cls in _all_settings(BaseSettings) if cls.__name__ == exc.title]
    prefix = str(found[0].model_config.get("env_prefix", "")) if found else ""
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = field.upper() if field.upper().startswith("MERLIN_") else f"{prefix}{field}".upper()
        # An item of a list or an object keeps its own case: MERLIN_KAFKA_CLIENT_CONFIG["ssl.ca.location"].
        name += "".join(f"[{part}]" if isinstance(part, int) else f'["{part}"]' for part in error["loc"][1:])
        given = error.get("input")
        # Never echo a secret back, nor the whole settings of a model-level error.
        # Nor a whole JSON list or object given where another belongs: it may hold what the other would.
        hidden = (
            not field or (len(error["loc"]) == 1 and isinstance(given, (dict, list))) or is_secret_name(name)
        )
        lines.append(
            f"{name if field else exc.title}: {error['msg']}" + ("" if hidden else f" (got {given!r})")
        )
    return lines


def _all_settings(base: type[BaseSettings]) -> list[type[BaseSettings]]:
    return [cls for sub in base.__subclasses__() for cls in (sub, *_all_settings(sub))]


def _refusals(arguments: argparse.Namespace) -> list[str]:
    """Why the environment cannot run this command: a ``MERLIN_*`` variable merlin does not read, and
    every bad value of the settings the command reads, all at once, before anything starts."""
    from merlin.settings_registry import READ_BY, unknown_variables

    lines = unknown_variables(os.environ)
    for settings in READ_BY.get(getattr(arguments, "reads", arguments.command), ()):
        try:
            settings()
        except ValidationError as exc:
            lines += _setting_errors(exc)
        except SettingsError:
            lines += _undecodable([settings])
    return list(dict.fromkeys(lines))  # a variable two classes read is one mistake


def _undecodable(settings: Sequence[type[BaseSettings]] | None = None) -> list[str]:
    from merlin.settings_registry import SETTINGS, undecodable

    return undecodable(SETTINGS if settings is None else settings)


def _errors(lines: list[str]) -> int:
    for line in lines:
        print(f"merlin: error: {line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``merlin``; errors merlin understands are one line on stderr, not a traceback."""
    arguments = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = arguments.handler
    refused = _refusals(arguments)
    if refused:
        return _errors(refused)
    try:
        return handler(arguments)
    except MerlinError as exc:
        print(f"merlin: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for line in _setting_errors(exc):
            print(f"merlin: error: {line}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        return _errors(_undecodable() or [str(exc)])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` or `grep -q` that stopped reading: not an error of merlin's, and
        # Python's own flush at exit would fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
