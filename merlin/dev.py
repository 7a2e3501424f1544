"""``merlin dev``: the local broker, topics, migrations, and all four services in one terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from admin_api.settings import AdminApiSettings
from domain.errors import MerlinError
from forwarder.settings import ForwarderSettings
from kernel.auth import READ, WRITE, AuthSettings, mint
from kernel.settings import KafkaSettings
from kernel.topics import ensure_topics
from merlin.live_page import DEV_USERS, LivePage, PageServer, listening
from merlin.local import LocalKafka
from merlin.local.kept_secrets import KeptFiles, kept_secret, write_private
from merlin.local.settings import DevSettings
from read_api.settings import ReadApiSettings
from read_store.engines import shown_url
from read_store.migrate import upgrade
from read_store.settings import ReadStoreSettings
from webhooks.secret_box import new_key
from write_api.settings import WriteApiSettings

SERVICES = ("write-api", "forwarder", "read-api", "admin-api")


async def _pipe(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stdout.write(f"{name:>9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def _authentication(env: dict[str, str], kept: KeptFiles) -> tuple[str, dict[str, Path]]:
    """Make sure the APIs can verify callers (a kept secret unless one is configured); what to tell, and
    the files of the development users' tokens (none unless merlin signs them)."""
    if not any(env.get(f"MERLIN_AUTH_{name}") for name in ("JWT_SECRET", "JWKS_URL", "DISABLED")):
        env["MERLIN_AUTH_JWT_SECRET"] = os.environ["MERLIN_AUTH_JWT_SECRET"] = kept_secret(kept.auth_secret)
    settings = AuthSettings()
    if settings.jwt_secret is None:
        note = (
            "callers:   tokens from MERLIN_AUTH_JWKS_URL"
            if settings.jwks_url
            else "callers:   NOT authenticated"
        )
        return note, {}
    tokens = {}
    for user in DEV_USERS:
        token = mint(
            settings.jwt_secret.get_secret_value(), user, scopes=[WRITE, READ], ttl_seconds=7 * 86400,
            audience=settings.audience, issuer=settings.issuer,
        )  # fmt: skip
        tokens[user] = kept.user_token(user)
        write_private(tokens[user], token)
    shown = ", ".join(f"{user}'s TOKEN=$(cat {_shown(path)})" for user, path in tokens.items())
    return f"callers:   bearer JWTs (every room, 7 days): {shown}", tokens


def _shown(path: Path) -> Path:
    """``path`` from the working directory when it is below it (``var/dev.token``), else whole."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _browser_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a service listening on ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def page_origins(port: int) -> list[str]:
    """The origins of the live-rooms page on ``port``: a browser may name the machine either way."""
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def _allow_page(env: dict[str, str], port: int, *apis: WriteApiSettings | ReadApiSettings) -> None:
    """Let the page on ``port`` call ``apis`` from the browser, beside the origins they allow already."""
    for api, prefix in zip(apis, ("MERLIN_WRITE_API_", "MERLIN_READ_API_"), strict=True):
        origins = list(dict.fromkeys((*api.cors_origins, *page_origins(port))))
        env[f"{prefix}CORS_ORIGINS"] = json.dumps(origins)


def _page_socket(port: int) -> socket.socket:
    try:
        return listening(port)
    except OSError as exc:
        raise MerlinError(
            f"the live-rooms page cannot listen on 127.0.0.1:{port} ({exc.strerror}): set "
            "MERLIN_DEV_PAGE_PORT to a free port, or to 0 for no page"
        ) from None


def _metrics_note(*apis: WriteApiSettings | ReadApiSettings | AdminApiSettings) -> str:
    """Where each service's metrics listener answers (those turned off left out)."""
    forwarder = ForwarderSettings()
    listeners = [(forwarder.metrics_host, forwarder.metrics_port)]
    listeners += [(api.metrics_host, api.metrics_port) for api in apis]
    shown = "  ".join(f"http://{host}:{port}/metrics" for host, port in listeners if port)
    return f"metrics (Prometheus, no token): {shown or 'none'}"


async def run_dev() -> int:
    """Start everything, print the URLs, and stop it all cleanly on Ctrl-C; the exit code of the run."""
    status = await asyncio.to_thread(LocalKafka().start)
    print(status.describe())
    env = {**os.environ, "MERLIN_KAFKA_BOOTSTRAP_SERVERS": status.bootstrap}
    kept = KeptFiles.configured()
    token_note = "MERLIN_ADMIN_TOKEN"
    if not env.get("MERLIN_ADMIN_TOKEN"):
        env["MERLIN_ADMIN_TOKEN"] = kept_secret(kept.admin_token)
        token_note = f"token in {kept.admin_token}"
    auth_note, dev_tokens = _authentication(env, kept)
    if not env.get("MERLIN_ENDPOINTS_SECRET_KEYS"):
        env["MERLIN_ENDPOINTS_SECRET_KEYS"] = kept_secret(kept.endpoint_keys, new_key)
    # Development: endpoints on this machine (a local receiver) are allowed.
    env.setdefault("MERLIN_ENDPOINTS_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
    topics = KafkaSettings(bootstrap_servers=status.bootstrap)
    for line in (await ensure_topics(topics)).lines():
        print(line)
    store = ReadStoreSettings()
    await upgrade(store.url, store.db_schema)
    print(f"read store: {shown_url(store.url)} (migrated)")

    write, read, admin = WriteApiSettings(), ReadApiSettings(), AdminApiSettings()
    page_port = DevSettings().page_port
    # Bound before the APIs start, so that the origin they are told to allow is the page's.
    page_socket = _page_socket(page_port) if page_port else None
    if page_socket is not None:
        _allow_page(env, page_socket.getsockname()[1], write, read)

    children = {
        name: await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "merlin.cli",
            name,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for name in SERVICES
    }
    pipes = [
        asyncio.create_task(_pipe(name, child.stdout)) for name, child in children.items() if child.stdout
    ]
    async with contextlib.AsyncExitStack() as page:
        print(f"write API: http://{write.host}:{write.port}   (POST /v1/rooms/{{room}}/messages)")
        print(f"read API:  http://{read.host}:{read.port}   (GET /v1/rooms/{{room}}/messages)")
        print(f"admin API: http://{admin.host}:{admin.port}   (`merlin endpoints`; {token_note})")
        if page_socket is not None:
            served = LivePage(
                _browser_url(write.host, write.port), _browser_url(read.host, read.port), dev_tokens
            )
            server = await page.enter_async_context(PageServer(served, page_socket))
            print(f"live rooms: {server.url}/   (a chat page: sign in, pick a room, post, edit)")
        print(auth_note)
        print(_metrics_note(write, read, admin))
        print("forwarder: running; Ctrl-C stops everything")
        failed = await _until_stopped(children)
    await asyncio.gather(*pipes)
    print("merlin dev: stopped (the Kafka broker keeps running; `merlin kafka stop` ends it)")
    return 1 if failed else 0


async def _until_stopped(children: Mapping[str, asyncio.subprocess.Process]) -> list[str]:
    """Wait for Ctrl-C (or SIGTERM) or a service's exit, then stop every service; those that exited."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    exits = {name: asyncio.create_task(child.wait()) for name, child in children.items()}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *exits.values()], return_when=asyncio.FIRST_COMPLETED)
    failed = [name for name, task in exits.items() if task in done]
    if failed:
        print(f"merlin dev: {', '.join(failed)} exited; stopping the others", file=sys.stderr)
    for child in children.values():
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*exits.values()), 20)
    except TimeoutError:
        for child in children.values():
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await asyncio.gather(*exits.values())
    stopper.cancel()
    return failed
