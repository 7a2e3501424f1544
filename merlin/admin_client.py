"""``merlin endpoints …``: the operator's command line over the admin API (JSON with ``--json``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from admin_api.settings import AdminApiSettings
from domain.errors import MerlinError
from merlin.local.kept_secrets import KeptFiles
from webhooks.catalog import comparable, comparable_view, plan
from webhooks.endpoints import load_specs
from webhooks.secret_box import new_key


def _client() -> httpx.Client:
    settings = AdminApiSettings()
    url = os.environ.get("MERLIN_ADMIN_URL", f"http://{settings.host}:{settings.port}")
    token = settings.token.get_secret_value() if settings.token else None
    kept = KeptFiles.configured().admin_token
    if token is None and kept.exists():
        token = kept.read_text().strip()
    if not token:
        raise MerlinError(
            f"no admin token: set MERLIN_ADMIN_TOKEN (or run `merlin dev`, which writes {kept})"
        )
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with _client() as client:
        try:
            response = client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise MerlinError(
                f"the admin API at {client.base_url} does not answer ({exc}): is it running?"
            ) from exc
    answer: dict[str, Any] = response.json() if response.content else {}
    if response.status_code >= 400:
        detail = answer.get("detail")
        raise MerlinError(f"{response.status_code} {answer.get('title', '')}{f' {detail}' if detail else ''}")
    return answer


def _print_status(status: dict[str, Any]) -> None:
    age = status["oldest_undelivered_age_seconds"]
    disabled = status.get("disabled")
    state = "paused" if status["paused"] else "running"
    if disabled:
        state = f"disabled at {disabled['at']}: {disabled['reason']}; `merlin endpoints resume` re-enables it"
    print(f"endpoint {status['endpoint']} (group {status['group']}): {state}, lag {status['lag']}"
          + (f", oldest undelivered {age:g} s old" if age is not None else ""))  # fmt: skip
    rates = status["rates"]
    print(f"rates: {rates['delivered_per_s']:g} delivered/s, {rates['failed_per_s']:g} failed/s"
          f" (instances: {', '.join(rates['instances']) or 'none reporting'})")  # fmt: skip
    print(f"{'partition':>9}  {'committed':>10}  {'end':>10}  {'lag':>8}")
    for row in status["partitions"]:
        committed = "-" if row["committed"] is None else row["committed"]
        lag = "-" if row["lag"] is None else row["lag"]
        print(f"{row['partition']:>9}  {committed:>10}  {row['end']:>10}  {lag:>8}")
    for room in status["blocked_rooms"]:
        where = f"partition {room['partition']}, offset {room['offset']}"
        print(f"blocked: room {room['room_id']} on event {room['event_id']} ({where}), "
              f"{room['attempts']} attempts since {room['since']}: {room['last_error']}")  # fmt: skip


def _apply(path: Path, dry_run: bool, deletes: bool) -> int:
    """Make the endpoints the admin API defines match the file at ``path``; print the plan."""
    specs = {spec.name: spec for spec in load_specs(path)}
    current = {item["name"]: comparable_view(item) for item in _call("GET", "/v1/admin/endpoints")["items"]}
    wanted = {name: comparable(spec.endpoint()) for name, spec in specs.items()}
    steps = plan(current, wanted, deletes)
    for line in steps.lines() or ["no change"]:
        print(line)
    if dry_run:
        return 0
    for name in [*steps.create, *steps.update]:
        body = specs[name].model_dump(mode="json", exclude={"name"})
        answer = _call("PUT", f"/v1/admin/endpoints/{name}", body)
        print(f"{name}: version {answer['version']}")
    for name in steps.delete:
        _call("DELETE", f"/v1/admin/endpoints/{name}")
        print(f"{name}: deleted")
    return 0


def _endpoints(arguments: argparse.Namespace) -> int:
    action = arguments.endpoints_action
    if action == "new-key":
        print(new_key())
        return 0
    if action == "reseal":
        answer = _call("POST", "/v1/admin/secrets/reseal")
        print(f"sealed again under the first key: {', '.join(answer['resealed']) or 'no endpoint'}")
        return 0
    if action == "apply":
        return _apply(Path(arguments.file), arguments.dry_run, not arguments.keep_others)
    name = getattr(arguments, "name", None)
    base = f"/v1/admin/endpoints/{name}"
    action = arguments.endpoints_action
    if action == "list":
        answer = _call("GET", "/v1/admin/endpoints")
    elif action == "show":
        answer = _call("GET", base)
    elif action == "status":
        answer = _call("GET", base + "/status")
        if not arguments.json:
            _print_status(answer)
            return 0
    elif action == "delete":
        _call("DELETE", base)
        print(f"{name}: deleted")
        return 0
    elif action in ("pause", "resume"):
        answer = _call("POST", f"{base}/{action}")
    elif action == "rewind":
        to: Any = arguments.to
        if arguments.offsets:
            to = dict(pair.split("=", 1) for pair in arguments.offsets.split(","))
        answer = _call("POST", base + "/rewind", {"to": to})
    elif action == "unblock":
        answer = _call("POST", f"{base}/rooms/{arguments.room}/unblock", {"action": arguments.unblock})
    else:
        body = {"endpoint": name, "room_id": arguments.room, "from": arguments.since, "to": arguments.until}
        answer = _call("POST", "/v1/admin/dead-letters/replay", {k: v for k, v in body.items() if v})
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def add_endpoints_parser(commands: Any) -> None:
    """``merlin endpoints …`` on the ``merlin`` command's subparsers."""
    parser = commands.add_parser(
        "endpoints", help="operate endpoints through the admin API (MERLIN_ADMIN_URL, MERLIN_ADMIN_TOKEN)"
    )
    actions = parser.add_subparsers(dest="endpoints_action", required=True)

    def action(name: str, summary: str, named: bool = True) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=summary)
        if named:
            sub.add_argument("name", help="the endpoint's name")
        sub.add_argument("--json", action="store_true", help="print the answer as JSON")
        sub.set_defaults(handler=_endpoints)
        return sub

    action("list", "the endpoints, secrets as fingerprints", named=False)
    apply = action(
        "apply", "make the endpoints match a file (create, update, delete); prints the plan", False
    )
    apply.add_argument("-f", "--file", required=True, help="endpoints file (TOML or YAML)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--keep-others", action="store_true", help="leave endpoints not in the file alone")
    action("delete", "stop delivering to an endpoint and forget its definition")
    keys = actions.add_parser("new-key", help="print a new key for MERLIN_ENDPOINTS_SECRET_KEYS")
    keys.set_defaults(handler=_endpoints)
    reseal = actions.add_parser("reseal", help="seal every endpoint secret again under the first key")
    reseal.set_defaults(handler=_endpoints)
    action("show", "one endpoint")
    action("status", "offsets, lag, oldest undelivered event, pause, blocked rooms, rates")
    action("pause", "stop delivering (kept across restarts)")
    action("resume", "deliver again")
    rewind = action("rewind", "deliver again from a time or from offsets (same idempotency keys)")
    where = rewind.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", help="RFC 3339 time, e.g. 2026-11-24T10:00:00Z")
    where.add_argument("--offsets", help="partition=offset pairs, e.g. 0=120,1=98")
    unblock = action("unblock", "retry or skip a blocked room's head event")
    unblock.add_argument("room", help="the blocked room")
    choice = unblock.add_mutually_exclusive_group(required=True)
    choice.add_argument("--retry", dest="unblock", action="store_const", const="retry")
    choice.add_argument("--skip", dest="unblock", action="store_const", const="skip")
    replay = action("replay", "deliver the endpoint's dead-lettered events again, in order")
    replay.add_argument("--room", help="only this room's")
    replay.add_argument("--from", dest="since", help="dead-lettered at or after this RFC 3339 time")
    replay.add_argument("--to", dest="until", help="dead-lettered at or before this RFC 3339 time")
